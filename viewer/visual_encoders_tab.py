"""The "Visual encoders" tab: networks trained from images toward the captions' embeddings
(Doerig et al.; LLM-VEM), against the same network trained on category labels and untrained,
beside the caption embeddings themselves: per-region bars (encoding mean test r, RSA with its
spread over stimulus subsets) and the map of language-trained minus category-trained encoding r.
"""

from __future__ import annotations

import gradio as gr
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from backend.service.client import BackendError
from viewer.brain_panel import BrainPanel
from viewer.model_runs import follow_job, job_summary
from viewer.mouse_panel import MousePanel

NETWORK_LABELS = {
    "language": "language-trained network",
    "category": "category-trained network",
    "untrained": "untrained network",
    "text": "caption text embedding",
}
COLOURS = {"language": "#1f77b4", "category": "#ff7f0e", "untrained": "#7f7f7f", "text": "#2ca02c"}
LAYERS = {"penultimate": "penultimate layer", "embedding": "embedding layer"}
#: The stage's default (backend.stages.visual_encoders.Settings.epochs; the viewer does not import torch).
DEFAULT_EPOCHS = 80


def comparison_figure(comparison: dict, layer: str = "penultimate") -> go.Figure:
    """Two panels of grouped bars per region: encoding mean test r, and RSA (Spearman RDM
    correlation, error bars one sd over stimulus subsets); one colour per network."""
    rows = [r for r in comparison["rows"] if r["layer"] in (layer, "caption embedding")]
    regions = comparison["regions"]
    figure = make_subplots(rows=1, cols=2, subplot_titles=("Encoding: mean test r per region",
                                                           "RSA with the region (± sd over stimulus subsets)"))
    for network in [*comparison["networks"], "text"]:
        cells = {r["region"]: r for r in rows if r["network"] == network}
        if not cells:
            continue
        label, colour = NETWORK_LABELS[network], COLOURS[network]
        figure.add_trace(go.Bar(x=regions, y=[cells.get(g, {}).get("encoding_r") for g in regions], name=label,
                                marker_color=colour, legendgroup=network,
                                hovertemplate="%{x}: mean r %{y:.3f}<extra>" + label + "</extra>"), row=1, col=1)
        figure.add_trace(go.Bar(x=regions, y=[cells.get(g, {}).get("rsa_mean") for g in regions], name=label,
                                marker_color=colour, legendgroup=network, showlegend=False,
                                error_y=dict(type="data", array=[cells.get(g, {}).get("rsa_sd") for g in regions], visible=True),
                                hovertemplate="%{x}: RSA %{y:.3f}<extra>" + label + "</extra>"), row=1, col=2)
    figure.update_layout(barmode="group", height=420, margin=dict(l=60, r=20, t=60, b=60),
                         legend=dict(orientation="h", y=-0.18), template="plotly_white")
    figure.update_xaxes(title_text="brain region", row=1, col=1)
    figure.update_xaxes(title_text="brain region", row=1, col=2)
    figure.update_yaxes(title_text="mean Pearson r on the test stimuli", row=1, col=1)
    figure.update_yaxes(title_text="Spearman correlation of RDMs", row=1, col=2)
    return figure


def comparison_table(comparison: dict, layer: str = "penultimate") -> pd.DataFrame:
    """One row per region: each network's mean test r and RSA (mean ± sd)."""
    rows = [r for r in comparison["rows"] if r["layer"] in (layer, "caption embedding")]
    out = []
    for region in comparison["regions"]:
        line = {"region": region}
        for r in rows:
            if r["region"] == region:
                name = NETWORK_LABELS[r["network"]]
                line[f"{name}: r"] = round(r["encoding_r"], 3)
                line[f"{name}: RSA"] = f"{r['rsa_mean']:.3f} ± {r['rsa_sd']:.3f}"
        out.append(line)
    return pd.DataFrame(out)


class VisualEncodersTab:
    """Create inside a ``gr.Tab``; then :meth:`wire`. ``explorer`` is the page's Explorer."""

    def __init__(self, explorer, surface_views) -> None:
        self.explorer = explorer
        gr.Markdown(
            "A small residual CNN trained on the dataset's **training** images toward their captions' text embeddings "
            "(cosine loss, Doerig et al.; or contrastive InfoNCE, LLM-VEM), against the same network trained on the "
            "stimuli's category labels and the same network untrained. Each network's features go through the encoding "
            "model (ridge per unit, scored on the test stimuli) and RSA (over subsets of the test stimuli, which no "
            "network saw), beside the caption embeddings themselves. Training takes minutes on a CPU the first time; "
            "then it is read from the cache."
        )
        with gr.Row():
            self.objective = gr.Radio([("cosine (Doerig)", "cosine"), ("InfoNCE (LLM-VEM)", "infonce"),
                                       ("cosine + InfoNCE", "cosine+infonce")], value="cosine", label="Language objective", scale=3)
            self.epochs = gr.Slider(1, 200, value=DEFAULT_EPOCHS, step=1, label="Training epochs", scale=2)
            self.layer = gr.Radio([(v, k) for k, v in LAYERS.items()], value="penultimate", label="Layer", scale=2)
            self.run_button = gr.Button("Train and compare", scale=1, elem_id="ctx-ve-run")
        self.status = gr.Markdown(elem_id="ctx-ve-status")
        self.plot = gr.Plot(label="Per region: language-trained, category-trained, untrained, text", elem_id="ctx-ve-plot")
        self.table = gr.Dataframe(label="Per region", interactive=False, elem_id="ctx-ve-table")
        with gr.Group(visible=True) as self.brain_group:
            self.brain = BrainPanel(label="Encoding r: language-trained minus category-trained", views=surface_views,
                                    elem_id="ctx-ve-brain")
        with gr.Group(visible=False) as self.mouse_group:
            self.mouse = MousePanel(label="Encoding r: language-trained minus category-trained, per neuron", elem_id="ctx-ve-mouse")

    def show(self, ds: str, comparison_id: str, layer: str):
        """(plot, table, brain update, mouse update, brain group, mouse group) for a finished comparison."""
        explorer, client = self.explorer, self.explorer.client
        try:
            comparison = client.visual_encoder_comparison(comparison_id)
        except BackendError as err:
            raise gr.Error(str(err)) from None
        figure, table = comparison_figure(comparison, layer), comparison_table(comparison, layer)
        if "language" not in comparison["networks"] or "category" not in comparison["networks"]:
            return figure, table, gr.update(), gr.update(), gr.update(), gr.update()
        try:
            values = client.visual_encoder_difference_map(comparison_id, layer)
        except BackendError as err:
            raise gr.Error(str(err)) from None
        values = explorer.shown_values(ds, values.astype(np.float32))
        title = f"encoding r, language-trained minus category-trained · {LAYERS[layer]}"
        finite = values[np.isfinite(values)]
        vmax = float(np.nanpercentile(np.abs(finite), 99.5)) if finite.size else 1.0
        if explorer.unit_space(ds)["kind"] == "surface":
            update = self.brain.values_update(values, title, static=explorer.surface_static(self.brain, ds), vmax=vmax,
                                              cbar_label="difference in Pearson r", scale="symmetric")
            return figure, table, update, gr.update(), gr.update(visible=True), gr.update(visible=False)
        static = self.mouse.static_payload(explorer.unit_space(ds))
        update = self.mouse.values_update(values, title, static=static, vmax=vmax, cbar_label="difference in Pearson r",
                                          scale="symmetric")
        return figure, table, gr.update(), update, gr.update(visible=False), gr.update(visible=True)

    def wire(self, dataset_state) -> None:
        client = self.explorer.client
        comparison_state = gr.State("")
        shown = [self.plot, self.table, *self.brain.outputs, *self.mouse.outputs, self.brain_group, self.mouse_group]

        def run(ds, objective, epochs, layer, progress=gr.Progress()):
            body = {"dataset_id": ds, "objective": objective, "epochs": int(epochs)}
            try:
                job = follow_job(client, lambda: client.visual_encoders_job(**body), progress)
            except BackendError as err:
                raise gr.Error(str(err)) from None
            if job["state"] != "done":
                return job_summary(job), "", *[gr.update()] * len(shown)
            comparison_id = job["result"]["comparison_id"]
            return job_summary(job), comparison_id, *self.show(ds, comparison_id, layer)

        def relayer(ds, comparison_id, layer):
            if not comparison_id:
                return [gr.update()] * len(shown)
            return self.show(ds, comparison_id, layer)

        self.run_button.click(run, [dataset_state, self.objective, self.epochs, self.layer], [self.status, comparison_state, *shown])
        self.layer.input(relayer, [dataset_state, comparison_state, self.layer], shown)
        dataset_state.change(lambda: ("", "", None, None), None, [self.status, comparison_state, self.plot, self.table],
                             show_progress="hidden")
