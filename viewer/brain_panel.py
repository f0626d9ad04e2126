"""Brain panel: a stimulus's response on the inflated cortical surface (both hemispheres).

Once per geometry the server rasterises fixed views (viewer.surface_views) and sends them to the
browser in the component's ``static_data`` prop: per view a triangle-id image, the vertices'
pixel positions and shading, and the region outlines as vector segments; plus the faces, sulcal
depth, region labels and the unit -> vertex map. Each stimulus switch then sends only the
component's ``value``: the per-unit values as base64 float16 (41 KB for 20,484 vertices), and the
browser colours each pixel from its triangle's three vertices on a 2-D canvas (no WebGL).

Gradio mechanism: one ``gr.HTML`` with a static template, the panel code injected once through
``head=`` (shared by every panel on the page) and started by ``js_on_load``; the code ``watch``es
``value`` and ``static_data``. A Python handler returning ``gr.update(value=...)`` sends only the
value; ``gr.update(static_data=...)`` (an HTML "prop" update) sends the geometry.
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

from viewer import surface_views as sv

STATIC_DIR = Path(__file__).parent / "static"
STATIC_PROP = "static_data"  # the gr.HTML prop carrying the once-per-dataset payload

# ColorBrewer RdBu (11 classes), reversed: blue = negative, red = positive, white at 0.
_RDBU_R = [
    "#053061", "#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7",
    "#fddbc7", "#f4a582", "#d6604d", "#b2182b", "#67001f",
]


# ----------------------------------------------------------------------------- encoding helpers


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


def _hash_arrays(*arrays) -> str:
    h = hashlib.blake2b(digest_size=12)
    for a in arrays:
        if a is None:
            h.update(b"<none>")
            continue
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- static payload

_CACHE_LOCK = threading.Lock()
_RASTER_CACHE: OrderedDict = OrderedDict()  # (geometry hash, views, px_per_mm) -> rendered parts
_PAYLOAD_CACHE: OrderedDict = OrderedDict()  # + unit space hash -> payload dict
_CACHE_SIZE = 6


def _cache_get(cache: OrderedDict, key):
    with _CACHE_LOCK:
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
    return None


def _cache_put(cache: OrderedDict, key, value):
    with _CACHE_LOCK:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)


def sulc_grey(sulc: np.ndarray | None, n: int) -> np.ndarray:
    """Per-vertex background grey, uint8 [n]: light gyri, darker sulci (FreeSurfer sulc > 0 = deep)."""
    if sulc is None:
        return np.full(n, 190, np.uint8)
    s = np.nan_to_num(np.asarray(sulc, np.float32))
    g = 0.70 - 0.13 * np.tanh(3.0 * s)  # soft step: 0.83 on gyri, 0.57 in sulci
    return np.clip(g * 255, 0, 255).round().astype(np.uint8)


def _layout(shapes: dict[tuple[str, str], tuple[int, int]], views, gap: int, top: int, bottom: int):
    """Grid: columns lh, rh; rows = views. Returns ({(hemi, view): (x, y)}, width, height)."""
    col_w = [max(shapes[(h, v)][1] for v in views) for h in sv.HEMIS]
    row_h = [max(shapes[(h, v)][0] for h in sv.HEMIS) for v in views]
    pos = {}
    y = top
    for r, v in enumerate(views):
        x = 0
        for c, h in enumerate(sv.HEMIS):
            hh, ww = shapes[(h, v)]
            # lh hugs the midline from the left, rh from the right: hemispheres sit close together.
            ox = x + (col_w[c] - ww if c == 0 else 0)
            pos[(h, v)] = (ox, y + (row_h[r] - hh) // 2)
            x += col_w[c] + gap
        y += row_h[r] + gap
    width = sum(col_w) + gap
    return pos, width, y - gap + bottom


def _render_geometry(geometry: dict, views: tuple[str, ...], px_per_mm: float) -> dict:
    """Rasterise every (hemi, view) once and pack the geometry-only part of the payload."""
    key = (_hash_arrays(*(geometry[h][k] for h in sv.HEMIS for k in ("coords", "faces"))), views, px_per_mm)
    hit = _cache_get(_RASTER_CACHE, key)
    if hit is not None:
        return hit
    rendered, shapes = {}, {}
    for h in sv.HEMIS:
        coords = np.asarray(geometry[h]["coords"], np.float64)
        faces = np.asarray(geometry[h]["faces"], np.int64)
        for v in views:
            r = sv.render_view(coords, faces, h, v, px_per_mm=px_per_mm)
            rendered[(h, v)] = r
            shapes[(h, v)] = r.shape
    gap = int(round(4 * px_per_mm))
    pos, width, height = _layout(shapes, views, gap, top=int(16 * px_per_mm), bottom=int(26 * px_per_mm))
    n_lh = len(geometry["lh"]["coords"])
    out = {"rendered": rendered, "pos": pos, "width": width, "height": height, "n_lh": n_lh, "key": key}
    _cache_put(_RASTER_CACHE, key, out)
    return out


def build_static_payload(
    geometry: dict,
    vertices: np.ndarray | None,
    roi_labels: np.ndarray,
    roi_names,
    views: tuple[str, ...] = ("lateral", "medial"),
    px_per_mm: float = 2.5,
) -> dict:
    """Everything the browser needs once for one (mesh, unit space); JSON-able, memoised.

    geometry {"lh"/"rh": {"coords" float32 [n_h, 3] mm, "faces" int32 [m_h, 3], "sulc" float32 [n_h]}};
    vertices int64 [n_units] into the concatenated lh+rh vertices, or None for all of them;
    roi_labels int16 [n_units] (0 = none); roi_names list[str] indexed by label.
    Binary fields are base64 (``*_z``: zlib-deflated). Pixel coordinates are uint16 in 1/16 px.
    """
    views = tuple(views)
    geo = _render_geometry(geometry, views, float(px_per_mm))
    n_lh = geo["n_lh"]
    n_total = n_lh + len(geometry["rh"]["coords"])
    roi_labels = np.asarray(roi_labels)
    key = (geo["key"], _hash_arrays(None if vertices is None else np.asarray(vertices, np.int64), roi_labels), tuple(roi_names))
    hit = _cache_get(_PAYLOAD_CACHE, key)
    if hit is not None:
        return hit

    if vertices is None:
        vertices = np.arange(n_total, dtype=np.int64)
    vertices = np.asarray(vertices, np.int64)
    if len(vertices) != len(roi_labels):
        raise ValueError(f"{len(vertices)} vertices but {len(roi_labels)} roi labels")
    if vertices.size and (vertices.min() < 0 or vertices.max() >= n_total):
        raise ValueError(f"vertex indices must lie in 0..{n_total - 1}")
    unit_of_vertex = np.full(n_total, -1, np.int32)
    unit_of_vertex[vertices] = np.arange(len(vertices), dtype=np.int32)
    vertex_label = np.zeros(n_total, np.int16)
    vertex_label[vertices] = roi_labels.astype(np.int16)

    hemi_offset = {"lh": 0, "rh": n_lh}
    faces_out, view_out = {}, []
    for h in sv.HEMIS:
        faces = np.asarray(geometry[h]["faces"], np.int64)
        fdt = "<u2" if faces.max() < 65535 else "<u4"
        faces_out[h] = {"faces_z": b64(faces.astype(fdt), True), "dtype": fdt[1:], "n_vertices": int(len(geometry[h]["coords"]))}
        labels_h = vertex_label[hemi_offset[h] : hemi_offset[h] + len(geometry[h]["coords"])]
        segs3d = sv.smooth_outlines(geometry[h]["coords"], faces, labels_h)
        for v in views:
            r = geo["rendered"][(h, v)]
            hgt, wid = r.shape
            fid_dt = "<u2" if len(faces) < 65535 else "<u4"
            empty = np.iinfo(fid_dt).max
            fid = np.where(r.face_id >= 0, r.face_id, empty).astype(fid_dt)
            segs = sv.segments_to_pixels(segs3d, r)
            x, y = geo["pos"][(h, v)]
            view_out.append({
                "hemi": h, "view": v, "x": int(x), "y": int(y), "w": int(wid), "h": int(hgt),
                "face_id_z": b64(fid, True), "face_dtype": fid_dt[1:],
                # 1/16 px fixed point: exact enough for barycentrics, half the bytes of float32
                "vxy_z": b64(np.clip(np.round(r.vertex_xy * 16), 0, 65535).astype("<u2"), True),
                "shade_z": b64(np.round(r.shade * 255).astype(np.uint8), True),
                "segs_z": b64(np.clip(np.round(segs * 16), 0, 65535).astype("<u2"), True),
            })

    sulc = np.concatenate([
        sulc_grey(geometry[h].get("sulc"), len(geometry[h]["coords"])) for h in sv.HEMIS
    ])
    payload = {
        "kind": "surface",
        "sid": hashlib.blake2b(repr(key).encode(), digest_size=8).hexdigest(),
        "width": int(geo["width"]),
        "height": int(geo["height"]),
        "px_per_mm": float(px_per_mm),
        "n_lh": int(n_lh),
        "n_total": int(n_total),
        "n_units": int(len(vertices)),
        "hemis": faces_out,
        "views": view_out,
        "sulc_z": b64(sulc, True),
        "labels_z": b64(vertex_label.astype("<i2"), True),
        "unit_of_vertex_z": b64(unit_of_vertex.astype("<i4"), True),
        "roi_names": [str(n) for n in roi_names],
        "lut": b64(diverging_lut()),
    }
    _cache_put(_PAYLOAD_CACHE, key, payload)
    return payload


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


# ----------------------------------------------------------------------------- the component


class BrainPanel:
    """Cortical-surface panel; create inside a ``gr.Blocks()`` context.

    panel.outputs: [gr.HTML] to list as an event's outputs.
    panel.static_payload(geometry, vertices, roi_labels, roi_names) -> gr.update carrying the
        geometry (send once per dataset / unit space).
    panel.values_update(values, title) -> gr.update carrying only the values (every switch);
        pass ``static=panel.static_payload(...)`` to send both in one go on a dataset switch.
    """

    js_mount = "CortextualPanels.mountBrain(element, props, watch);"

    def __init__(
        self,
        label: str = "Brain response",
        views: tuple[str, ...] = ("lateral", "medial"),
        px_per_mm: float = 2.5,
        elem_classes: list[str] | None = None,
        **html_kwargs,
    ):
        import gradio as gr

        self.label = label
        self.views = tuple(views)
        self.px_per_mm = float(px_per_mm)
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

    @staticmethod
    def _template(label: str) -> str:
        # Constant text: gr.HTML re-renders (and DOM-morphs) only when the rendered template
        # changes, so the canvases the script draws into are never replaced.
        return (
            '<div class="ctx-panel ctx-brain">'
            f'<div class="ctx-head"><span class="ctx-label">{html_literal(label)}</span>'
            '<span class="ctx-status">waiting for data</span>'
            '<button type="button" class="ctx-png" title="Download this figure as PNG">PNG</button></div>'
            '<div class="ctx-stage"><canvas class="ctx-canvas" width="8" height="8"></canvas>'
            '<div class="ctx-tip" hidden></div></div>'
            "</div>"
        )

    def static_payload(self, geometry, vertices, roi_labels, roi_names) -> dict:
        """gr.update setting the panel's geometry; memoised per (geometry, unit space)."""
        import gradio as gr

        payload = build_static_payload(geometry, vertices, roi_labels, roi_names, self.views, self.px_per_mm)
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
        """gr.update that blanks the values (keeps the geometry)."""
        import gradio as gr

        return gr.update(value={"clear": True, "title": message})
