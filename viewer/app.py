"""The explorer's page: a stimulus gallery, the stimulus, its captions and its brain response.

Every panel follows one selected stimulus. Data come only from :class:`BackendClient`; static
geometry (the cortical mesh, the mouse area map) is sent to the browser once per dataset and each
stimulus switch sends only per-unit values.
"""

from __future__ import annotations

import functools
import html
import os
import re
import threading

import gradio as gr
import numpy as np

from backend.service.client import BackendClient, BackendError
from viewer.brain_captions_tab import BrainCaptionsTab, generated_row_html
from viewer.brain_panel import MESH_KINDS, BrainPanel
from viewer.controls_tab import ControlsTab
from viewer.visual_encoders_tab import VisualEncodersTab
from viewer.summary_tabs import ComparisonTab, RsaTab
from viewer.encoding_tab import EncodingTab
from viewer.manifold_panel import ManifoldPanel, caption_lookup
from viewer.model_runs import MAX_CORPUS_UPLOAD, ModelRuns, brain_reconstruction, items_from_switch, png_path
from viewer.mouse_panel import MousePanel

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

PAGE_SIZE = 24
THUMB_PX = 128
STIMULUS_PX = 320
#: Ventral too: the category regions of the ventral temporal cortex are hidden in the other views.
SURFACE_VIEWS = ("lateral", "medial", "ventral")

CSS = """
.ctx-captions table { width: 100%; border-collapse: collapse; font-size: 0.9em; }
.ctx-captions td { padding: 2px 6px; border-bottom: 1px solid var(--border-color-primary); vertical-align: top; }
.ctx-captions td.who { white-space: nowrap; color: var(--body-text-color-subdued); width: 9em; }
.ctx-captions tr.reference td { font-weight: 600; }
.ctx-captions tr.decoded td { background: #eef6ff; }
.ctx-captions .sim { font-size: 0.75em; padding: 0 4px; border-radius: 4px; background: #fde68a; color: #713f12; margin-left: 4px; }
.ctx-captions mark { background: #fecaca; color: inherit; padding: 0 1px; border-radius: 2px; }
.ctx-note { font-size: 0.85em; color: var(--body-text-color-subdued); }
/* One screen: tighter page margins and gaps, so stimulus, captions, brain and reconstructions fit
   1600x1000 without scrolling. */
.gradio-container { padding-top: 4px !important; max-width: 100% !important; }
#ctx-title h2 { margin: 0; font-size: 1.25em; }
#ctx-dataset-info { font-size: 0.85em; line-height: 1.25; }
#ctx-explore-row { gap: 8px; }
#ctx-captions { max-height: 230px; overflow-y: auto; }
/* Short screens (1280x720): the dataset's long description gives way to the core view. */
@media (max-height: 800px) {
  #ctx-dataset-info .ctx-note { display: none; }
  #ctx-title h2 { font-size: 1.05em; }
}
/* The strip shows every reconstruction whole, in one row that scrolls sideways. */
#ctx-reconstructions .grid-container { grid-template-columns: repeat(6, minmax(84px, 1fr)) !important; }
"""

#: Arrow keys step through the stimuli (not while typing in a field): they click hidden buttons.
KEYS_JS = """
() => {
  document.addEventListener('keydown', (ev) => {
    const t = ev.target, tag = (t && t.tagName || '').toLowerCase();
    if (tag === 'input' || tag === 'textarea' || tag === 'select' || (t && t.isContentEditable)) return;
    if (ev.altKey || ev.ctrlKey || ev.metaKey) return;
    const id = ev.key === 'ArrowRight' || ev.key === 'ArrowDown' ? 'ctx-step-next'
             : ev.key === 'ArrowLeft' || ev.key === 'ArrowUp' ? 'ctx-step-prev' : null;
    if (!id) return;
    const button = document.querySelector('#' + id);
    if (button) { ev.preventDefault(); button.click(); }
  });
}
"""


class Explorer:
    """Handlers behind the page; each turns client calls into component updates.

    ``brain`` and ``mouse`` are the page's response panels (set when the page is built).
    """

    def __init__(self, client: BackendClient, brain: BrainPanel | None = None, mouse: MousePanel | None = None) -> None:
        self.client = client
        self.brain, self.mouse = brain, mouse
        #: dataset -> user corpus id of the decoding to show (None: the training captions); the
        #: Run models panel sets it when a decode job from this page finishes.
        self.corpora: dict[str, str | None] = {}

    # -- cached reads (static per dataset) ----------------------------------------------------
    @functools.lru_cache(maxsize=8)
    def detail(self, dataset_id: str) -> dict:
        return self.client.dataset(dataset_id)

    @functools.lru_cache(maxsize=8)
    def unit_space(self, dataset_id: str) -> dict:
        return self.client.unit_space(dataset_id)

    @functools.lru_cache(maxsize=1)
    def geometry(self) -> dict:
        """The display meshes {kind: {"lh", "rh"}} (inflated, pial, white, flat): every fsaverage
        dataset is shown on fsaverage5; the panel sends them to the browser once per dataset."""
        return {kind: self.client.surface_geometry("fsaverage5", kind) for kind in MESH_KINDS}

    def surface_static(self, panel: BrainPanel, dataset_id: str):
        """The panel's geometry update for a surface dataset: only units fsaverage5 can show."""
        space = self.unit_space(dataset_id)
        shown = space["display_vertices"] >= 0
        return panel.static_payload(self.geometry(), space["display_vertices"][shown], space["roi_labels"][shown], space["roi_names"])

    def shown_values(self, dataset_id: str, values: np.ndarray) -> np.ndarray:
        """Per-unit values restricted to the units the display mesh has (all, for fsaverage5)."""
        space = self.unit_space(dataset_id)
        return values if space["kind"] != "surface" else values[space["display_vertices"] >= 0]

    def warm(self, dataset_id: str) -> None:
        """Rasterise the dataset's surface views ahead of the first visitor (seconds, once)."""
        try:
            if self.unit_space(dataset_id)["kind"] == "surface" and self.brain is not None:
                self.surface_static(self.brain, dataset_id)
        except BackendError as err:
            print(f"[viewer] could not prepare {dataset_id}: {err}")

    def dataset_choices(self) -> list[tuple[str, str]]:
        return [(f"{d['name']} [{d['id']}]", d["id"]) for d in self.client.datasets()]

    # -- views ---------------------------------------------------------------------------------
    def dataset_markdown(self, dataset_id: str) -> str:
        d = self.detail(dataset_id)
        sim = " · **simulated** (planted truth in the *Planted truth* tab)" if d["simulated"] else ""
        repeats = f", {d['n_repeats']} repeats of each test stimulus" if d.get("n_repeats") else ""
        units = "vertices" if d["space"] == "surface" else "neurons"
        return (
            f"**{html.escape(d['name'])}**{sim}  \n{d['n_stimuli']:,} stimuli "
            f"({d['splits']['train']:,} train / {d['splits']['test']:,} test{repeats}) · {d['n_units']:,} {units}  \n"
            f"<span class='ctx-note'>{html.escape(d['description'])}</span>"
        )

    def gallery_page(self, dataset_id: str, query: str, offset: int, split: str = "all") -> tuple[list, list[int], str, int]:
        """(gallery items, stimulus indices on the page, page label, clamped offset); ``split`` is
        "all", "train" or "test"."""
        which = None if split == "all" else split
        page = self.client.stimuli(dataset_id, query=query.strip(), split=which, offset=offset, limit=PAGE_SIZE)
        if page["total"] and offset >= page["total"]:
            offset = max(0, (page["total"] - 1) // PAGE_SIZE * PAGE_SIZE)
            page = self.client.stimuli(dataset_id, query=query.strip(), split=which, offset=offset, limit=PAGE_SIZE)
        items = [(self.thumbnail(dataset_id, it["index"]), f"#{it['index']} {it['caption'] or it['id']}") for it in page["items"]]
        indices = [it["index"] for it in page["items"]]
        if page["total"]:
            label = f"{offset + 1}-{offset + len(indices)} of {page['total']:,}" + ("" if which is None else f" {which}")
            label += f" matching “{query.strip()}”" if query.strip() else ""
        else:
            label = f"no {which or ''} stimulus matches “{query.strip()}”".replace("  ", " ")
        return items, indices, label, offset

    def thumbnail(self, dataset_id: str, index: int):
        return png_path(self.client.stimulus_image(dataset_id, index, size=THUMB_PX))

    def switch(self, ds: str, index: int, generator: str | None = None, images: bool = True) -> dict:
        """The backend's one-request switch payload for stimulus ``index`` (see BackendClient.switch)."""
        return self.client.switch(ds, index, size=STIMULUS_PX, model=generator or None, decoded_corpus=self.corpora.get(ds), images=images)

    def show_stimulus(self, ds: str, index: int, generator: str | None = None, static=None, kind: str | None = None) -> tuple:
        """Outputs for a stimulus switch: (index, image, heading, captions, reconstructions, the
        reconstruction from the brain, brain update, mouse update, manifold mark), from one backend
        request. Only per-unit values go to the response panel unless ``static`` (a dataset
        switch) is given; ``generator`` is the text-to-image model whose images to show.
        """
        payload = self.switch(ds, index, generator)
        item = payload["stimulus"]
        image = png_path(payload["image"])
        values = self.shown_values(ds, payload["responses"])
        caption_table = self.captions_table(payload)
        kind = kind or self.unit_space(ds)["kind"]
        title = f"stimulus #{index} ({item['split']})"
        # The demo world's responses are in units of its noise sd; real data keep their own units.
        unit = "response (noise sd)" if self.detail(ds)["simulated"] else "response"
        if kind == "surface":
            brain_update = self.brain.values_update(values, title, static=static, cbar_label=unit, scale="symmetric")
            mouse_update = gr.update()
        else:
            brain_update = gr.update()
            mouse_update = self.mouse.values_update(values, title, static=static, cbar_label=unit, scale="symmetric")
        split = "test (mean of repeats)" if item["split"] == "test" else item["split"]
        heading = f"**Stimulus #{index}** · `{item['id']}` · {split}"
        recon = items_from_switch(payload)
        from_brain = brain_reconstruction(payload, generator)
        return (index, image, heading, caption_table, recon, from_brain, brain_update, mouse_update, ManifoldPanel.select(index))

    def captions_html(self, dataset_id: str, index: int) -> str:
        """The captions panel for a stimulus (one backend request)."""
        return self.captions_table(self.switch(dataset_id, index, images=False))

    def captions_table(self, payload: dict) -> str:
        """The captions panel from a switch payload: each source's caption (words not in the
        reference highlighted), the caption decoded and the one generated from the brain."""
        captions = payload["captions"]
        specs = {c["id"]: c for c in payload["captioners"]}
        reference = captions.get("reference") or ""
        ref_words = set(_words(reference))
        rows = []
        for name, text in captions.items():
            spec = specs.get(name, {"label": name, "simulated": False})
            badge = "<span class='sim'>simulated</span>" if spec.get("simulated") else ""
            words = (text or "—").split()
            shown = " ".join(
                html.escape(w) if name == "reference" or set(_words(w)) <= ref_words else f"<mark>{html.escape(w)}</mark>" for w in words
            )
            css = " class='reference'" if name == "reference" else ""
            rows.append(f"<tr{css}><td class='who'>{html.escape(spec.get('label', name))}{badge}</td><td>{shown}</td></tr>")
        decoded = payload.get("decoded")
        if decoded:
            rows.append(
                "<tr class='decoded'><td class='who'>Decoded from the brain</td>"
                f"<td>{html.escape(decoded['caption'])} <span class='ctx-note'>(cosine {decoded['similarity']:.2f} to the reference; "
                f"retrieved from the {html.escape(decoded.get('corpus') or 'training captions')})</span></td></tr>"
            )
        rows.append(generated_row_html(payload.get("generated")))
        return (
            f"<div class='ctx-captions'><table>{''.join(rows)}</table>"
            "<div class='ctx-note'>Highlighted: words not in the reference caption.</div></div>"
        )

    @functools.lru_cache(maxsize=8)
    def stimulus_ids(self, dataset_id: str) -> dict[str, int]:
        """stimulus id (lower case) -> index, for "go to"."""
        ids, offset = {}, 0
        while True:
            page = self.client.stimuli(dataset_id, offset=offset, limit=500)
            ids.update({str(it["id"]).lower(): int(it["index"]) for it in page["items"]})
            offset += len(page["items"])
            if not page["items"] or offset >= page["total"]:
                return ids

    def find_stimulus(self, dataset_id: str, text: str) -> int:
        """The index of the stimulus named by ``text``: "#12", "12" or a stimulus id; gr.Error if none."""
        wanted = (text or "").strip().lstrip("#").strip()
        if not wanted:
            raise gr.Error("type a stimulus index (e.g. 12 or #12) or its id")
        n = self.detail(dataset_id)["n_stimuli"]
        if wanted.isdigit():
            if int(wanted) >= n:
                raise gr.Error(f"{dataset_id} has stimuli 0..{n - 1}, not {wanted}")
            return int(wanted)
        index = self.stimulus_ids(dataset_id).get(wanted.lower())
        if index is None:
            raise gr.Error(f"no stimulus with index or id “{wanted}” in {dataset_id}")
        return index


def build_app(client: BackendClient, dataset_id: str = "demo-human"):
    """The Gradio Blocks app (not launched)."""
    explorer = Explorer(client)
    try:
        choices = explorer.dataset_choices()
    except BackendError as err:
        choices, dataset_id = [], None
        print(f"[viewer] {err}")
    ids = [value for _, value in choices]
    if dataset_id not in ids and dataset_id is not None:
        choices.append((dataset_id, dataset_id))

    with gr.Blocks(title="Cortextual") as app:
        dataset_state = gr.State(dataset_id)
        page_state = gr.State([])
        offset_state = gr.State(0)
        stimulus_state = gr.State(0)

        with gr.Row(equal_height=True):
            gr.Markdown("## Cortextual — the visual brain and language", elem_id="ctx-title")
            dataset_info = gr.Markdown(elem_id="ctx-dataset-info")
            dataset_box = gr.Dropdown(choices=choices, value=dataset_id, label="Dataset", scale=1, elem_id="ctx-dataset")

        with gr.Tab("Explore"):
            # One screen: gallery | stimulus, the reconstruction from the brain, captions and the
            # other reconstructions | the brain. Manifolds and model runs below.
            with gr.Row(elem_id="ctx-explore-row"):
                with gr.Column(scale=3, min_width=260):
                    with gr.Row():
                        search = gr.Textbox(
                            label="Search captions", placeholder="e.g. dog left of", scale=3, elem_id="ctx-search", submit_btn=True,
                            max_lines=1,
                        )
                        goto = gr.Textbox(
                            label="Go to #index or id", placeholder="12", scale=2, elem_id="ctx-goto", submit_btn=True, max_lines=1,
                        )
                    split_choice = gr.Radio(
                        ["all", "train", "test"], value="all", label="Split", elem_id="ctx-split",
                        info="test: decoded captions and reconstructions from the brain · ← → step",
                    )
                    gallery = gr.Gallery(
                        label="Stimuli", columns=4, height=430, allow_preview=False, object_fit="contain", elem_id="ctx-gallery"
                    )
                    with gr.Row():
                        prev_button = gr.Button("◀ Page", size="sm", elem_id="ctx-prev", min_width=60)
                        page_label = gr.Markdown(elem_id="ctx-page")
                        next_button = gr.Button("Page ▶", size="sm", elem_id="ctx-next", min_width=60)
                    step_prev = gr.Button("previous stimulus", visible="hidden", elem_id="ctx-step-prev")
                    step_next = gr.Button("next stimulus", visible="hidden", elem_id="ctx-step-next")
                with gr.Column(scale=4, min_width=320):
                    stimulus_title = gr.Markdown(elem_id="ctx-stimulus-title")
                    with gr.Row(equal_height=True):
                        stimulus_image = gr.Image(
                            label="Stimulus", type="filepath", height=220, interactive=False, elem_id="ctx-stimulus", min_width=150
                        )
                        from_brain = gr.Image(
                            label="From the brain", type="filepath", height=220, interactive=False, elem_id="ctx-recon-brain", min_width=150
                        )
                    captions = gr.HTML(elem_id="ctx-captions")
                    recon_slot = gr.Column(min_width=320)
                with gr.Column(scale=5, min_width=420):
                    with gr.Group(visible=True) as brain_group:
                        brain = BrainPanel(
                            label="Response on the cortex (fsaverage5)", views=SURFACE_VIEWS, elem_id="ctx-brain"
                        )
                    with gr.Group(visible=False) as mouse_group:
                        mouse = MousePanel(label="Neural responses on the dorsal visual areas", elem_id="ctx-mouse")
            runs = ModelRuns(client, corpora=explorer.corpora)
            with recon_slot:
                runs.reconstructions.render()
            with gr.Accordion("Manifolds: brain responses and caption embeddings (UMAP)", open=True):
                manifolds = ManifoldPanel(client)

        with gr.Tab("Encoding maps") as encoding_tab:
            encoding = EncodingTab(explorer, SURFACE_VIEWS)

        with gr.Tab("Controls"):
            controls = ControlsTab(explorer, SURFACE_VIEWS)

        with gr.Tab("Captioner comparison"):
            comparison = ComparisonTab(client)

        with gr.Tab("RSA"):
            rsa = RsaTab(client)

        with gr.Tab("Brain -> caption"):
            brain_captions = BrainCaptionsTab(client)

        with gr.Tab("Visual encoders"):
            visual_encoders = VisualEncodersTab(explorer, SURFACE_VIEWS)

        with gr.Tab("Planted truth") as truth_tab:
            gr.Markdown(
                "Simulated datasets carry the tuning they were generated with: analyses are checked against these maps."
            )
            truth_choice = gr.Dropdown(label="Planted map", choices=[], elem_id="ctx-truth-choice")
            truth_text = gr.Markdown()
            with gr.Group(visible=True) as truth_brain_group:
                truth_brain = BrainPanel(
                    label="Planted map on the cortex", views=SURFACE_VIEWS, elem_id="ctx-truth-brain"
                )
            with gr.Group(visible=False) as truth_mouse_group:
                truth_mouse = MousePanel(label="Planted map per neuron", elem_id="ctx-truth-mouse")

        # ---------------------------------------------------------------- handlers
        def static_updates(ds: str, panels_surface: BrainPanel, panels_neurons: MousePanel):
            space = explorer.unit_space(ds)
            if space["kind"] == "surface":
                return "surface", explorer.surface_static(panels_surface, ds)
            return "neurons", panels_neurons.static_payload(space)

        explorer.brain, explorer.mouse = brain, mouse
        show_stimulus = explorer.show_stimulus
        stimulus_outputs = [
            stimulus_state, stimulus_image, stimulus_title, captions, runs.reconstructions, from_brain,
            *brain.outputs, *mouse.outputs, manifolds.plot,
        ]
        runs.wire(dataset_state, stimulus_state, captions, explorer.captions_html, from_brain)
        encoding.wire(dataset_state, encoding_tab)
        comparison.wire(dataset_state, runs.embedder, runs.generator)
        rsa.wire(dataset_state, runs.embedder)
        brain_captions.wire(dataset_state, runs.embedder)
        visual_encoders.wire(dataset_state)
        controls.wire(dataset_state, runs.source, runs.embedder)
        manifolds.wire(dataset_state, stimulus_state, runs.embedder)
        manifold_inputs = [dataset_state, stimulus_state, runs.embedder, manifolds.region]

        def open_dataset(ds: str, generator: str | None):
            if not ds:
                raise gr.Error("no dataset selected (is the backend running?)")
            try:
                info = explorer.dataset_markdown(ds)
                kind, static = static_updates(ds, brain, mouse)
                items, indices, label, offset = explorer.gallery_page(ds, "", 0)
                first = show_stimulus(ds, indices[0] if indices else 0, generator, static=static, kind=kind)
                truth = explorer.detail(ds)["truth"]
                sources = runs.sources(ds)
            except BackendError as err:
                raise gr.Error(str(err)) from None
            return (
                gr.update(choices=explorer.dataset_choices(), value=ds),
                ds,
                info,
                items,
                indices,
                label,
                offset,
                "",
                "all",
                gr.update(visible=kind == "surface"),
                gr.update(visible=kind == "neurons"),
                gr.update(choices=list(truth), value=None),
                gr.update(choices=sources, value="reference"),
                *first,
            )

        dataset_outputs = [
            dataset_box,
            dataset_state,
            dataset_info,
            gallery,
            page_state,
            page_label,
            offset_state,
            search,
            split_choice,
            brain_group,
            mouse_group,
            truth_choice,
            runs.source,
            *stimulus_outputs,
        ]

        # No stale panels: what was computed for another dataset, caption source or embedder goes.
        analysis_outputs = [comparison.status, comparison.plot, comparison.table, rsa.status, rsa.plot, rsa.table, rsa.matrices,
                            *controls.clear_outputs]

        def clear_analyses():
            return ("", "", None, "", "", None, "", *controls.cleared())

        def clear_dataset_panels():
            return (*encoding.cleared(), *clear_analyses(), "")

        app.load(open_dataset, inputs=[dataset_box, runs.generator], outputs=dataset_outputs).then(
            manifolds.render, manifold_inputs, manifolds.plot, show_progress="hidden"
        )
        dataset_box.input(open_dataset, inputs=[dataset_box, runs.generator], outputs=dataset_outputs).then(
            clear_dataset_panels, None, [*encoding.clear_outputs, *analysis_outputs, manifolds.status], show_progress="hidden"
        ).then(
            manifolds.region_choices, [dataset_state, manifolds.region], manifolds.region
        ).then(manifolds.render, manifold_inputs, manifolds.plot, show_progress="hidden")
        for choice in (runs.source, runs.embedder):
            choice.change(clear_analyses, None, analysis_outputs, show_progress="hidden")

        def turn_page(ds: str, query: str, split: str, offset: int, step: int):
            try:
                items, indices, label, offset = explorer.gallery_page(ds, query or "", max(0, offset + step * PAGE_SIZE), split or "all")
            except BackendError as err:
                raise gr.Error(str(err)) from None
            return items, indices, label, offset

        page_outputs = [gallery, page_state, page_label, offset_state]
        query_inputs = [dataset_state, search, split_choice]
        search.submit(lambda ds, q, sp: turn_page(ds, q, sp, 0, 0), inputs=query_inputs, outputs=page_outputs)
        split_choice.input(lambda ds, q, sp: turn_page(ds, q, sp, 0, 0), inputs=query_inputs, outputs=page_outputs)
        prev_button.click(lambda ds, q, sp, o: turn_page(ds, q, sp, o, -1), inputs=[*query_inputs, offset_state], outputs=page_outputs)
        next_button.click(lambda ds, q, sp, o: turn_page(ds, q, sp, o, +1), inputs=[*query_inputs, offset_state], outputs=page_outputs)

        def switch_to(ds: str, index: int, generator: str | None):
            try:
                return show_stimulus(ds, int(index), generator)
            except BackendError as err:
                raise gr.Error(str(err)) from None

        def select_stimulus(ds: str, indices: list[int], generator: str | None, event: gr.SelectData):
            if not indices or event.index is None or event.index >= len(indices):
                raise gr.Error("that thumbnail is no longer on this page; search again")
            return switch_to(ds, indices[event.index], generator)

        gallery.select(
            select_stimulus, inputs=[dataset_state, page_state, runs.generator], outputs=stimulus_outputs, show_progress="hidden"
        )

        def go_to(ds: str, text: str, generator: str | None):
            try:
                index = explorer.find_stimulus(ds, text)
            except BackendError as err:
                raise gr.Error(str(err)) from None
            return switch_to(ds, index, generator)

        goto.submit(go_to, inputs=[dataset_state, goto, runs.generator], outputs=stimulus_outputs, show_progress="hidden")

        def step(ds: str, index: int, indices: list[int], generator: str | None, delta: int):
            """The next (previous) stimulus of the gallery page, or by index past the page's ends."""
            index = int(index or 0)
            if indices and index in indices and 0 <= indices.index(index) + delta < len(indices):
                target = indices[indices.index(index) + delta]
            else:
                target = min(max(index + delta, 0), explorer.detail(ds)["n_stimuli"] - 1)
            return switch_to(ds, target, generator)

        step_inputs = [dataset_state, stimulus_state, page_state, runs.generator]
        step_prev.click(lambda *a: step(*a, -1), step_inputs, stimulus_outputs, show_progress="hidden")
        step_next.click(lambda *a: step(*a, +1), step_inputs, stimulus_outputs, show_progress="hidden")

        def point_clicked(ds: str, generator: str | None, event: gr.EventData):
            """A click on a manifold point selects its stimulus everywhere."""
            index = (getattr(event, "_data", None) or {}).get("index")
            if index is None:
                raise gr.Error("that point names no stimulus")
            return switch_to(ds, int(index), generator)

        manifolds.plot.point(point_clicked, [dataset_state, runs.generator], stimulus_outputs, show_progress="hidden")

        def show_truth(ds: str, name: str | None):
            if not name:
                return "", gr.update(), gr.update(), gr.update(), gr.update()
            try:
                kind, static = static_updates(ds, truth_brain, truth_mouse)
                values = explorer.shown_values(ds, client.truth_map(ds, name).astype(np.float32))
                description = explorer.detail(ds)["truth"].get(name, "")
            except BackendError as err:
                raise gr.Error(str(err)) from None
            if kind == "surface":
                return (
                    f"**{name}**: {description}",
                    truth_brain.values_update(values, name, static=static, cbar_label=name),
                    gr.update(),
                    gr.update(visible=True),
                    gr.update(visible=False),
                )
            return (
                f"**{name}**: {description}",
                gr.update(),
                truth_mouse.values_update(values, name, static=static, cbar_label=name),
                gr.update(visible=False),
                gr.update(visible=True),
            )

        truth_outputs = [truth_text, *truth_brain.outputs, *truth_mouse.outputs, truth_brain_group, truth_mouse_group]
        truth_choice.change(show_truth, inputs=[dataset_state, truth_choice], outputs=truth_outputs)

        def first_truth(ds: str, current: str | None):
            if current:
                return gr.update()
            names = list(explorer.detail(ds)["truth"]) if ds else []
            return gr.update(value=names[0] if names else None)

        truth_tab.select(first_truth, inputs=[dataset_state, truth_choice], outputs=truth_choice)

    app.explorer = explorer
    if dataset_id:
        threading.Thread(target=explorer.warm, args=(dataset_id,), name="viewer-warm-up", daemon=True).start()
    return app


def run_viewer(client: BackendClient, dataset_id: str, host: str, port: int) -> None:
    """Build and serve the page (blocks until interrupted)."""
    app = build_app(client, dataset_id=dataset_id)
    app.queue(default_concurrency_limit=4).launch(
        server_name=host, server_port=port, show_error=True, quiet=True, css=CSS, js=KEYS_JS, footer_links=["api"],
        max_file_size=MAX_CORPUS_UPLOAD,  # the only upload is a caption corpus; Gradio refuses larger files itself
    )


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())
