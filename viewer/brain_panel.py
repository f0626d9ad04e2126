"""Brain panel: a stimulus's response on an interactive WebGL cortex (both hemispheres, one canvas).

Once per (dataset, unit space) the server sends the browser, in the component's ``static_data``
prop, the fsaverage5 meshes (inflated, pial, white, flat: vertex positions as float16, faces as
uint16, all deflated), the sulcal grey, the region labels with their outlines (as pairs of mesh
edges, so they follow whichever mesh is shown) and name anchors, the unit -> vertex map and the
colour maps. Each stimulus switch then sends only the component's ``value``: per-unit values as
base64 float16 (41 KB for 20,484 vertices) and suggested colour limits. The browser
(``static/panels.js``, three.js) rotates, zooms and pans the cortex, switches mesh and preset view,
colours it with the user's colour scale and reports vertex, region and value under the pointer,
all without a round trip.

"Export figure" calls :func:`export_figure` (a ``gr.HTML`` server function): a print-resolution
PNG rendered off-screen with pyvista (``viewer.figure_export``) with the browser's colour scale.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import time

import numpy as np

from viewer.canvas_panel import CanvasPanel, MemoCache, b64, colormap_luts, decode_values, hash_arrays, sulc_grey

HEMIS = ("lh", "rh")
#: Mesh kinds offered, in menu order (backend names); the first is shown first.
MESH_KINDS = ("inflated", "pial", "white_matter", "flat")
MESH_LABELS = {"inflated": "inflated", "pial": "pial", "white_matter": "white", "flat": "flat"}
PRESETS = ("lateral", "medial", "ventral", "dorsal", "posterior")

_PAYLOAD_CACHE = MemoCache()  # (geometry hash, unit space hash) -> payload dict
_EXPORT_SOURCES = MemoCache(size=12)  # payload sid -> what a figure export needs


def outline_edges(faces: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Region outlines through the mesh, int32 [k, 4]: each row (p, q, r, s) is a segment from the
    midpoint of edge (p, q) to the midpoint of edge (r, s), crossing a triangle whose corners carry
    different labels. Given by vertex ids, the outlines follow any mesh with these faces.

    faces int [m, 3]; labels int [n] (per vertex, 0 = no region, which is outlined too).
    """
    f = np.asarray(faces, np.int64)
    la, lb, lc = (np.asarray(labels)[f[:, k]] for k in range(3))
    a, b, c = f[:, 0], f[:, 1], f[:, 2]
    out = []
    # two corners agree: the segment joins the two edges that leave the odd corner
    for keep, (p, q, odd) in (((la == lb) & (lb != lc), (a, b, c)), ((lb == lc) & (lc != la), (b, c, a)), ((la == lc) & (lc != lb), (a, c, b))):
        out.append(np.stack([p[keep], odd[keep], q[keep], odd[keep]], axis=1))
    # three labels: two segments from the middle of edge (a, b), bounding a's and b's regions
    three = (la != lb) & (lb != lc) & (la != lc)
    out.append(np.stack([a[three], b[three], a[three], c[three]], axis=1))
    out.append(np.stack([a[three], b[three], b[three], c[three]], axis=1))
    return np.concatenate(out).astype(np.int32)


def region_anchors(coords: np.ndarray, labels: np.ndarray) -> list[tuple[int, int]]:
    """[(label, vertex)]: for each region (label > 0) the vertex of that region nearest its
    centroid, where the browser writes the region's name. coords float [n, 3]; labels int [n]."""
    out = []
    for lab in np.unique(labels):
        if lab <= 0:
            continue
        idx = np.flatnonzero(labels == lab)
        centre = coords[idx].mean(axis=0)
        out.append((int(lab), int(idx[np.argmin(((coords[idx] - centre) ** 2).sum(axis=1))])))
    return out


def _as_kinds(geometry: dict) -> dict:
    """{kind: {"lh"/"rh": {...}}} from either that or a single mesh {"lh"/"rh": {...}} (inflated)."""
    if set(geometry) >= set(HEMIS):
        return {"inflated": geometry}
    unknown = set(geometry) - set(MESH_KINDS)
    if unknown or not geometry:
        raise ValueError(f"geometry kinds must be among {MESH_KINDS}, got {sorted(geometry)}")
    return {k: geometry[k] for k in MESH_KINDS if k in geometry}


def build_static_payload(geometry: dict, vertices: np.ndarray | None, roi_labels: np.ndarray, roi_names) -> dict:
    """Everything the browser needs once for one (meshes, unit space); JSON-able, memoised.

    geometry: {kind: {"lh"/"rh": {"coords" float32 [n_h, 3] mm, "faces" int32 [m_h, 3],
    "sulc" float32 [n_h]}}} for kinds among MESH_KINDS (or one such {"lh", "rh"} mesh, taken as
    inflated); every kind has the same vertices. vertices int64 [n_units] into the concatenated
    lh+rh vertices, or None for all of them; roi_labels int16 [n_units] (0 = none); roi_names
    list[str] indexed by label. Binary fields are base64 (``*_z``: zlib-deflated).
    """
    kinds = _as_kinds(geometry)
    first = kinds[next(iter(kinds))]
    n_lh = len(first["lh"]["coords"])
    n_total = n_lh + len(first["rh"]["coords"])
    roi_labels = np.asarray(roi_labels)
    geo_key = hash_arrays(*(np.asarray(kinds[k][h][f]) for k in kinds for h in HEMIS for f in ("coords", "faces")))
    key = (geo_key, tuple(kinds), hash_arrays(None if vertices is None else np.asarray(vertices, np.int64), roi_labels), tuple(roi_names))
    hit = _PAYLOAD_CACHE.get(key)
    if hit is not None:
        return hit

    vertices = np.arange(n_total, dtype=np.int64) if vertices is None else np.asarray(vertices, np.int64)
    if len(vertices) != len(roi_labels):
        raise ValueError(f"{len(vertices)} vertices but {len(roi_labels)} roi labels")
    if vertices.size and (vertices.min() < 0 or vertices.max() >= n_total):
        raise ValueError(f"vertex indices must lie in 0..{n_total - 1}")
    for k, g in kinds.items():
        if len(g["lh"]["coords"]) != n_lh or len(g["lh"]["coords"]) + len(g["rh"]["coords"]) != n_total:
            raise ValueError(f"mesh {k!r} has other vertices than {next(iter(kinds))!r}")
    unit_of_vertex = np.full(n_total, -1, np.int32)
    unit_of_vertex[vertices] = np.arange(len(vertices), dtype=np.int32)
    vertex_label = np.zeros(n_total, np.int16)
    vertex_label[vertices] = roi_labels.astype(np.int16)
    offset = {"lh": 0, "rh": n_lh}

    face_sets: list[dict] = []  # meshes sharing faces (inflated, pial, white) share one entry
    face_index: dict[tuple, int] = {}
    meshes = []
    for kind, g in kinds.items():
        entry = {"kind": kind, "label": MESH_LABELS[kind], "hemis": {}}
        for h in HEMIS:
            coords = np.asarray(g[h]["coords"], np.float32).copy()
            if kind == "flat":
                coords[:, 2] = 0.0  # the flat patch lies in x-y; drop its residual depth
            faces = np.asarray(g[h]["faces"], np.int64)
            fkey = (h, hash_arrays(faces))  # per hemisphere: the outlines follow that hemisphere's labels
            if fkey not in face_index:
                labels_h = vertex_label[offset[h] : offset[h] + len(coords)]
                face_index[fkey] = len(face_sets)
                fdt = "<u2" if faces.max() < 65535 else "<u4"
                face_sets.append({
                    "faces_z": b64(faces.astype(fdt), True),
                    "outlines_z": b64(outline_edges(faces, labels_h).astype(fdt), True),
                    "dtype": fdt[1:],
                })
            # float16 positions: 0.06-0.12 mm steps over +-256 mm, finer than the display needs
            entry["hemis"][h] = {"pos_z": b64(coords.astype("<f2"), True), "faces": face_index[fkey]}
        meshes.append(entry)

    ref = kinds.get("inflated", first)
    anchors = [
        {"hemi": h, "label": lab, "vertex": v}
        for h in HEMIS
        for lab, v in region_anchors(np.asarray(ref[h]["coords"], np.float32), vertex_label[offset[h] : offset[h] + len(ref[h]["coords"])])
    ]
    sulc = np.concatenate([sulc_grey(ref[h].get("sulc"), len(ref[h]["coords"])) for h in HEMIS])
    payload = {
        "kind": "surface",
        "sid": hashlib.blake2b(repr(key).encode(), digest_size=8).hexdigest(),
        "n_lh": int(n_lh),
        "n_total": int(n_total),
        "n_units": int(len(vertices)),
        "meshes": meshes,
        "face_sets": face_sets,
        "presets": list(PRESETS),
        "sulc_z": b64(sulc, True),
        "labels_z": b64(vertex_label.astype("<i2"), True),
        "unit_of_vertex_z": b64(unit_of_vertex.astype("<i4"), True),
        "roi_names": [str(n) for n in roi_names],
        "anchors": anchors,
        "luts": colormap_luts(),
    }
    _PAYLOAD_CACHE.put(key, payload)
    _EXPORT_SOURCES.put(payload["sid"], {"kinds": kinds, "vertices": vertices, "n_total": n_total})
    return payload


def export_figure(request: dict) -> dict:
    """Server function behind "Export figure": {"png": base64 PNG, "ms", "width", "height"} or
    {"error": one line}. (Gradio passes a server function's one JS argument as one value.)

    request: {"sid": the static payload the browser shows, "values": the shown per-unit values
    (base64 float16, as sent), "settings": {"mesh", "cmap", "scale", "vmin", "vmax", "threshold",
    "title", "units", "transparent"} from the browser's controls}.
    """
    from viewer.figure_export import render_figure

    if not isinstance(request, dict) or not isinstance(request.get("settings"), dict):
        return {"error": "cannot export: expected {sid, values, settings}"}
    sid, values_b64, settings = request.get("sid"), request.get("values"), request["settings"]
    source = _EXPORT_SOURCES.get(str(sid))
    if source is None:
        return {"error": "this surface is no longer held by the viewer; reselect the dataset and export again"}
    try:
        units = decode_values(values_b64 or "")
        if len(units) != len(source["vertices"]):
            return {"error": f"{len(units)} values for {len(source['vertices'])} units"}
        per_vertex = np.full(source["n_total"], np.nan, np.float32)
        per_vertex[source["vertices"]] = units
        kind = settings.get("mesh") if settings.get("mesh") in source["kinds"] else next(iter(source["kinds"]))
        t0 = time.perf_counter()
        png = render_figure(
            source["kinds"][kind], per_vertex,
            cmap=str(settings.get("cmap") or "RdBu_r"), scale=str(settings.get("scale") or "symmetric"),
            vmin=float(settings["vmin"]), vmax=float(settings["vmax"]),
            threshold=float(settings["threshold"]) if settings.get("threshold") not in (None, "") else None,
            title=str(settings.get("title") or ""), units=str(settings.get("units") or ""),
            transparent=bool(settings.get("transparent")), flat=kind == "flat",
        )
        ms = 1000 * (time.perf_counter() - t0)
    except (KeyError, TypeError, ValueError, binascii.Error) as err:
        return {"error": f"cannot export: {err}"}
    from PIL import Image

    width, height = Image.open(io.BytesIO(png)).size
    return {"png": base64.b64encode(png).decode("ascii"), "ms": round(ms), "width": width, "height": height}


# ----------------------------------------------------------------------------- the component


class BrainPanel(CanvasPanel):
    """Cortical-surface panel; create inside a ``gr.Blocks()`` context.

    panel.static_payload(geometry, vertices, roi_labels, roi_names) -> gr.update carrying the
        meshes (send once per dataset / unit space); the rest as in :class:`CanvasPanel`.
    ``views`` and ``px_per_mm`` are accepted for compatibility and ignored: the preset views are
    buttons in the panel.
    """

    css_class = "ctx-brain"
    js_mount = "CortextualPanels.mountBrain(element, props, watch, typeof server === 'undefined' ? null : server);"
    stage_html = (
        '<canvas class="ctx-canvas ctx-gl" width="8" height="8"></canvas><div class="ctx-names"></div>'
    )
    extra_controls = (
        '<label>mesh <select class="ctx-mesh"></select></label>'
        '<label title="Region outlines and names"><input class="ctx-outlines" type="checkbox" checked> regions</label>'
        '<span class="ctx-views">'
        + "".join(f'<button type="button" class="ctx-view" data-view="{p}">{p}</button>' for p in PRESETS)
        + "</span>"
        '<button type="button" class="ctx-export" title="Publication PNG (2400 px and wider) rendered on the server">Export figure</button>'
        '<label title="Transparent background in the exported figure"><input class="ctx-transparent" type="checkbox"> transparent</label>'
    )
    server_functions = (export_figure,)

    def __init__(self, label: str = "Brain response", views=None, px_per_mm=None, elem_classes: list[str] | None = None, **html_kwargs):
        super().__init__(label, elem_classes, **html_kwargs)

    def static_payload(self, geometry, vertices, roi_labels, roi_names) -> dict:
        """gr.update setting the panel's meshes; memoised per (meshes, unit space). ``geometry`` is
        {kind: {"lh", "rh"}} (see :func:`build_static_payload`) or one inflated {"lh", "rh"} mesh."""
        return self._static_update(build_static_payload(geometry, vertices, roi_labels, roi_names))
