"""What the brain and mouse panels share: one ``gr.HTML`` driven by a canvas script.

Each panel is a ``gr.HTML`` whose template never changes (so the canvas it holds is never
replaced), the panel code (``static/panels.js``) injected once through ``head=``, and two inputs
the code watches: the ``static_data`` prop, sent once per dataset, and ``value``, sent on every
stimulus switch with only per-unit values (base64 float16).
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

# ColorBrewer RdBu (11 classes), reversed: blue = negative, red = positive, white at 0.
_RDBU_R = [
    "#053061", "#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7",
    "#fddbc7", "#f4a582", "#d6604d", "#b2182b", "#67001f",
]


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


def diverging_lut(n: int = 256) -> np.ndarray:
    """uint8 [n, 3]: the RdBu_r colour map sampled at n points from -1 to 1."""
    stops = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in _RDBU_R], float)
    x = np.linspace(0, 1, len(stops))
    t = np.linspace(0, 1, n)
    return np.stack([np.interp(t, x, stops[:, k]) for k in range(3)], axis=1).round().astype(np.uint8)


def html_literal(text: str) -> str:
    """Escape text for gr.HTML's template, which is Handlebars *and* a JS template literal."""
    out = html.escape(str(text))
    for ch, ent in (("`", "&#96;"), ("$", "&#36;"), ("{", "&#123;"), ("}", "&#125;"), ("\\", "&#92;")):
        out = out.replace(ch, ent)
    return out


def _read_static(name: str) -> str:
    return (STATIC_DIR / name).read_text(encoding="utf-8")


def panel_head() -> str:
    """The <head> snippet all panels share. gr.HTML dedupes inline scripts by their text, so the
    code is injected once however many panels (brain or mouse) the page has."""
    return "<script>\n" + _read_static("panels.js") + "\n</script>"


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
) -> dict:
    """The per-switch payload: values float [n_units] (NaN = no data) as base64 float16 and the
    symmetric colour limit. ~55 KB of JSON for 20,484 values."""
    v = np.asarray(values, np.float32).ravel()
    lim = float(vmax) if vmax else symmetric_limit(v)
    return {
        "v": encode_values(v),
        "n": int(v.size),
        "vmax": lim,
        "threshold": float(threshold) if threshold else 0.0,
        "title": str(title),
        "cbar_label": str(cbar_label),
    }


class CanvasPanel:
    """Base of the panels; create a subclass inside a ``gr.Blocks()`` context.

    panel.outputs: [gr.HTML] to list as an event's outputs.
    panel.values_update(values, title) -> gr.update carrying only the values (every switch);
        pass ``static=`` a subclass's ``static_payload(...)`` to send both in one go.
    """

    css_class = ""
    js_mount = ""

    def __init__(self, label: str, elem_classes: list[str] | None = None, **html_kwargs) -> None:
        import gradio as gr

        self.label = label
        self.html = gr.HTML(
            value=None,
            html_template=self._template(label),
            css_template=panel_css(),
            js_on_load=self.js_mount,
            head=panel_head(),
            apply_default_css=False,
            elem_classes=["ctx-panel-host", *(elem_classes or [])],
            **{STATIC_PROP: None},
            **html_kwargs,
        )
        self.outputs = [self.html]

    def _template(self, label: str) -> str:
        # Constant text: gr.HTML re-renders (and DOM-morphs) only when the rendered template
        # changes, so the canvases the script draws into are never replaced.
        return (
            f'<div class="ctx-panel {self.css_class}">'
            f'<div class="ctx-head"><span class="ctx-label">{html_literal(label)}</span>'
            '<span class="ctx-status">waiting for data</span>'
            '<button type="button" class="ctx-png" title="Download this figure as PNG">PNG</button></div>'
            '<div class="ctx-stage"><canvas class="ctx-canvas" width="8" height="8"></canvas>'
            '<div class="ctx-tip" hidden></div></div>'
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
    ) -> dict:
        """gr.update with the per-switch values (float [n_units], NaN = no data).

        static: a ``static_payload(...)`` result to send in the same message (dataset switch).
        vmax: fixed symmetric colour limit (default: 99.5th percentile of |values|);
        threshold: |value| below it shows the background.
        """
        import gradio as gr

        upd = gr.update(value=values_payload(values, title, vmax, threshold, cbar_label))
        if static:
            upd[STATIC_PROP] = static[STATIC_PROP] if STATIC_PROP in static else static
        return upd

    def clear_update(self, message: str = "no data") -> dict:
        """gr.update that blanks the values (keeps the static part)."""
        import gradio as gr

        return gr.update(value={"clear": True, "title": message})
