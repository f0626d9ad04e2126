"""Brain and mouse panels: outlines, payload contents and sizes, colour limits, and the Gradio wiring.

No browser here (tests/test_browser_cortex.py drives the real page); these check the numbers the
browser code relies on.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import numpy as np
import pytest



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


def _blob_labels(coords: np.ndarray, n_regions: int = 5, seed: int = 0) -> np.ndarray:
    """int16 [n]: a few regions, each the vertices nearest to a random seed (0 = none far away)."""
    rng = np.random.default_rng(seed)
    seeds = coords[rng.choice(len(coords), n_regions, replace=False)]
    d = np.linalg.norm(coords[:, None, :] - seeds[None], axis=2)
    lab = d.argmin(axis=1).astype(np.int16) + 1
    lab[d.min(axis=1) > 35] = 0
    return lab


# ----------------------------------------------------------------------------- outlines and anchors


def test_outline_segments_cross_label_boundaries(fsaverage5):
    from viewer.brain_panel import outline_edges

    coords, faces = fsaverage5["lh"]["coords"], fsaverage5["lh"]["faces"]
    labels = _blob_labels(coords)
    seg = outline_edges(faces, labels)
    assert seg.shape[1] == 4 and len(seg) > 100
    # each end is the midpoint of an edge whose two vertices carry different labels
    for p, q in ((0, 1), (2, 3)):
        assert (labels[seg[:, p]] != labels[seg[:, q]]).all()
    # every mixed triangle contributes, uniform ones never
    f = faces
    mixed = (labels[f[:, 0]] != labels[f[:, 1]]) | (labels[f[:, 1]] != labels[f[:, 2]])
    three = (labels[f[:, 0]] != labels[f[:, 1]]) & (labels[f[:, 1]] != labels[f[:, 2]]) & (labels[f[:, 0]] != labels[f[:, 2]])
    assert len(seg) == mixed.sum() + three.sum()
    assert len(outline_edges(faces, np.ones(len(coords), np.int16))) == 0


def test_region_anchors_lie_inside_their_region(fsaverage5):
    from viewer.brain_panel import region_anchors

    coords = fsaverage5["lh"]["coords"]
    labels = _blob_labels(coords)
    anchors = region_anchors(coords, labels)
    assert sorted(lab for lab, _ in anchors) == sorted(set(labels[labels > 0].tolist()))
    for lab, v in anchors:
        assert labels[v] == lab
        region = coords[labels == lab]
        # near the region's centre: closer to it than most of the region's own vertices
        d = np.linalg.norm(region - region.mean(axis=0), axis=1)
        assert np.linalg.norm(coords[v] - region.mean(axis=0)) <= np.percentile(d, 25)


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


def test_colour_scale_hint_and_limits():
    from viewer.canvas_panel import colour_limits, values_payload

    rng = np.random.default_rng(2)
    signed = rng.standard_normal(5000).astype(np.float32)
    r = np.abs(signed) / 4  # a non-negative quantity (r, r^2, fraction of ceiling)
    p = values_payload(signed)
    assert p["scale"] == "symmetric" and p["vmin"] == -p["vmax"] and 2 < p["vmax"] < 4
    q = values_payload(r, cbar_label="r")
    assert q["scale"] == "sequential" and q["vmin"] == 0 and 0 < q["vmax"] <= r.max() and q["cbar_label"] == "r"
    # the caller's hint wins: a map of r with a few negative units is still sequential from 0
    hinted = values_payload(r - 0.05, scale="sequential")
    assert hinted["scale"] == "sequential" and hinted["vmin"] == 0
    assert values_payload(r, vmax=0.3)["vmax"] == 0.3 and values_payload(signed, vmax=2)["vmin"] == -2
    assert values_payload(signed)["threshold"] is None and values_payload(signed, threshold=1.5)["threshold"] == 1.5
    with pytest.raises(ValueError, match="scale"):
        colour_limits(r, "logarithmic")


def test_static_payload_structure_and_memo(fsaverage5):
    from viewer import brain_panel as bp
    from viewer.canvas_panel import unb64

    n_lh = len(fsaverage5["lh"]["coords"])
    allc = np.concatenate([fsaverage5["lh"]["coords"], fsaverage5["rh"]["coords"]])
    vertices = np.flatnonzero(allc[:, 1] < 0)  # a posterior subset, as in Algonauts' challenge space
    labels = _blob_labels(allc)[vertices]
    names = ["none", "A", "B", "C", "D", "E"]
    # a second kind with the same faces and other coordinates (as pial is to inflated)
    pial = {h: dict(fsaverage5[h], coords=fsaverage5[h]["coords"] * 0.5) for h in ("lh", "rh")}
    geometry = {"inflated": fsaverage5, "pial": pial}
    t = time.perf_counter()
    p = bp.build_static_payload(geometry, vertices, labels, names)
    first = time.perf_counter() - t
    t = time.perf_counter()
    again = bp.build_static_payload(geometry, vertices, labels, names)
    assert again is p and time.perf_counter() - t < first / 5
    other = bp.build_static_payload(fsaverage5, None, np.zeros(len(allc), np.int16), ["none"])  # one mesh: inflated
    assert other["sid"] != p["sid"] and other["n_units"] == len(allc) and [m["kind"] for m in other["meshes"]] == ["inflated"]

    assert p["n_units"] == len(vertices) and p["n_lh"] == n_lh and p["n_total"] == len(allc)
    assert [m["kind"] for m in p["meshes"]] == ["inflated", "pial"]
    assert len(p["face_sets"]) == 2  # lh and rh faces, shared by both kinds
    for m, scale in zip(p["meshes"], (1.0, 0.5)):
        for h in ("lh", "rh"):
            pos = unb64(m["hemis"][h]["pos_z"], "f2", True).reshape(-1, 3).astype(np.float32)
            assert np.allclose(pos, fsaverage5[h]["coords"] * scale, atol=0.13)  # float16: <= 0.125 mm at 256 mm
            fs = p["face_sets"][m["hemis"][h]["faces"]]
            assert np.array_equal(unb64(fs["faces_z"], fs["dtype"], True).reshape(-1, 3), fsaverage5[h]["faces"])
            assert len(unb64(fs["outlines_z"], fs["dtype"], True)) % 4 == 0
    uov = unb64(p["unit_of_vertex_z"], "i4", True)
    assert (uov[vertices] == np.arange(len(vertices))).all() and (np.delete(uov, vertices) == -1).all()
    assert (unb64(p["labels_z"], "i2", True)[vertices] == labels).all()
    assert {a["label"] for a in p["anchors"]} <= set(range(1, len(names))) and p["anchors"]
    assert set(p["luts"]) >= {"RdBu_r", "viridis"} and len(unb64(p["luts"]["viridis"], "u1")) == 256 * 3
    assert p["presets"] == ["lateral", "medial", "ventral", "dorsal", "posterior"]
    with pytest.raises(ValueError, match="roi labels"):
        bp.build_static_payload(geometry, vertices[:5], labels, names)
    with pytest.raises(ValueError, match="kinds"):
        bp.build_static_payload({"sphere-ish": fsaverage5}, None, np.zeros(len(allc), np.int16), ["none"])


def test_static_payload_of_all_fsaverage5_meshes_is_sent_once_and_small(tmp_path):
    """The four meshes the panel offers (inflated, pial, white, flat), as the viewer sends them once per dataset."""
    from backend.data.surface import load_hemispheres
    from viewer import brain_panel as bp

    geometry = {k: {h: {"coords": x.coords, "faces": x.faces, "sulc": x.sulc} for h, x in load_hemispheres(kind=k).items()}
                for k in bp.MESH_KINDS}
    n = sum(len(geometry["inflated"][h]["coords"]) for h in ("lh", "rh"))
    p = bp.build_static_payload(geometry, None, np.zeros(n, np.int16), ["none"])
    assert [m["kind"] for m in p["meshes"]] == list(bp.MESH_KINDS)
    assert len(p["face_sets"]) == 4  # inflated, pial and white share faces; the flat patch is cut
    nbytes = len(json.dumps(p))
    print(f"\n[panels] static payload, 4 meshes: {nbytes / 1e6:.2f} MB")
    assert nbytes < 1_500_000


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
    assert set(p["luts"]) >= {"RdBu_r", "viridis"}  # the same colour controls as the brain panel
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
    head = html[0]["props"]["head"]
    assert '<script src="/gradio_api/file=' in head and "three.min.js" in head and len(head) < 200_000  # three.js is not inlined
    assert [f.__name__ for f in brain.html.server_fns] == ["export_figure"] and not mouse.html.server_fns

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
