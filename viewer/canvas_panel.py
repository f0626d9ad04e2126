"""What the brain and mouse panels share: one ``gr.HTML`` driven by the panel script, and the colour scale.

Each panel is a ``gr.HTML`` whose template never changes (so the canvas it holds is never
replaced), the panel code (``static/panels.js``) injected once through ``head=`` after the vendored
three.js (``static/vendor/three.min.js``, served as a static file, not inlined), and two inputs the
code watches: the ``static_data`` prop, sent once per dataset, and ``value``, sent on every stimulus
switch with only per-unit values (base64 float16) plus the suggested colour limits.

Colour is the user's, in the browser: colormap, symmetric (diverging, centred on 0) or sequential
(from 0 up), vmin/vmax, threshold (below it the surface shows through, as nilearn's ``threshold``)
and "lock scale" across switches. The colour maps are matplotlib's, sampled here once
(:func:`colormap_luts`) so the browser and the exported figure use the same colours.
"""

from __future__ import annotations

import base64
import hashlib
import html
import threading
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np

STATIC_DIR = Path(__file__).parent / "static"
STATIC_PROP = "static_data"  # the gr.HTML prop carrying the once-per-dataset payload
VENDOR_DIR = STATIC_DIR / "vendor"  # third-party browser code, served as static files

#: Colour maps offered in the panels (matplotlib names); the first of each kind is its default.
SYMMETRIC_CMAPS = ("RdBu_r", "coolwarm", "PuOr_r", "seismic")
SEQUENTIAL_CMAPS = ("viridis", "inferno", "magma", "hot", "cividis", "Greys")
SCALES = ("symmetric", "sequential")


def b64(array: np.ndarray, compress: bool = False) -> str:
    """Little-endian bytes of a numpy array as base64 (zlib-deflated first when compress)."""
    arr = np.ascontiguousarray(array)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    raw = arr.tobytes()
    return base64.b64encode(zlib.compress(raw, 6) if compress else raw).decode("ascii")


def unb64(text: str, dtype, compressed: bool = False) -> np.ndarray:
    """Inverse of :func:`b64` (dtype as numpy understands it, little-endian)."""
    raw = base64.b64decode(text)
    return np.frombuffer(zlib.decompress(raw) if compressed else raw, dtype=np.dtype(dtype).newbyteorder("<"))


def encode_values(values: np.ndarray) -> str:
    """float [n] -> base64 of little-endian float16 (NaN kept; |x| > 65504 saturates)."""
    v = np.asarray(values, np.float32).ravel()
    with np.errstate(over="ignore"):
        h = np.clip(v, -65504, 65504).astype("<f2")
    return base64.b64encode(h.tobytes()).decode("ascii")


def decode_values(text: str) -> np.ndarray:
    """Inverse of :func:`encode_values`: float32 [n]."""
    return np.frombuffer(base64.b64decode(text), "<f2").astype(np.float32)


def symmetric_limit(values: np.ndarray, percentile: float = 99.5) -> float:
    """Colour limit for a diverging map: a high percentile of |values| (ignores NaN, > 0).

    A percentile rather than the maximum keeps one outlier from washing out the map; the colour
    bar says the ends saturate.
    """
    a = np.abs(np.asarray(values, np.float32))
    a = a[np.isfinite(a)]
    if a.size == 0:
        return 1.0
    lim = float(np.percentile(a, percentile)) if a.size > 20 else float(a.max())
    return lim if lim > 0 else (float(a.max()) or 1.0)


def colormap_luts(n: int = 256) -> dict[str, str]:
    """{matplotlib colormap name: base64 of uint8 [n, 3] RGB}, for every map the panels offer."""
    return _LUTS_CACHE.setdefault(n, {name: b64(colormap_lut(name, n)) for name in (*SYMMETRIC_CMAPS, *SEQUENTIAL_CMAPS)})


_LUTS_CACHE: dict[int, dict[str, str]] = {}


def colormap_lut(name: str, n: int = 256) -> np.ndarray:
    """uint8 [n, 3]: matplotlib's colour map ``name`` sampled at n points from its low to its high end."""
    from matplotlib import colormaps

    if name not in colormaps:
        raise ValueError(f"unknown colour map {name!r}")
    return (colormaps[name](np.linspace(0.0, 1.0, n))[:, :3] * 255).round().astype(np.uint8)


def sulc_grey(sulc: np.ndarray | None, n: int) -> np.ndarray:
    """Per-vertex background grey, uint8 [n]: light gyri, darker sulci (FreeSurfer sulc > 0 = deep)."""
    if sulc is None:
        return np.full(n, 190, np.uint8)
    s = np.nan_to_num(np.asarray(sulc, np.float32))
    g = 0.70 - 0.13 * np.tanh(3.0 * s)  # soft step: 0.83 on gyri, 0.57 in sulci
    return np.clip(g * 255, 0, 255).round().astype(np.uint8)


def colour_limits(values: np.ndarray, scale: str, vmax: float | None = None) -> tuple[float, float]:
    """(vmin, vmax) a panel starts from: symmetric -> (-L, L) with L the 99.5th percentile of |v|;
    sequential -> (0, 99.5th percentile of v). ``vmax`` fixes the upper end (and -vmax the lower)."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, not {scale!r}")
    if scale == "symmetric":
        lim = float(vmax) if vmax else symmetric_limit(values)
        return -lim, lim
    v = np.asarray(values, np.float32)
    v = v[np.isfinite(v)]
    if vmax:
        hi = float(vmax)
    elif v.size:
        hi = float(np.percentile(v, 99.5)) if v.size > 20 else float(v.max())
    else:
        hi = 1.0
    return 0.0, hi if hi > 0 else 1.0


def html_literal(text: str) -> str:
    """Escape text for gr.HTML's template, which is Handlebars *and* a JS template literal."""
    out = html.escape(str(text))
    for ch, ent in (("`", "&#96;"), ("$", "&#36;"), ("{", "&#123;"), ("}", "&#125;"), ("\\", "&#92;")):
        out = out.replace(ch, ent)
    return out


def _read_static(name: str) -> str:
    return (STATIC_DIR / name).read_text(encoding="utf-8")


def panel_head() -> str:
    """The <head> snippet all panels share: three.js as a static file (deduplicated by src) and the
    panel code inline (deduplicated by its text), so each is loaded once however many panels
    (brain or mouse) the page has."""
    return f'<script src="{vendor_url("three.min.js")}"></script>\n<script>\n' + _read_static("panels.js") + "\n</script>"


def panel_css() -> str:
    return _read_static("panels.css")


def hash_arrays(*arrays) -> str:
    h = hashlib.blake2b(digest_size=12)
    for a in arrays:
        if a is None:
            h.update(b"<none>")
            continue
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()




class MemoCache:
    """A small thread-safe LRU for payloads that are costly to build and sent once per dataset."""

    def __init__(self, size: int = 6) -> None:
        self._items: OrderedDict = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        return None

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


def values_payload(
    values: np.ndarray,
    title: str = "",
    vmax: float | None = None,
    threshold: float | None = None,
    cbar_label: str = "",
    scale: str | None = None,
) -> dict:
    """The per-switch payload: values float [n_units] (NaN = no data) as base64 float16, the colour
    scale hint and the limits the browser starts from unless the user locked them. ~55 KB of JSON
    for 20,484 values.

    scale: "symmetric" (diverging around 0) or "sequential" (0 up: r, r^2, fraction of ceiling);
    None picks sequential when no value is negative. vmax: fixed upper limit (default: the 99.5th
    percentile of |v| or v). threshold: values below it (|v| when symmetric) show the surface.
    """
    v = np.asarray(values, np.float32).ravel()
    if scale is None:
        finite = v[np.isfinite(v)]
        scale = "sequential" if finite.size and finite.min() >= 0 else "symmetric"
    lo, hi = colour_limits(v, scale, vmax)
    return {
        "v": encode_values(v),
        "n": int(v.size),
        "scale": scale,
        "vmin": lo,
        "vmax": hi,
        "threshold": float(threshold) if threshold else None,
        "title": str(title),
        "cbar_label": str(cbar_label),
    }


_STATIC_SERVED: list = []


def vendor_url(name: str) -> str:
    """URL of a vendored file under Gradio's static-file route (see gr.set_static_paths)."""
    return "/gradio_api/file=" + str((VENDOR_DIR / name).resolve())


class CanvasPanel:
    """Base of the panels; create a subclass inside a ``gr.Blocks()`` context.

    panel.outputs: [gr.HTML] to list as an event's outputs.
    panel.values_update(values, title) -> gr.update carrying only the values (every switch);
        pass ``static=`` a subclass's ``static_payload(...)`` to send both in one go.

    In the browser, after each repaint with new values the panel's root element (the one with
    the panel's ``elem_id``) gets ``data-paints`` incremented and ``data-title`` set to the title.
    """

    css_class = ""
    js_mount = ""
    #: extra controls (HTML) a subclass puts in the toolbar, and the stage's inner HTML
    extra_controls = ""
    stage_html = '<canvas class="ctx-canvas" width="8" height="8"></canvas>'
    server_functions: tuple = ()

    def __init__(self, label: str, elem_classes: list[str] | None = None, **html_kwargs) -> None:
        import gradio as gr

        if not _STATIC_SERVED:  # once per process: Gradio keeps a list and would grow it per panel
            gr.set_static_paths([VENDOR_DIR])
            _STATIC_SERVED.append(VENDOR_DIR)
        self.label = label
        extra = {"server_functions": list(self.server_functions)} if self.server_functions else {}
        self.html = gr.HTML(
            value=None,
            html_template=self._template(label),
            css_template=panel_css(),
            js_on_load=self.js_mount,
            head=panel_head(),
            apply_default_css=False,
            elem_classes=["ctx-panel-host", *(elem_classes or [])],
            **{STATIC_PROP: None},
            **extra,
            **html_kwargs,
        )
        self.outputs = [self.html]

    def _template(self, label: str) -> str:
        # Constant text: gr.HTML re-renders (and DOM-morphs) only when the rendered template
        # changes, so the canvases the script draws into are never replaced. Options of the
        # colour-map menu are filled in by the script from the static payload.
        scales = "".join(f'<option value="{s}">{s}</option>' for s in ("auto", *SCALES))
        return (
            f'<div class="ctx-panel {self.css_class}">'
            f'<div class="ctx-head"><span class="ctx-label">{html_literal(label)}</span>'
            '<span class="ctx-status">waiting for data</span>'
            '<button type="button" class="ctx-png" title="Download what the panel shows as PNG">PNG</button></div>'
            '<div class="ctx-controls">'
            '<label title="Colour map">map <select class="ctx-cmap"><option value="auto">auto</option></select></label>'
            f'<label title="Symmetric: diverging around 0; sequential: from 0 up">scale <select class="ctx-scale">{scales}</select></label>'
            '<label>min <input class="ctx-vmin" type="number" step="any"></label>'
            '<label>max <input class="ctx-vmax" type="number" step="any"></label>'
            '<label title="Values below it (|value| when symmetric) are not coloured">threshold '
            '<input class="ctx-thr" type="number" step="any" min="0" placeholder="none"></label>'
            '<label title="Keep these limits when the stimulus changes"><input class="ctx-lock" type="checkbox"> lock scale</label>'
            f"{self.extra_controls}"
            "</div>"
            f'<div class="ctx-stage">{self.stage_html}'
            '<div class="ctx-title"></div><div class="ctx-tip" hidden></div></div>'
            '<div class="ctx-foot"><canvas class="ctx-cbar" width="360" height="44"></canvas>'
            '<span class="ctx-readout"></span></div>'
            "</div>"
        )

    @staticmethod
    def _static_update(payload: dict) -> dict:
        import gradio as gr

        return gr.update(**{STATIC_PROP: payload})

    def values_update(
        self,
        values: np.ndarray,
        title: str = "",
        *,
        static: dict | None = None,
        vmax: float | None = None,
        threshold: float | None = None,
        cbar_label: str = "",
        scale: str | None = None,
    ) -> dict:
        """gr.update with the per-switch values (float [n_units], NaN = no data).

        static: a ``static_payload(...)`` result to send in the same message (dataset switch).
        vmax: fixed upper colour limit (default: 99.5th percentile of |values|, or of values when
        sequential); threshold: values below it show the background; cbar_label: the colour bar's
        units; scale: "symmetric" or "sequential" (default: sequential when nothing is negative).
        The user's colour controls in the browser override all of these.
        """
        import gradio as gr

        upd = gr.update(value=values_payload(values, title, vmax, threshold, cbar_label, scale))
        if static:
            upd[STATIC_PROP] = static[STATIC_PROP] if STATIC_PROP in static else static
        return upd

    def clear_update(self, message: str = "no data") -> dict:
        """gr.update that blanks the values (keeps the static part)."""
        import gradio as gr

        return gr.update(value={"clear": True, "title": message})
