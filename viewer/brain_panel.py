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

import hashlib

import numpy as np

from viewer import surface_views as sv
from viewer.canvas_panel import CanvasPanel, MemoCache, b64, diverging_lut, hash_arrays

_RASTER_CACHE = MemoCache()  # (geometry hash, views, px_per_mm) -> rendered views
_PAYLOAD_CACHE = MemoCache()  # + unit space hash -> payload dict


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
    key = (hash_arrays(*(geometry[h][k] for h in sv.HEMIS for k in ("coords", "faces"))), views, px_per_mm)
    hit = _RASTER_CACHE.get(key)
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
    _RASTER_CACHE.put(key, out)
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
    key = (geo["key"], hash_arrays(None if vertices is None else np.asarray(vertices, np.int64), roi_labels), tuple(roi_names))
    hit = _PAYLOAD_CACHE.get(key)
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
    _PAYLOAD_CACHE.put(key, payload)
    return payload


# ----------------------------------------------------------------------------- the component


class BrainPanel(CanvasPanel):
    """Cortical-surface panel; create inside a ``gr.Blocks()`` context.

    panel.static_payload(geometry, vertices, roi_labels, roi_names) -> gr.update carrying the
        geometry (send once per dataset / unit space); the rest as in :class:`CanvasPanel`.
    """

    css_class = "ctx-brain"
    js_mount = "CortextualPanels.mountBrain(element, props, watch);"

    def __init__(
        self,
        label: str = "Brain response",
        views: tuple[str, ...] = ("lateral", "medial"),
        px_per_mm: float = 2.5,
        elem_classes: list[str] | None = None,
        **html_kwargs,
    ):
        self.views = tuple(views)
        self.px_per_mm = float(px_per_mm)
        super().__init__(label, elem_classes, **html_kwargs)

    def static_payload(self, geometry, vertices, roi_labels, roi_names) -> dict:
        """gr.update setting the panel's geometry; memoised per (geometry, unit space)."""
        return self._static_update(build_static_payload(geometry, vertices, roi_labels, roi_names, self.views, self.px_per_mm))
