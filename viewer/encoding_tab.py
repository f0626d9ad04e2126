"""The "Encoding maps" tab: fit the encoding model of a caption source and see its accuracy map.

The model is a ridge from the captions' text embeddings to every unit (per-unit regularisation by
generalised cross-validation), fitted on the training stimuli and scored on the test stimuli.
"""

from __future__ import annotations

import gradio as gr
import numpy as np

from backend.service.client import BackendError
from viewer.brain_panel import BrainPanel
from viewer.model_runs import announce, follow_job, job_summary
from viewer.mouse_panel import MousePanel

PARTS = {"r": "Pearson r on the test split", "fraction_of_ceiling": "r² as a fraction of the noise ceiling"}
#: Colour-bar units; both maps are drawn on a sequential scale from 0 (negative r clamps to the bottom).
PART_UNITS = {"r": "Pearson r", "fraction_of_ceiling": "fraction of noise ceiling (r² / ceiling)"}


class EncodingTab:
    """Create inside a ``gr.Tab``; then :meth:`wire`. ``explorer`` is the page's Explorer."""

    def __init__(self, explorer, surface_views) -> None:
        self.explorer = explorer
        gr.Markdown(
            "Ridge regression from each caption's text embedding to every unit, one regularisation per unit "
            "chosen by generalised cross-validation on the training stimuli; scored on the test stimuli."
        )
        with gr.Row():
            self.source = gr.Dropdown(["reference"], value="reference", label="Captions", scale=2, elem_id="ctx-enc-source")
            self.embedder = gr.Dropdown([], label="Text embedder", scale=2, elem_id="ctx-enc-embedder")
            self.part = gr.Radio([(label, key) for key, label in PARTS.items()], value="r", label="Map", scale=2)
            self.fit_button = gr.Button("Fit encoding model", scale=1, elem_id="ctx-enc-fit")
        self.status = gr.Markdown(elem_id="ctx-enc-status")
        with gr.Group(visible=True) as self.brain_group:
            self.brain = BrainPanel(label="Encoding accuracy on the cortex", views=surface_views, elem_id="ctx-enc-brain")
        with gr.Group(visible=False) as self.mouse_group:
            self.mouse = MousePanel(label="Encoding accuracy per neuron", elem_id="ctx-enc-mouse")
        gr.Markdown("### Text → brain\nType a sentence: the fitted encoding model predicts the response it would evoke.")
        self.sentence = gr.Textbox(
            label="Sentence", placeholder="a small dog to the left of a large car on a beach", submit_btn=True, elem_id="ctx-t2b-text"
        )
        with gr.Group(visible=True) as self.t2b_brain_group:
            self.t2b_brain = BrainPanel(label="Predicted response to the sentence", views=surface_views, elem_id="ctx-t2b-brain")
        with gr.Group(visible=False) as self.t2b_mouse_group:
            self.t2b_mouse = MousePanel(label="Predicted response per neuron", elem_id="ctx-t2b-mouse")

    def choices(self, dataset_id: str) -> tuple[list, list]:
        client = self.explorer.client
        sources = [(c["label"], c["id"]) for c in client.captioners(dataset_id)]
        embedders = [(m["label"], m["id"]) for m in client.models("text_embedder") if m["present"]]
        return sources, embedders

    def show(self, ds: str, source: str, embedder: str, part: str):
        """(status, brain update, mouse update, brain group, mouse group) for a fitted map."""
        explorer, client = self.explorer, self.explorer.client
        try:
            values = client.encoding_map(ds, source, embedder, part)
        except BackendError as err:
            if err.status == 404:
                # Clear the map: an older map (another dataset, source or embedder) would pass for this one.
                cleared = "not fitted yet"
                return (f"Not fitted yet: press **Fit encoding model**. ({err})", self.brain.clear_update(cleared),
                        self.mouse.clear_update(cleared), gr.update(), gr.update())
            raise gr.Error(str(err)) from None
        values = explorer.shown_values(ds, values.astype(np.float32))
        title = f"{PARTS[part]} · {source} captions · {embedder.split('/')[-1]}"
        finite = values[np.isfinite(values)]
        summary = f"mean {float(finite.mean()):.3f}, best {float(finite.max()):.3f} over {finite.size:,} units" if finite.size else "no values"
        vmax = float(np.nanpercentile(np.abs(finite), 99.5)) if finite.size else 1.0
        kind = explorer.unit_space(ds)["kind"]
        if kind == "surface":
            update = self.brain.values_update(values, title, static=explorer.surface_static(self.brain, ds), vmax=vmax, cbar_label=PART_UNITS[part], scale="sequential")
            return summary, update, gr.update(), gr.update(visible=True), gr.update(visible=False)
        static = self.mouse.static_payload(explorer.unit_space(ds))
        update = self.mouse.values_update(values, title, static=static, vmax=vmax, cbar_label=PART_UNITS[part], scale="sequential")
        return summary, gr.update(), update, gr.update(visible=False), gr.update(visible=True)

    def predict(self, ds: str, text: str, source: str, embedder: str):
        """(brain update, mouse update, brain group, mouse group) for a typed sentence."""
        explorer, client = self.explorer, self.explorer.client
        if not text.strip():
            raise gr.Error("type a sentence first")
        try:
            values = explorer.shown_values(ds, client.text_to_brain(ds, text, source, embedder))
        except BackendError as err:
            raise gr.Error(str(err)) from None
        title = f"“{text.strip()[:80]}”"
        if explorer.unit_space(ds)["kind"] == "surface":
            update = self.t2b_brain.values_update(values, title, static=explorer.surface_static(self.t2b_brain, ds), cbar_label="predicted response", scale="symmetric")
            return update, gr.update(), gr.update(visible=True), gr.update(visible=False)
        static = self.t2b_mouse.static_payload(explorer.unit_space(ds))
        update = self.t2b_mouse.values_update(values, title, static=static, cbar_label="predicted response", scale="symmetric")
        return gr.update(), update, gr.update(visible=False), gr.update(visible=True)

    def cleared(self) -> tuple:
        """Updates for :attr:`clear_outputs` that empty the tab's maps (a dataset switch makes them stale)."""
        message = "choose captions and an embedder, then fit"
        return ("", self.brain.clear_update(message), self.mouse.clear_update(message),
                self.t2b_brain.clear_update("type a sentence"), self.t2b_mouse.clear_update("type a sentence"))

    @property
    def clear_outputs(self) -> list:
        return [self.status, *self.brain.outputs, *self.mouse.outputs, *self.t2b_brain.outputs, *self.t2b_mouse.outputs]

    def wire(self, dataset_state, tab: gr.Tab) -> None:
        client = self.explorer.client
        outputs = [self.status, *self.brain.outputs, *self.mouse.outputs, self.brain_group, self.mouse_group]

        def fit(ds, source, embedder, part, progress=gr.Progress()):
            try:
                job = follow_job(client, lambda: client.encode(ds, source, embedder), progress)
            except BackendError as err:
                raise gr.Error(str(err)) from None
            if job["state"] != "done":
                return job_summary(job), gr.update(), gr.update(), gr.update(), gr.update()
            status, *rest = self.show(ds, source, embedder, part)
            return job_summary(job) + "  \n" + status, *rest

        def opened(ds):
            try:
                sources, embedders = self.choices(ds)
            except BackendError as err:
                raise gr.Error(str(err)) from None
            return gr.update(choices=sources, value="reference"), gr.update(choices=embedders, value=embedders[0][1] if embedders else None)

        self.fit_button.click(announce("encoding fit"), None, self.status, queue=False, show_progress="hidden").then(
            fit, [dataset_state, self.source, self.embedder, self.part], outputs)
        tab.select(opened, dataset_state, [self.source, self.embedder]).then(
            self.show, [dataset_state, self.source, self.embedder, self.part], outputs
        )
        for control in (self.source, self.embedder, self.part):
            control.input(self.show, [dataset_state, self.source, self.embedder, self.part], outputs)
        self.sentence.submit(
            self.predict,
            [dataset_state, self.sentence, self.source, self.embedder],
            [*self.t2b_brain.outputs, *self.t2b_mouse.outputs, self.t2b_brain_group, self.t2b_mouse_group],
        )
