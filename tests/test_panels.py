"""Brain and mouse panels: rasterisation geometry, payload sizes, and the Gradio wiring.

No browser here (the explorer's browser test drives the real page); these check the numbers the
browser code relies on.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import numpy as np
import pytest

from viewer import surface_views as sv


@pytest.fixture(scope="module")
def fsaverage5(tmp_path_factory):
    """Inflated fsaverage5 as the backend sends it: {"lh"/"rh": {coords, faces, sulc}}."""
    os.environ["NILEARN_DATA"] = str(tmp_path_factory.mktemp("nilearn_data"))
    from nilearn import datasets

    mesh = datasets.load_fsaverage("fsaverage5")["inflated"]
    sulc = datasets.load_fsaverage_data("fsaverage5", mesh_type="inflated", data_type="sulcal").data.parts
    return {
        h: {
            "coords": np.asarray(mesh.parts[k].coordinates, np.float32),
            "faces": np.asarray(mesh.parts[k].faces, np.int32),
            "sulc": np.asarray(sulc[k], np.float32),
        }
        for h, k in (("lh", "left"), ("rh", "right"))
    }


@pytest.fixture(scope="module")
def rendered(fsaverage5):
    out = {}
    for h in ("lh", "rh"):
        for v in ("lateral", "medial"):
            out[(h, v)] = sv.render_view(fsaverage5[h]["coords"], fsaverage5[h]["faces"], h, v, px_per_mm=2.0)
    return out


def _blob_labels(coords: np.ndarray, n_regions: int = 5, seed: int = 0) -> np.ndarray:
    """int16 [n]: a few regions, each the vertices nearest to a random seed (0 = none far away)."""
    rng = np.random.default_rng(seed)
    seeds = coords[rng.choice(len(coords), n_regions, replace=False)]
    d = np.linalg.norm(coords[:, None, :] - seeds[None], axis=2)
    lab = d.argmin(axis=1).astype(np.int16) + 1
    lab[d.min(axis=1) > 35] = 0
    return lab


# ----------------------------------------------------------------------------- rasterisation


def test_lateral_and_medial_views_show_the_right_side(fsaverage5, rendered):
    for h in ("lh", "rh"):
        coords, faces = fsaverage5[h]["coords"], fsaverage5[h]["faces"]
        mid = np.median(coords[:, 0])
        lat = rendered[(h, "lateral")]
        med = rendered[(h, "medial")]
        x_lat = np.median(coords[np.unique(sv.nearest_vertex(lat.face_id, lat.bary, faces)[lat.face_id >= 0]), 0])
        x_med = np.median(coords[np.unique(sv.nearest_vertex(med.face_id, med.bary, faces)[med.face_id >= 0]), 0])
        if h == "lh":  # the left hemisphere's lateral surface faces -x
            assert x_lat < mid < x_med
        else:
            assert x_med < mid < x_lat


def test_frontal_lobe_points_the_usual_way(fsaverage5, rendered):
    """lh lateral: anterior (+y) on the image's left; rh lateral: on the right."""
    for h, sign in (("lh", -1), ("rh", 1)):
        r = rendered[(h, "lateral")]
        y = fsaverage5[h]["coords"][:, 1]
        front, back = y > np.percentile(y, 90), y < np.percentile(y, 10)
        assert sign * (r.vertex_xy[front, 0].mean() - r.vertex_xy[back, 0].mean()) > 0


def test_every_visible_pixel_maps_to_a_valid_vertex(fsaverage5, rendered):
    for (h, v), r in rendered.items():
        faces = fsaverage5[h]["faces"]
        hit = r.face_id >= 0
        assert 0.4 < hit.mean() < 0.95, (h, v, hit.mean())
        assert r.face_id.max() < len(faces)
        near = sv.nearest_vertex(r.face_id, r.bary, faces)
        assert ((near >= 0) == hit).all()
        assert near.max() < len(fsaverage5[h]["coords"])
        w = r.bary[hit]
        assert np.allclose(w.sum(axis=1), 1, atol=1e-4) and (w >= 0).all()
        # the corners of the frame are background
        assert (r.face_id[[0, 0, -1, -1], [0, -1, 0, -1]] == -1).all()
        # the nearest vertex lies close to the pixel it is seen at (< 1 triangle away)
        rr, cc = np.nonzero(hit)
        d = np.hypot(r.vertex_xy[near[hit], 0] - (cc + 0.5), r.vertex_xy[near[hit], 1] - (rr + 0.5))
        assert np.percentile(d, 99) < 6 * 2.0  # fsaverage5 edges are ~4-5 mm; 2 px per mm


def test_zbuffer_keeps_the_nearer_triangle():
    # Two overlapping triangles: the second is nearer the viewer and must win where they overlap.
    xy = np.array([[1, 1], [9, 1], [1, 9], [2, 2], [10, 2], [2, 10]], float)
    depth = np.array([0, 0, 0, 5, 5, 5], float)
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    face_id, bary, zbuf = sv.rasterize(xy, depth, faces, (12, 12))
    assert face_id[3, 3] == 1 and zbuf[3, 3] == 5
    assert face_id[1, 1] == 0  # only the far triangle covers pixel centre (1.5, 1.5)
    assert face_id[11, 11] == -1 and np.isneginf(zbuf[11, 11])
    # covered pixels ~ area of the union: 32 + 32 - 18 (centres on edges count as inside)
    assert abs((face_id >= 0).sum() - 46) <= 8


def test_roi_boundary_pixels_lie_between_different_labels(fsaverage5, rendered):
    h = "lh"
    coords, faces = fsaverage5[h]["coords"], fsaverage5[h]["faces"]
    labels = _blob_labels(coords)
    r = rendered[(h, "lateral")]
    near = sv.nearest_vertex(r.face_id, r.bary, faces)
    mask = sv.label_boundary_mask(near, labels)
    assert mask.sum() > 50
    lab = np.where(near >= 0, labels[np.maximum(near, 0)], -1)
    rows, cols = np.nonzero(mask)
    right = np.where(cols + 1 < lab.shape[1], lab[rows, np.minimum(cols + 1, lab.shape[1] - 1)], -1)
    down = np.where(rows + 1 < lab.shape[0], lab[np.minimum(rows + 1, lab.shape[0] - 1), cols], -1)
    differs = ((right != lab[rows, cols]) & (right >= 0)) | ((down != lab[rows, cols]) & (down >= 0))
    assert differs.all()
    assert not sv.label_boundary_mask(near, np.ones_like(labels)).any()


def test_outline_segments_separate_labels(fsaverage5):
    coords, faces = fsaverage5["lh"]["coords"], fsaverage5["lh"]["faces"]
    labels = _blob_labels(coords)
    seg, seg_face, keys = sv.boundary_segments(coords, faces, labels)
    assert len(seg) > 100
    lab = labels[faces[seg_face]]
    assert ((lab[:, 0] != lab[:, 1]) | (lab[:, 1] != lab[:, 2])).all()
    # each endpoint that is an edge midpoint sits on an edge whose ends carry different labels
    n = len(coords)
    k = keys.ravel()
    edge = k < n * n
    i, j = k[edge] // n, k[edge] % n
    assert (labels[i] != labels[j]).all()
    assert np.allclose(seg.reshape(-1, 3)[edge], (coords[i] + coords[j]) / 2, atol=1e-4)
    # chained and smoothed, the outline keeps roughly its length and stays on the boundary
    smooth = sv.smooth_outlines(coords, faces, labels)
    raw_len = np.linalg.norm(seg[:, 1] - seg[:, 0], axis=1).sum()
    smooth_len = np.linalg.norm(smooth[:, 1] - smooth[:, 0], axis=1).sum()
    assert 0.5 * raw_len < smooth_len <= raw_len * 1.001
    # smoothing moves the outline by less than a triangle (fsaverage5 edges ~4-5 mm)
    from scipy.spatial import cKDTree

    d, _ = cKDTree(seg.reshape(-1, 3)).query(smooth.reshape(-1, 3))
    assert np.percentile(d, 95) < 3.0


def test_visible_segments_are_in_frame(fsaverage5, rendered):
    coords, faces = fsaverage5["lh"]["coords"], fsaverage5["lh"]["faces"]
    segs3d = sv.smooth_outlines(coords, faces, _blob_labels(coords))
    lat = sv.segments_to_pixels(segs3d, rendered[("lh", "lateral")])
    med = sv.segments_to_pixels(segs3d, rendered[("lh", "medial")])
    h, w = rendered[("lh", "lateral")].shape
    assert 0 < len(lat) < len(segs3d) and 0 < len(med) < len(segs3d)
    assert len(lat) + len(med) < 1.3 * len(segs3d)  # most segments are seen from one side only
    assert (lat[:, [0, 2]] >= 0).all() and (lat[:, [0, 2]] <= w).all()
    assert (lat[:, [1, 3]] >= 0).all() and (lat[:, [1, 3]] <= h).all()


# ----------------------------------------------------------------------------- payloads


def test_per_switch_payload_is_small_and_decodes(capsys):
    from viewer.canvas_panel import decode_values, values_payload

    rng = np.random.default_rng(0)
    values = rng.standard_normal(20484).astype(np.float32) * 3
    values[::97] = np.nan
    times = []
    for _ in range(20):
        t = time.perf_counter()
        payload = values_payload(values, title="stimulus 17")
        times.append(time.perf_counter() - t)
    nbytes = len(json.dumps(payload).encode())
    with capsys.disabled():
        print(f"\n[panels] per-switch payload {nbytes / 1024:.1f} KiB, python {np.median(times) * 1e3:.2f} ms (median of 20)")
    assert nbytes < 100_000
    back = decode_values(payload["v"])
    assert back.shape == values.shape
    assert np.array_equal(np.isnan(back), np.isnan(values))
    ok = ~np.isnan(values)
    assert np.allclose(back[ok], values[ok].astype(np.float16).astype(np.float32))
    assert np.allclose(back[ok], values[ok], rtol=1e-3, atol=1e-4)
    assert 0 < payload["vmax"] <= np.nanmax(np.abs(values))


def test_static_payload_structure_and_memo(fsaverage5, monkeypatch):
    from viewer import brain_panel as bp
    from viewer.canvas_panel import unb64

    n_lh = len(fsaverage5["lh"]["coords"])
    allc = np.concatenate([fsaverage5["lh"]["coords"], fsaverage5["rh"]["coords"]])
    vertices = np.flatnonzero(allc[:, 1] < 0)  # a posterior subset, as in Algonauts' challenge space
    labels = _blob_labels(allc)[vertices]
    names = ["none", "A", "B", "C", "D", "E"]
    t = time.perf_counter()
    p = bp.build_static_payload(fsaverage5, vertices, labels, names)
    first = time.perf_counter() - t

    calls = []
    real = sv.render_view
    monkeypatch.setattr(sv, "render_view", lambda *a, **k: calls.append(1) or real(*a, **k))
    t = time.perf_counter()
    again = bp.build_static_payload(fsaverage5, vertices, labels, names)
    assert again is p and not calls and time.perf_counter() - t < first / 5
    # another unit space on the same mesh reuses the rasterisation
    other = bp.build_static_payload(fsaverage5, None, np.zeros(len(allc), np.int16), ["none"])
    assert not calls and other["sid"] != p["sid"] and other["n_units"] == len(allc)

    assert p["n_units"] == len(vertices) and p["n_lh"] == n_lh and p["n_total"] == len(allc)
    assert {(v["hemi"], v["view"]) for v in p["views"]} == {(h, v) for h in ("lh", "rh") for v in ("lateral", "medial")}
    uov = unb64(p["unit_of_vertex_z"], "i4", True)
    assert (uov[vertices] == np.arange(len(vertices))).all() and (np.delete(uov, vertices) == -1).all()
    assert (unb64(p["labels_z"], "i2", True)[vertices] == labels).all()
    for v in p["views"]:
        fid = unb64(v["face_id_z"], v["face_dtype"], True).reshape(v["h"], v["w"])
        n_faces = len(fsaverage5[v["hemi"]]["faces"])
        seen = fid[fid != np.iinfo(fid.dtype).max]
        assert seen.size > 0.4 * fid.size and seen.max() < n_faces
        vxy = unb64(v["vxy_z"], "u2", True).reshape(-1, 2) / 16
        assert vxy.shape[0] == len(fsaverage5[v["hemi"]]["coords"])
        assert vxy[:, 0].max() <= v["w"] and vxy[:, 1].max() <= v["h"]
        assert 0 <= v["x"] and v["x"] + v["w"] <= p["width"] and v["y"] + v["h"] <= p["height"]
    nbytes = len(json.dumps(p))
    print(f"\n[panels] static payload {nbytes / 1e6:.2f} MB, built in {first:.2f} s")
    assert nbytes < 3_000_000


def test_mouse_static_payload():
    from viewer.canvas_panel import unb64
    from viewer.mouse_panel import build_static_payload

    rng = np.random.default_rng(1)
    areas = ["VISp", "VISl", "VISal", "VISrl", "VISam", "VISpm"]
    n = 600
    space = {
        "areas": areas,
        "area": rng.integers(0, 6, n).astype(np.int16),
        "x": rng.normal(0, 1, n).astype(np.float32),
        "y": rng.normal(0, 1, n).astype(np.float32),
        "depth": rng.uniform(100, 400, n).astype(np.float32),
        "area_outlines": {a: rng.normal(0, 1, (20, 2)).astype(np.float32) for a in areas},
    }
    p = build_static_payload(space)
    assert p["n_units"] == n and p["areas"] == areas
    assert np.array_equal(unb64(p["x_z"], "f4", True), space["x"])
    assert np.array_equal(unb64(p["area_z"], "i2", True), space["area"])
    assert [o["name"] for o in p["outlines"]] == areas
    assert [e["name"] for e in p["extra"]] == ["depth"]
    assert build_static_payload(space) is p


def test_template_text_is_inert():
    from viewer.canvas_panel import html_literal

    out = html_literal("a `b` ${c} {{d}} <e> \\")
    for bad in ("`", "${", "{{", "<", "\\"):
        assert bad not in out


# ----------------------------------------------------------------------------- gradio wiring


def test_blocks_with_both_panels(fsaverage5):
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr
    from gradio.blocks import postprocess_update_dict

    from viewer.brain_panel import BrainPanel
    from viewer.canvas_panel import STATIC_PROP, decode_values
    from viewer.mouse_panel import MousePanel

    n = 2 * len(fsaverage5["lh"]["coords"])
    labels = np.zeros(n, np.int16)
    neurons = {
        "areas": ["VISp", "VISl"], "area": np.array([0, 1, 1], np.int16),
        "x": np.array([0, 1, 1.2], np.float32), "y": np.array([0, 0.5, 0.2], np.float32),
        "area_outlines": {"VISp": np.array([[-1, -1], [1, -1], [0, 1]], np.float32)},
    }
    with gr.Blocks() as demo:
        stim = gr.Number(value=0)
        brain = BrainPanel(label="Response")
        accuracy = BrainPanel(label="Accuracy `x` ${y}", views=("lateral", "medial", "ventral"))
        mouse = MousePanel(label="Neurons")

        def switch(i):
            v = np.random.default_rng(int(i)).standard_normal(n).astype(np.float32)
            return brain.values_update(v, f"stimulus {int(i)}"), mouse.values_update(np.ones(3), "m")

        def load(i):
            v = np.zeros(n, np.float32)
            st = brain.static_payload(fsaverage5, None, labels, ["none"])
            return brain.values_update(v, "first", static=st), mouse.values_update(np.ones(3), static=mouse.static_payload(neurons))

        stim.change(switch, stim, brain.outputs + mouse.outputs)
        demo.load(load, stim, brain.outputs + mouse.outputs)

    config = demo.get_config_file()
    html = [c for c in config["components"] if c.get("type") == "html"]
    assert len(html) == 3 and len({c["id"] for c in html}) == 3
    for c in html:
        props = c["props"]
        assert "CortextualPanels.mount" in props["js_on_load"]
        assert "window.CortextualPanels" in props["head"]
        assert "id=" not in props["html_template"]  # no page-global ids: panels can repeat
        assert "${" not in props["html_template"] and "{{" not in props["html_template"]
    assert len({c["props"]["head"] for c in html}) == 1  # one script, deduplicated by the page

    # Run the two events the way the server does and look at what would go over the wire.
    fn_switch = next(f for f in demo.fns.values() if f.name == "switch")
    fn_load = next(f for f in demo.fns.values() if f.name == "load")
    out = asyncio.run(demo.process_api(fn_switch, [3]))["data"]
    brain_msg, mouse_msg = out
    assert brain_msg["__type__"] == "update" and STATIC_PROP not in brain_msg.get("props", {})
    assert set(brain_msg["value"]) >= {"v", "n", "vmax", "title"}
    assert brain_msg["value"]["n"] == n and len(decode_values(brain_msg["value"]["v"])) == n
    assert len(json.dumps(brain_msg)) < 100_000
    assert mouse_msg["value"]["n"] == 3

    out = asyncio.run(demo.process_api(fn_load, [0]))["data"]
    static = out[0]["props"][STATIC_PROP]
    assert static["kind"] == "surface" and static["n_units"] == n and out[0]["value"]["title"] == "first"
    assert out[1]["props"][STATIC_PROP]["kind"] == "neurons"

    # The static prop is not mistaken for an attribute/event of the component.
    upd = postprocess_update_dict(brain.html, dict(brain.static_payload(fsaverage5, None, labels, ["none"])))
    assert set(upd) == {"props", "__type__"} and STATIC_PROP in upd["props"]
