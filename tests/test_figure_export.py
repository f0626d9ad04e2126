"""Export figure: per-vertex colours as the browser draws them, and the pyvista + matplotlib PNG
(views side by side, colour bar with units, transparent background, >= 2400 px), through the
panel's server function as the browser calls it."""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def meshes():
    from backend.data.surface import load_hemispheres

    return {k: {h: {"coords": x.coords, "faces": x.faces, "sulc": x.sulc} for h, x in load_hemispheres(kind=k).items()}
            for k in ("inflated", "flat")}


def _anterior_posterior(geometry) -> np.ndarray:
    """float32 [n]: -2 at the back of the brain to +2 at the front (a signed map with known sides)."""
    y = np.concatenate([geometry["lh"]["coords"][:, 1], geometry["rh"]["coords"][:, 1]])
    return (4 * (y - y.min()) / (y.max() - y.min()) - 2).astype(np.float32)


def test_colour_settings_are_checked_and_maps_are_matplotlibs():
    from matplotlib import colormaps

    from viewer.canvas_panel import colormap_lut
    from viewer.figure_export import check_colours

    lut = colormap_lut("RdBu_r")
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert np.abs(lut[0] / 255 - np.array(colormaps["RdBu_r"](0.0)[:3])).max() < 0.003  # blue end first
    assert lut[0, 2] > lut[0, 0] and lut[255, 0] > lut[255, 2]
    check_colours("viridis", "sequential", 0, 1)
    with pytest.raises(ValueError, match="vmin < vmax"):
        check_colours("viridis", "sequential", 1, 1)
    with pytest.raises(ValueError, match="colour map"):
        check_colours("no-such-map", "sequential", 0, 1)
    with pytest.raises(ValueError, match="scale"):
        check_colours("viridis", "log", 0, 1)


@pytest.mark.slow
def test_figure_has_views_colour_bar_and_transparent_background(meshes, capsys):
    from viewer.figure_export import render_figure

    geometry = meshes["inflated"]
    values = _anterior_posterior(geometry)
    t0, c0 = time.perf_counter(), time.process_time()
    png = render_figure(geometry, values, cmap="RdBu_r", scale="symmetric", vmin=-2, vmax=2, threshold=0.5,
                        title="front to back", units="response (noise sd)", views=("lateral", "medial"), transparent=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    with capsys.disabled():
        print(f"\n[figure] 4 views, 2400 px: {wall:.1f} s wall, {cpu:.1f} s CPU in this process, {len(png) / 1e6:.1f} MB")
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))
    h, w, _ = img.shape
    assert w >= 2400 and 0.5 * w < h < 1.2 * w  # two rows of two views, title and colour bar
    assert img[2, 2, 3] == 0 and img[h // 2, w // 2, 3] == 0  # transparent around and between the views
    opaque = img[:, :, 3] > 200
    red = opaque & (img[:, :, 0].astype(int) - img[:, :, 2] > 80)
    blue = opaque & (img[:, :, 2].astype(int) - img[:, :, 0] > 80)
    grey = opaque & (np.ptp(img[:, :, :3].astype(int), axis=2) < 12) & (img[:, :, 0] > 60) & (img[:, :, 0] < 235)
    assert red.sum() > 20_000 and blue.sum() > 20_000 and grey.sum() > 20_000  # both ends and the thresholded band
    # left column, lateral row: the front of the left hemisphere faces left, so red sits left of blue there
    top = slice(0, h // 2)
    left = slice(0, w // 2)
    xs_red = np.nonzero(red[top, left])[1]
    xs_blue = np.nonzero(blue[top, left])[1]
    assert np.median(xs_red) < np.median(xs_blue)
    # the colour bar runs along the bottom: blue end at the left, red at the right
    bar = img[int(0.88 * h) :, :, :]
    bar_red = np.nonzero((bar[:, :, 3] > 200) & (bar[:, :, 0].astype(int) - bar[:, :, 2] > 80))[1]
    bar_blue = np.nonzero((bar[:, :, 3] > 200) & (bar[:, :, 2].astype(int) - bar[:, :, 0] > 80))[1]
    assert bar_red.size and bar_blue.size and bar_blue.mean() < bar_red.mean()
    with pytest.raises(ValueError, match="2400"):
        render_figure(geometry, values, width_px=1200)
    with pytest.raises(ValueError, match="shape"):
        render_figure(geometry, values[:10])


@pytest.mark.slow
def test_export_server_function_uses_the_shown_surface(meshes):
    from viewer.brain_panel import build_static_payload, export_figure
    from viewer.canvas_panel import encode_values

    n = 2 * 10242
    shown = np.arange(0, n, 2)  # a unit space covering every other vertex
    payload = build_static_payload(meshes, shown, np.zeros(len(shown), np.int16), ["none"])
    values = _anterior_posterior(meshes["inflated"])[shown]
    settings = {"mesh": "flat", "cmap": "viridis", "scale": "sequential", "vmin": 0, "vmax": 2, "threshold": None,
                "title": "flat map", "units": "r", "transparent": False}
    out = export_figure({"sid": payload["sid"], "values": encode_values(values), "settings": settings})
    assert "error" not in out, out
    img = Image.open(io.BytesIO(base64.b64decode(out["png"])))
    assert img.size == (out["width"], out["height"]) and out["width"] >= 2400 and out["ms"] > 0
    assert np.asarray(img.convert("RGB"))[2, 2].tolist() == [255, 255, 255]  # opaque white when not transparent

    assert "no longer held" in export_figure({"sid": "0123", "values": encode_values(values), "settings": settings})["error"]
    assert "values for" in export_figure({"sid": payload["sid"], "values": encode_values(values[:5]), "settings": settings})["error"]
    bad = dict(settings, vmin=3)
    assert "vmin < vmax" in export_figure({"sid": payload["sid"], "values": encode_values(values), "settings": bad})["error"]
    assert "expected" in export_figure(["not", "a", "dict"])["error"]
