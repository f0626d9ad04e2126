"""Manifold panel: where the selected stimulus sits on UMAP maps of the brain responses and of its
caption's text embedding, side by side, the text map aligned onto the brain map so one stimulus can
be followed across both; points coloured by category, interactive (plotly): hover names the
stimulus and previews its image, a click selects it everywhere, the selected one stays ringed.

The maps are computed by a backend job (the first UMAP in the backend compiles for seconds to a
minute; numba's cache keeps that to once per install) and cached there; the panel fetches them once
per (dataset, source, embedder, region) and sends the figure once; a stimulus switch only sends
the selected index (the browser rings it).
"""

from __future__ import annotations

import base64
import collections
import threading

import gradio as gr

from backend.service.client import BackendClient, BackendError
from viewer.model_runs import announce, follow_job, job_summary
from viewer.plotly_view import PlotlyView, figure_json
from viewer.plots import manifold_figure, message_figure

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
ALL_UNITS = "all units with signal"
CACHE_SIZE = 8
PREVIEW_PX = 96
#: The stimuli read's page limit (the API's MAX_PAGE).
CAPTION_PAGE = 500


def caption_lookup(client, dataset_id: str) -> dict[int, str]:
    """stimulus index -> caption (or id) of every stimulus of the dataset (a few reads of 500)."""
    out: dict[int, str] = {}
    offset = 0
    while True:
        page = client.stimuli(dataset_id, offset=offset, limit=CAPTION_PAGE)
        for item in page["items"]:
            out[int(item["index"])] = item.get("caption") or item.get("id") or ""
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            return out


class ManifoldPanel:
    """Create inside a Blocks context; then :meth:`wire`. :meth:`figure` gives the plot for a
    (dataset, embedder, region, source); :meth:`select` marks a stimulus on it."""

    def __init__(self, client: BackendClient, label: str = "Manifolds: brain responses and caption embeddings (UMAP)") -> None:
        self.client = client
        self._figures: collections.OrderedDict[tuple, str] = collections.OrderedDict()
        self._captions: dict[str, dict[int, str]] = {}
        self._lock = threading.Lock()
        with gr.Row():
            self.region = gr.Dropdown(
                [ALL_UNITS], value=ALL_UNITS, label="Brain units of the map", scale=2, elem_id="ctx-manifold-region"
            )
            self.button = gr.Button("Compute manifolds", scale=1, elem_id="ctx-manifold-run")
        self.status = gr.Markdown(elem_id="ctx-manifold-status")
        def thumbnail(args):
            """Server function of the plot (a plain function: Gradio marks it with an attribute);
            Gradio hands the browser's arguments over as one list: [dataset id, stimulus index]."""
            dataset_id, index = (list(args) + [None, None])[:2] if isinstance(args, (list, tuple)) else (args, None)
            return self.thumbnail(dataset_id, index)

        self.view = PlotlyView("ctx-manifold", height=480, thumbnail=thumbnail)
        self.plot = self.view.html
        self.label = label

    # -- data ------------------------------------------------------------------------------------
    def captions(self, dataset_id: str) -> dict[int, str]:
        if dataset_id not in self._captions:
            try:
                self._captions[dataset_id] = caption_lookup(self.client, dataset_id)
            except (BackendError, AttributeError):
                return {}
        return self._captions[dataset_id]

    def figure(self, dataset_id: str | None, embedder: str | None = None, region: str | None = None, source: str | None = None) -> str:
        """The plot's value (figure JSON) for these maps: cached; a message saying what to run
        when the job has not run; "" without a dataset."""
        if not dataset_id:
            return ""
        key = (dataset_id, source or "reference", embedder or DEFAULT_EMBEDDER, _region(region))
        with self._lock:
            hit = self._figures.get(key)
            if hit is not None:
                self._figures.move_to_end(key)
                return hit
        try:
            data = self.client.manifolds(dataset_id, source=key[1], embedder=key[2], region=key[3])
        except BackendError as err:
            if err.status == 404:
                where = _region(region) or ALL_UNITS
                return figure_json(message_figure(
                    f"No manifolds yet for {dataset_id} ({where}, {key[2].split('/')[-1]}): press “Compute manifolds” "
                    "to lay the stimuli out by their brain responses and their captions."
                ))
            return figure_json(message_figure(f"Manifolds unavailable: {err}"))
        value = figure_json(manifold_figure({**data, "dataset": dataset_id}, self.captions(dataset_id)))
        with self._lock:
            self._figures[key] = value
            while len(self._figures) > CACHE_SIZE:
                self._figures.popitem(last=False)
        return value

    def forget(self, dataset_id: str | None = None) -> None:
        """Drop cached figures (of one dataset, or all), e.g. after a job recomputed them."""
        with self._lock:
            for key in [k for k in self._figures if dataset_id is None or k[0] == dataset_id]:
                del self._figures[key]

    def thumbnail(self, dataset_id: str, index: int) -> str:
        """A data URL of the stimulus's thumbnail (the hover preview), or "" if it cannot be read."""
        try:
            png = self.client.stimulus_image(str(dataset_id), int(index), size=PREVIEW_PX)
        except (BackendError, TypeError, ValueError):
            return ""
        return "data:image/png;base64," + base64.b64encode(png).decode()

    # -- page updates ----------------------------------------------------------------------------
    def render(self, dataset_id, index, embedder=None, region=None, source=None) -> dict:
        """The plot's update: the figure for these maps with stimulus ``index`` marked."""
        return gr.update(value=self.figure(dataset_id, embedder, region, source), selected=_index(index))

    @staticmethod
    def select(index) -> dict:
        """Mark stimulus ``index`` on the plot already shown (sends one number)."""
        return gr.update(selected=_index(index))

    def region_choices(self, dataset_id: str | None, current: str | None):
        """Dropdown update listing the dataset's regions (first: all units with signal)."""
        try:
            regions = self.client.manifold_regions(dataset_id) if dataset_id else []
        except BackendError:
            regions = []
        choices = [ALL_UNITS] + [r["name"] for r in regions]
        return gr.update(choices=choices, value=current if current in choices else ALL_UNITS)

    def compute(self, dataset_id, index, embedder, region, source=None, progress=gr.Progress()):
        """Run the manifolds job with a progress bar; then draw for the current stimulus."""
        if not dataset_id:
            raise gr.Error("no dataset selected")
        try:
            job = follow_job(
                self.client,
                lambda: self.client.compute_manifolds(dataset_id, source or "reference", embedder or DEFAULT_EMBEDDER, _region(region)),
                progress,
            )
        except BackendError as err:
            raise gr.Error(str(err)) from None
        if job["state"] != "done":
            return job_summary(job), gr.update()
        self.forget(dataset_id)
        r = job["result"]
        took = "read from the cache" if r["cached"] else f"in {job['elapsed_s']:.1f} s"
        status = (
            f"Mapped {r['stimuli']:,} stimuli ({r['units']:,} units) {took} · trustworthiness brain {r['trust_brain']:.2f}, "
            f"text {r['trust_text']:.2f} · shared neighbours {100 * r['shared_neighbours']:.1f}% (chance {100 * r['chance']:.1f}%)"
        )
        return status, self.render(dataset_id, index, embedder, region, source)

    def wire(self, dataset_state, stimulus_state, embedder_dropdown, source=None) -> None:
        """Connect the button (job, then draw), the region choice and the embedder. ``source``: an
        optional component holding the caption source (default: the reference captions)."""
        extra = [source] if source is not None else []
        inputs = [dataset_state, stimulus_state, embedder_dropdown, self.region, *extra]
        self.button.click(announce("manifolds"), None, self.status, queue=False, show_progress="hidden").then(
            self.compute, inputs, [self.status, self.plot])
        self.region.focus(self.region_choices, [dataset_state, self.region], self.region)
        self.region.input(self.render, inputs, self.plot, show_progress="hidden")
        embedder_dropdown.change(self.render, inputs, self.plot, show_progress="hidden")


def _region(region: str | None) -> str | None:
    return None if not region or region == ALL_UNITS else region


def _index(index) -> int | None:
    return None if index is None or index == "" else int(index)
