"""The WebGL cortex in headless Chromium (WebGL2 on SwiftShader): drag rotates, preset views, hover
and click report vertex and region, the flat map, colour controls with "lock scale" across a stimulus
switch, "Export figure" through the viewer's server, and the same colour controls on the mouse area
map. One launched explorer (small demo world) for the module; screenshots go under each test's
temporary directory.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.conftest import free_port, launch_and_wait, stop_launched
from tests.test_browser import CHROMIUM_FLAGS, chromium_path

PANEL = "#ctx-brain .ctx-brain"
GL = "#ctx-brain canvas.ctx-gl"


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """The explorer's page at 1600x1000 with the brain painted once; shared by the module's tests."""
    from playwright.sync_api import sync_playwright

    log = tmp_path_factory.mktemp("launch") / "launch.log"
    process, url = launch_and_wait(["--port", str(free_port())], log)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_function("(+document.querySelector('#ctx-brain')?.dataset.paints || 0) > 0", timeout=120_000)
            page.errors = errors
            yield page
            browser.close()
    finally:
        stop_launched(process)


def pixels(page) -> str:
    """A digest of the WebGL canvas (it keeps its drawing buffer, so it can be read back)."""
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    return page.evaluate(f"document.querySelector('{GL}').toDataURL().slice(-6000)")


def data(page, key: str):
    return page.evaluate(f"document.querySelector('{PANEL}').dataset['{key}']")


@pytest.mark.browser
@pytest.mark.slow
def test_cortex_rotates_turns_to_presets_picks_and_flattens(page, tmp_path):
    box = page.locator(GL).bounding_box()
    assert box["width"] > 300 and box["height"] > 200
    assert data(page, "view") == "lateral" and data(page, "mesh") == "inflated"
    lateral = pixels(page)
    page.locator("#ctx-brain").screenshot(path=str(tmp_path / "1-lateral.png"))

    # Drag rotates: the pixels change and no page text gets selected.
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 60, cy)
    page.mouse.down()
    page.mouse.move(cx + 80, cy + 40, steps=8)
    page.mouse.up()
    rotated = pixels(page)
    page.locator("#ctx-brain").screenshot(path=str(tmp_path / "2-dragged.png"))
    assert rotated != lateral, "dragging rotates the cortex"
    assert page.evaluate("window.getSelection().toString()") == "", "dragging selected page text"

    # Preset buttons: ventral shows another picture; lateral restores the first one exactly.
    page.locator("#ctx-brain .ctx-view[data-view=ventral]").click()
    assert data(page, "view") == "ventral"
    ventral = pixels(page)
    page.locator("#ctx-brain").screenshot(path=str(tmp_path / "3-ventral.png"))
    assert ventral not in (lateral, rotated)
    page.locator("#ctx-brain .ctx-view[data-view=lateral]").click()
    assert pixels(page) == lateral, "the lateral preset resets rotation, pan and zoom"

    # A region's name sits on its anchor vertex: clicking there reports that vertex's region.
    names = page.evaluate(
        """() => [...document.querySelectorAll('#ctx-brain .ctx-name')].filter(e => e.style.display !== 'none')
                 .map(e => { const r = e.getBoundingClientRect(); return [e.textContent, r.x + r.width / 2, r.y + r.height / 2]; })"""
    )
    assert names, "no region name is visible in the lateral view"
    name, x, y = names[0]
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.up()
    page.wait_for_function(f"!!document.querySelector('{PANEL}').dataset.pick")
    picked = json.loads(data(page, "pick"))
    assert picked["region"] == name and picked["hemi"] in ("lh", "rh") and 0 <= picked["vertex"] < 10242
    assert isinstance(picked["value"], float)
    assert name in page.inner_text("#ctx-brain .ctx-readout")
    # Hover over empty background reports nothing; over the cortex it shows the tooltip.
    page.mouse.move(box["x"] + 3, box["y"] + 3)
    assert page.locator("#ctx-brain .ctx-tip").is_hidden()
    page.mouse.move(x, y)
    page.wait_for_function("!document.querySelector('#ctx-brain .ctx-tip').hidden")
    assert "vertex" in page.inner_text("#ctx-brain .ctx-tip")

    # The flat map: both hemispheres flattened side by side, from the same values (no server call).
    paints = data(page, "paints")
    page.select_option("#ctx-brain .ctx-mesh", "flat")
    assert data(page, "mesh") == "flat" and data(page, "view") == "flat"
    flat = pixels(page)
    page.locator("#ctx-brain").screenshot(path=str(tmp_path / "4-flat.png"))
    assert flat not in (lateral, ventral) and data(page, "paints") == paints
    page.select_option("#ctx-brain .ctx-mesh", "inflated")
    page.locator("#ctx-brain .ctx-view[data-view=lateral]").click()
    assert page.errors == []


@pytest.mark.browser
@pytest.mark.slow
def test_colour_controls_and_lock_across_a_switch(page, tmp_path):
    before = pixels(page)
    # Colour map and threshold repaint in the browser alone (no new values arrive).
    paints = data(page, "paints")
    page.select_option("#ctx-brain .ctx-cmap", "coolwarm")
    assert data(page, "cmap") == "coolwarm"
    page.fill("#ctx-brain .ctx-thr", "1")
    page.press("#ctx-brain .ctx-thr", "Enter")
    page.locator("#ctx-brain .ctx-vmax").fill("4")
    page.press("#ctx-brain .ctx-vmax", "Enter")
    assert float(data(page, "vmax")) == 4 and float(data(page, "vmin")) == -4  # symmetric: one number sets both ends
    assert pixels(page) != before and data(page, "paints") == paints
    page.locator("#ctx-brain").screenshot(path=str(tmp_path / "colours.png"))

    # Locked: another stimulus keeps the user's limits.
    page.check("#ctx-brain .ctx-lock")
    title = data(page, "title")
    started = time.perf_counter()
    page.locator("#ctx-gallery img").nth(3).click()
    page.wait_for_function(f"document.querySelector('#ctx-brain').dataset.title !== {json.dumps(title)}", timeout=30_000)
    print(f"\n[cortex] click to repainted cortex: {1000 * (time.perf_counter() - started):.0f} ms "
          f"(of which applying the values and drawing: {data(page, 'paintMs')} ms)")
    assert float(data(page, "vmax")) == 4 and float(data(page, "vmin")) == -4

    # Unlocked: the next switch takes the limits its values suggest again.
    page.uncheck("#ctx-brain .ctx-lock")
    title = data(page, "title")
    page.locator("#ctx-gallery img").nth(4).click()
    page.wait_for_function(f"document.querySelector('#ctx-brain').dataset.title !== {json.dumps(title)}", timeout=30_000)
    assert float(data(page, "vmax")) != 4 and float(data(page, "vmin")) == -float(data(page, "vmax"))
    # the sequential scale starts at 0
    page.select_option("#ctx-brain .ctx-scale", "sequential")
    assert float(data(page, "vmin")) == 0 and float(data(page, "vmax")) > 0
    page.select_option("#ctx-brain .ctx-scale", "auto")
    page.fill("#ctx-brain .ctx-thr", "")
    page.press("#ctx-brain .ctx-thr", "Enter")


@pytest.mark.browser
@pytest.mark.slow
def test_export_figure_renders_on_the_server(page):
    page.check("#ctx-brain .ctx-transparent")
    with page.expect_download(timeout=120_000) as download:
        page.click("#ctx-brain .ctx-export")
    path = download.value.path()
    exported = json.loads(data(page, "exported"))
    assert exported["width"] >= 2400 and exported["bytes"] == os.path.getsize(path)
    from PIL import Image

    with Image.open(path) as img:
        assert img.mode == "RGBA" and img.width >= 2400
        assert img.getpixel((2, 2))[3] == 0  # transparent background
    print(f"\n[cortex] figure export {exported['width']}x{exported['height']} px rendered in {exported['ms']} ms")


@pytest.mark.browser
@pytest.mark.slow
def test_mouse_area_map_has_the_same_colour_controls(page, tmp_path):
    """Last in the module: it switches the page to the mouse dataset."""
    page.locator("#ctx-dataset input").click()
    page.get_by_role("option", name="[demo-mouse]").click()
    page.wait_for_function("(+document.querySelector('#ctx-mouse')?.dataset.paints || 0) > 0", timeout=60_000)
    mouse = "#ctx-mouse .ctx-mouse"
    digest = f"document.querySelector('{mouse} canvas.ctx-canvas').toDataURL().slice(-6000)"
    value = lambda key: page.evaluate(f"document.querySelector('{mouse}').dataset['{key}']")  # noqa: E731
    assert value("scale") == "symmetric" and float(value("vmin")) == -float(value("vmax"))  # responses: symmetric
    before = page.evaluate(digest)
    page.select_option("#ctx-mouse .ctx-scale", "sequential")
    page.fill("#ctx-mouse .ctx-thr", "0.5")
    page.press("#ctx-mouse .ctx-thr", "Enter")
    assert value("scale") == "sequential" and float(value("vmin")) == 0 and value("cmap") == "viridis"
    assert page.evaluate(digest) != before
    page.locator("#ctx-mouse").screenshot(path=str(tmp_path / "mouse.png"))
    assert page.errors == []
