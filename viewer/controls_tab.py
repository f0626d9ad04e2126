"""The "Controls" tab (Doerig et al.): does the caption as a whole predict the brain better than its
words do? The encoding model of the full caption is compared, unit by unit, with the same model
fitted on the mean of the caption's word embeddings, on its nouns only and on its verbs only.
"""

from __future__ import annotations

import gradio as gr
import numpy as np
import pandas as pd

from backend.service.client import BackendError
from viewer.brain_panel import BrainPanel
from viewer.model_runs import announce, follow_job, job_summary
from viewer.mouse_panel import MousePanel
from viewer.plotly_view import PlotlyView, figure_json
from viewer.plots import controls_figure

CONTROL_LABELS = {"word-average": "mean of word embeddings", "nouns": "nouns only", "verbs": "verbs only"}


def control_rows(summary: dict) -> pd.DataFrame:
    """One row per (region, control): mean r difference (full - control) and fraction of units
    where the full caption wins; an "all units" row per control first."""
    rows = []
    for control, result in summary.items():
        label = CONTROL_LABELS.get(control, control)
        rows.append({"region": "all units", "control": label, "mean_difference": result["mean_difference"],
                     "fraction_full_better": result["fraction_a_better"]})
        for region, values in result["regions"].items():
            rows.append({"region": region, "control": label, "mean_difference": values["mean_difference"],
                         "fraction_full_better": values["fraction_a_better"]})
    frame = pd.DataFrame(rows)
    return frame.round({"mean_difference": 4, "fraction_full_better": 3})


def inapplicable(summary: dict) -> dict[str, str]:
    """control -> why it cannot apply (no caption has any word of its class): not plotted, not offered."""
    return {control: f"no caption has any {CONTROL_LABELS[control].split()[0].rstrip('s')}"
            for control, result in summary.items() if result.get("captions_with_words", 1.0) == 0}


def control_choices(summary: dict, current: str) -> dict:
    """The map choice's update: only controls that apply, the others named in its info with the reason."""
    skip = inapplicable(summary)
    choices = [(label, key) for key, label in CONTROL_LABELS.items() if key in summary and key not in skip]
    info = "; ".join(f"{CONTROL_LABELS[c]}: not available ({why})" for c, why in skip.items()) or None
    keys = [k for _, k in choices]
    return gr.update(choices=choices, value=current if current in keys else (keys[0] if keys else None), info=info)


def coverage_note(summary: dict) -> str:
    notes = []
    for control, result in summary.items():
        if "captions_with_words" in result:
            share = result["captions_with_words"]
            warn = " — too few for this control to mean anything" if share < 0.2 else ""
            notes.append(f"{CONTROL_LABELS[control]}: {share:.0%} of captions have any{warn}")
    return "  \n".join(notes)


class ControlsTab:
    """Create inside a ``gr.Tab``; then :meth:`wire`. ``explorer`` is the page's Explorer."""

    def __init__(self, explorer, surface_views) -> None:
        self.explorer = explorer
        gr.Markdown(
            "The encoding model of the full caption embedding against the same model fitted on word-level controls: "
            "the **mean of the caption's word embeddings** (order and syntax removed), its **nouns only** and its "
            "**verbs only**. Positive differences: the whole caption predicts the unit better than its words do. "
            "Uses the captions and text embedder chosen under *Run models*."
        )
        with gr.Row():
            self.button = gr.Button("Compare with word-level controls", scale=1, elem_id="ctx-controls-run")
            self.control = gr.Radio(
                [(label, key) for key, label in CONTROL_LABELS.items()], value="word-average", label="Map: full caption r minus", scale=3
            )
        self.status = gr.Markdown(elem_id="ctx-controls-status")
        self.plot = PlotlyView("ctx-controls-plot", height=420).html
        self.table = gr.Dataframe(label="Per region and control", interactive=False, elem_id="ctx-controls-table")
        with gr.Group(visible=True) as self.brain_group:
            self.brain = BrainPanel(label="r(full caption) − r(control) on the cortex", views=surface_views, elem_id="ctx-controls-brain")
        with gr.Group(visible=False) as self.mouse_group:
            self.mouse = MousePanel(label="r(full caption) − r(control) per neuron", elem_id="ctx-controls-mouse")

    def show_map(self, ds: str, control: str, source: str, embedder: str):
        """(brain update, mouse update, brain group, mouse group) for one control's difference map."""
        explorer, client = self.explorer, self.explorer.client
        try:
            values = client.control_difference(ds, control, source, embedder)
        except BackendError as err:
            if err.status == 404:
                return gr.update(), gr.update(), gr.update(), gr.update()
            raise gr.Error(str(err)) from None
        values = explorer.shown_values(ds, values.astype(np.float32))
        finite = values[np.isfinite(values)]
        vmax = float(np.nanpercentile(np.abs(finite), 99.5)) if finite.size else 1.0
        title = f"r(full) − r({CONTROL_LABELS[control]}) · {source} captions · {embedder.split('/')[-1]}"
        if explorer.unit_space(ds)["kind"] == "surface":
            static = explorer.surface_static(self.brain, ds)
            update = self.brain.values_update(values, title, static=static, vmax=vmax, cbar_label="Δr", scale="symmetric")
            return update, gr.update(), gr.update(visible=True), gr.update(visible=False)
        static = self.mouse.static_payload(explorer.unit_space(ds))
        update = self.mouse.values_update(values, title, static=static, vmax=vmax, cbar_label="Δr", scale="symmetric")
        return gr.update(), update, gr.update(visible=False), gr.update(visible=True)

    def cleared(self) -> tuple:
        """Updates that empty the tab (status, plot, table, then the map outputs): a new dataset,
        caption source or embedder makes the shown comparison stale."""
        return ("", "", None, self.brain.clear_update("run the comparison"), self.mouse.clear_update("run the comparison"),
                gr.update(), gr.update())

    @property
    def clear_outputs(self) -> list:
        return [self.status, self.plot, self.table, *self.brain.outputs, *self.mouse.outputs, self.brain_group, self.mouse_group]

    def wire(self, dataset_state, source, embedder) -> None:
        client = self.explorer.client
        map_outputs = [*self.brain.outputs, *self.mouse.outputs, self.brain_group, self.mouse_group]

        def run(ds, control, source_id, embedder_id, progress=gr.Progress()):
            try:
                job = follow_job(client, lambda: client.controls(ds, source_id, embedder_id), progress)
            except BackendError as err:
                raise gr.Error(str(err)) from None
            if job["state"] != "done":
                return job_summary(job), gr.update(), gr.update(), gr.update(), *[gr.update()] * 4
            summary = job["result"]["controls"]
            skip = inapplicable(summary)
            frame = control_rows({k: v for k, v in summary.items() if k not in skip})
            status = f"Compared {len(summary)} controls in {job['elapsed_s']:.1f} s ({source_id} captions).  \n{coverage_note(summary)}"
            choice = control_choices(summary, control)
            shown = choice["value"]
            maps = self.show_map(ds, shown, source_id, embedder_id) if shown else self.cleared()[3:]
            return status, figure_json(controls_figure(frame.to_dict("records"))), frame, choice, *maps

        self.button.click(announce("controls"), None, self.status, queue=False, show_progress="hidden").then(
            run, [dataset_state, self.control, source, embedder], [self.status, self.plot, self.table, self.control, *map_outputs])
        self.control.input(self.show_map, [dataset_state, self.control, source, embedder], map_outputs)
