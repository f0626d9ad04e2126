"""Manifold panel: where the selected stimulus sits on UMAP maps of the brain responses and of its
caption's text embedding, side by side, the text map aligned onto the brain map so one stimulus can
be followed across both; points coloured by category.

The maps are computed by a backend job (the first UMAP in the backend compiles for up to a minute)
and cached there; the panel fetches them once per (dataset, source, embedder, region) and draws the
scatter plots once (PIL), so a stimulus switch only copies that picture and rings one point.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass

import gradio as gr
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from backend.service.client import BackendClient, BackendError
from viewer.model_runs import follow_job, job_summary

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
ALL_UNITS = "all units with signal"
PLOT = 400  # side of each square plot, px
PAD = 16
#: Room above the plots: Gradio draws its label and buttons over the image's top 30 px.
TOP = 32
TITLE_H = TOP + 44
LEGEND_ROW = 18
#: Tableau-like colours for the ten most frequent categories; the rest are "other".
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#17becf")
OTHER, UNLABELLED, SINGLE = "#b8b8b8", "#dcdcdc", "#4e79a7"
CACHE_SIZE = 8


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


FONT, FONT_SMALL, FONT_BOLD = _font(13), _font(11), _font(15)


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))


@dataclass
class _Maps:
    """One fetched result with its drawn background."""

    data: dict
    background: Image.Image
    rows: np.ndarray  # stimulus indices, sorted
    pixels: dict  # "brain"/"text" -> int [n, 2] pixel positions
    colours: list  # [n] RGB
    labels: list  # [n] legend label of each point


def category_colours(labels: list[str | None] | None, n: int) -> tuple[list, list, list[tuple[str, tuple, int]]]:
    """(colour per point, legend label per point, legend [(label, colour, count)]): the ten most
    frequent labels get their own colour, the rest are "other", missing labels "unlabelled"."""
    if not labels or all(x is None for x in labels):
        return [_rgb(SINGLE)] * n, ["stimulus"] * n, []
    counts = collections.Counter(x for x in labels if x is not None)
    top = [name for name, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: len(PALETTE)]]
    colour_of = {name: _rgb(PALETTE[k]) for k, name in enumerate(top)}
    colours, names = [], []
    for x in labels:
        if x is None:
            colours.append(_rgb(UNLABELLED)), names.append("unlabelled")
        elif x in colour_of:
            colours.append(colour_of[x]), names.append(x)
        else:
            colours.append(_rgb(OTHER)), names.append("other")
    legend = [(name, colour_of[name], counts[name]) for name in top]
    rest = sum(c for name, c in counts.items() if name not in colour_of)
    if rest:
        legend.append(("other", _rgb(OTHER), rest))
    missing = sum(x is None for x in labels)
    if missing:
        legend.append(("unlabelled", _rgb(UNLABELLED), missing))
    return colours, names, legend


def draw_background(data: dict, width_hint: int = PLOT) -> tuple[Image.Image, dict, list, list]:
    """The two scatter plots with titles and legend, without any selection."""
    brain, text = np.asarray(data["brain"], np.float32), np.asarray(data["text"], np.float32)
    n = len(brain)
    labels = data.get("groups") or data.get("categories")
    colours, names, legend = category_colours(labels, n)
    # Legend rows, laid out across the full width.
    width = 2 * PLOT + 3 * PAD
    entries, x, rows = [], PAD, 0
    for name, colour, count in legend:
        label = f"{name} ({count})"
        w = 16 + int(FONT.getlength(label)) + 14
        if x + w > width - PAD and x > PAD:
            x, rows = PAD, rows + 1
        entries.append((x, rows, label, colour))
        x += w
    legend_h = (rows + 1) * LEGEND_ROW + 8 if legend else 0
    footer = 22
    height = TITLE_H + PLOT + PAD + legend_h + footer
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)

    # One frame for both maps (the text map is aligned onto the brain map), equal aspect.
    both = np.concatenate([brain, text])
    both = both[np.isfinite(both).all(axis=1)]
    lo, hi = (both.min(axis=0), both.max(axis=0)) if len(both) else (np.zeros(2), np.ones(2))
    centre, span = (lo + hi) / 2, float(max(hi - lo)) or 1.0
    inner = PLOT - 24
    radius = 4 if n <= 500 else 3 if n <= 2000 else 2

    def to_pixels(xy: np.ndarray, left: int) -> np.ndarray:
        rel = (np.nan_to_num(xy) - centre) / span  # within [-0.5, 0.5]
        px = left + PLOT / 2 + rel[:, 0] * inner
        py = TITLE_H + PLOT / 2 - rel[:, 1] * inner
        return np.stack([px, py], axis=1).round().astype(np.int32)

    lefts = {"brain": PAD, "text": 2 * PAD + PLOT}
    pixels = {"brain": to_pixels(brain, lefts["brain"]), "text": to_pixels(text, lefts["text"])}
    order = np.random.default_rng(0).permutation(n)  # no category systematically on top
    region = data.get("region") or ALL_UNITS
    trust = data.get("trustworthiness") or {}
    embedder = str(data.get("embedder") or "").split("/")[-1]
    titles = {
        "brain": (f"Brain · {region} ({data.get('n_units', 0):,} units)", f"UMAP · trustworthiness {trust.get('brain', float('nan')):.2f}"),
        "text": (
            f"Text (aligned) · {data.get('source', 'reference')} captions · {embedder}",
            f"trustworthiness {trust.get('text', float('nan')):.2f} · shared neighbours "
            f"{100 * data.get('shared_neighbours', 0):.1f}% (chance {100 * data.get('chance', 0):.1f}%)",
        ),
    }
    for name, left in lefts.items():
        draw.rectangle([left, TITLE_H, left + PLOT, TITLE_H + PLOT], outline="#d0d0d0", fill="#fafafa")
        draw.text((left, TOP + 6), titles[name][0], fill="#222222", font=FONT_BOLD)
        draw.text((left, TOP + 25), titles[name][1], fill="#666666", font=FONT_SMALL)
        for i in order:
            x, y = pixels[name][i]
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colours[i])
    top = TITLE_H + PLOT + PAD
    for x, row, label, colour in entries:
        y = top + row * LEGEND_ROW
        draw.ellipse([x, y + 3, x + 10, y + 13], fill=colour)
        draw.text((x + 16, y + 1), label, fill="#333333", font=FONT)
    return image, pixels, colours, names


def placeholder(message: str, width: int = 2 * PLOT + 3 * PAD, height: int = 160) -> Image.Image:
    """A blank panel saying why there is nothing to draw."""
    image = Image.new("RGB", (width, height), "#fafafa")
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, width - 1, height - 1], outline="#d0d0d0")
    y = 20
    for line in _wrap(message, FONT, width - 2 * PAD):
        draw.text((PAD, y), line, fill="#555555", font=FONT)
        y += 20
    return image


def _wrap(text: str, font, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if font.getlength(trial) > width and line:
            lines.append(line)
            line = word
        else:
            line = trial
    return [*lines, line] if line else lines


class ManifoldPanel:
    """Create inside a Blocks context; then :meth:`wire`. :meth:`render` draws the maps for one
    selected stimulus (call it on every stimulus switch: it only copies a cached picture)."""

    def __init__(self, client: BackendClient, label: str = "Manifolds: brain responses and caption embeddings (UMAP)") -> None:
        self.client = client
        self._maps: collections.OrderedDict[tuple, _Maps] = collections.OrderedDict()
        self._lock = threading.Lock()
        with gr.Row():
            self.region = gr.Dropdown(
                [ALL_UNITS], value=ALL_UNITS, label="Brain units of the map", scale=2, elem_id="ctx-manifold-region"
            )
            self.button = gr.Button("Compute manifolds", scale=1, elem_id="ctx-manifold-run")
        self.status = gr.Markdown(elem_id="ctx-manifold-status")
        self.image = gr.Image(
            label=label, type="pil", format="png", interactive=False, show_label=True, elem_id="ctx-manifold"
        )

    # -- data ------------------------------------------------------------------------------------
    def maps(self, dataset_id: str, source: str = "reference", embedder: str | None = None, region: str | None = None) -> _Maps:
        """The fetched maps with their drawn background (cached; BackendError 404 if not computed)."""
        key = (dataset_id, source or "reference", embedder or DEFAULT_EMBEDDER, _region(region))
        with self._lock:
            hit = self._maps.get(key)
            if hit is not None:
                self._maps.move_to_end(key)
                return hit
        data = self.client.manifolds(dataset_id, source=key[1], embedder=key[2], region=key[3])
        background, pixels, colours, labels = draw_background(data)
        found = _Maps(data, background, np.asarray(data["indices"], np.int64), pixels, colours, labels)
        with self._lock:
            self._maps[key] = found
            while len(self._maps) > CACHE_SIZE:
                self._maps.popitem(last=False)
        return found

    def forget(self, dataset_id: str | None = None) -> None:
        """Drop cached maps (of one dataset, or all), e.g. after a job recomputed them."""
        with self._lock:
            for key in [k for k in self._maps if dataset_id is None or k[0] == dataset_id]:
                del self._maps[key]

    # -- drawing ---------------------------------------------------------------------------------
    def render(
        self, dataset_id: str | None, index: int | None, embedder: str | None = None, region: str | None = None, source: str | None = None
    ) -> Image.Image | None:
        """Both maps with stimulus ``index`` ringed and labelled; a placeholder saying what to run
        when the maps are not computed yet; None without a dataset."""
        if not dataset_id:
            return None
        try:
            maps = self.maps(dataset_id, source or "reference", embedder, region)
        except BackendError as err:
            if err.status == 404:
                where = _region(region) or ALL_UNITS
                return placeholder(
                    f"No manifolds yet for {dataset_id} ({where}, {(embedder or DEFAULT_EMBEDDER).split('/')[-1]}): "
                    "press “Compute manifolds” to lay the stimuli out by their brain responses and their captions."
                )
            return placeholder(f"Manifolds unavailable: {err}")
        image = maps.background.copy()
        draw = ImageDraw.Draw(image)
        footer_y = image.height - 20
        if index is None:
            return image
        index = int(index)
        k = int(np.searchsorted(maps.rows, index))
        if k >= len(maps.rows) or maps.rows[k] != index:
            draw.text((PAD, footer_y), f"stimulus #{index} is not among the {len(maps.rows):,} mapped stimuli", fill="#aa3333", font=FONT)
            return image
        categories = maps.data.get("categories")
        category = categories[k] if categories else None
        for name in ("brain", "text"):
            x, y = (int(v) for v in maps.pixels[name][k])
            draw.ellipse([x - 13, y - 13, x + 13, y + 13], outline="white", width=3)
            draw.ellipse([x - 10, y - 10, x + 10, y + 10], fill=maps.colours[k], outline="black", width=3)
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill="black")
            label = f"#{index}"
            lx = x + 14 if x + 14 + FONT_BOLD.getlength(label) < (PAD + PLOT if name == "brain" else image.width - PAD) else x - 14 - int(FONT_BOLD.getlength(label))
            ly = min(max(y - 24, TITLE_H + 2), TITLE_H + PLOT - 18)
            draw.text((lx, ly), label, fill="black", font=FONT_BOLD, stroke_width=3, stroke_fill="white")
        detail = f" · {category}" if category else ""
        group = maps.labels[k] if maps.data.get("groups") else None
        detail += f" ({group})" if group and group != category else ""
        draw.text((PAD, footer_y), f"selected: stimulus #{index}{detail} · ringed in both maps", fill="#222222", font=FONT)
        return image

    # -- events ----------------------------------------------------------------------------------
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
        """Connect the button (job, then draw) and the region choice. ``source``: an optional
        component holding the caption source (default: the reference captions)."""
        extra = [source] if source is not None else []
        inputs = [dataset_state, stimulus_state, embedder_dropdown, self.region, *extra]
        self.button.click(self.compute, inputs, [self.status, self.image])
        self.region.focus(self.region_choices, [dataset_state, self.region], self.region)
        self.region.input(self.render, inputs, self.image, show_progress="hidden")


def _region(region: str | None) -> str | None:
    return None if not region or region == ALL_UNITS else region
