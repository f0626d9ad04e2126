"""The Explore view in headless Chromium: one screen at 1600x1000, arrow keys and "go to" step
through the stimuli, a click on a manifold point selects its stimulus, and a dataset switch
clears the encoding map. One explorer (the small demo world) and one page serve the module;
screenshots go to the tests' temporary folders."""

from __future__ import annotations

import os

import pytest

from tests.conftest import free_port, launch_and_wait, stop_launched
from tests.test_browser import CHROMIUM_FLAGS, chromium_path

pytestmark = [pytest.mark.browser, pytest.mark.slow]
WIDTH, HEIGHT = 1600, 1000
TITLE = "#ctx-stimulus-title"


@pytest.fixture(scope="module")
def explorer_url(tmp_path_factory, numba_cache_dir):
    env = dict(os.environ)  # the small demo world of conftest.py
    env["NUMBA_CACHE_DIR"] = str(numba_cache_dir)  # UMAP's kernels compiled once across sessions
    log = tmp_path_factory.mktemp("launch-explore") / "launch.log"
    process, url = launch_and_wait(["--port", str(free_port())], log, env=env)
    yield url
    stop_launched(process)


@pytest.fixture(scope="module")
def page(explorer_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
        page.errors = []
        page.on("pageerror", lambda err: page.errors.append(str(err)))
        page.goto(explorer_url)
        page.wait_for_selector("#ctx-gallery img", timeout=120_000)
        page.wait_for_function(f"document.querySelector('{TITLE}')?.innerText.includes('#')", timeout=60_000)
        yield page
        browser.close()


def shown_index(page) -> int:
    text = page.inner_text(TITLE)
    return int(text.split("#", 1)[1].split()[0])


def wait_for_index(page, index: int, timeout: float = 30_000) -> None:
    page.wait_for_function(
        "(i) => (document.querySelector('#ctx-stimulus-title')?.innerText || '').includes('#' + i + ' ')", arg=index, timeout=timeout
    )


def test_core_view_fits_one_screen(page, tmp_path):
    page.wait_for_function("(document.querySelector('#ctx-captions')?.innerText || '').includes('Reference caption')", timeout=30_000)
    boxes = {}
    for name in ("#ctx-stimulus", "#ctx-recon-brain", "#ctx-captions", "#ctx-brain", "#ctx-reconstructions"):
        box = page.locator(name).first.bounding_box()
        assert box is not None, f"{name} is not on the page"
        boxes[name] = box
    page.screenshot(path=str(tmp_path / "explore-1600x1000.png"))
    for name, box in boxes.items():
        assert box["width"] > 60 and box["height"] > 60, (name, box)
        assert box["x"] >= 0 and box["y"] >= 0, (name, box)
        assert box["x"] + box["width"] <= WIDTH + 1 and box["y"] + box["height"] <= HEIGHT + 1, f"{name} needs scrolling: {box}"
    stimulus, from_brain = boxes["#ctx-stimulus"], boxes["#ctx-recon-brain"]
    assert abs(stimulus["y"] - from_brain["y"]) < 20, "the reconstruction from the brain sits next to the stimulus"
    page.set_viewport_size({"width": 1280, "height": 720})
    page.screenshot(path=str(tmp_path / "explore-1280x720.png"))
    for name in ("#ctx-stimulus", "#ctx-brain"):  # usable: both start on the first screen
        assert page.locator(name).first.bounding_box()["y"] < 720, name
    page.set_viewport_size({"width": WIDTH, "height": HEIGHT})
    assert (tmp_path / "explore-1600x1000.png").stat().st_size > 30_000


def test_arrow_keys_and_go_to_step_through_stimuli(page):
    start = shown_index(page)
    page.locator("#ctx-dataset-info").click()  # focus on the page, not in a field
    page.keyboard.press("ArrowRight")
    wait_for_index(page, start + 1)
    page.keyboard.press("ArrowLeft")
    wait_for_index(page, start)
    page.fill("#ctx-goto textarea, #ctx-goto input", "#7")
    page.keyboard.press("Enter")
    wait_for_index(page, 7)
    page.fill("#ctx-goto textarea, #ctx-goto input", "demo-0011")
    page.keyboard.press("Enter")
    wait_for_index(page, 11)


def test_clicking_a_manifold_point_selects_its_stimulus(page, tmp_path):
    page.click("#ctx-manifold-run")
    page.wait_for_function(
        "document.querySelectorAll('#ctx-manifold .scatterlayer path.point').length > 100", timeout=150_000
    )
    # a point of another stimulus than the one shown: its index from the trace's customdata
    target = page.evaluate(
        """(shown) => {
            for (const trace of document.querySelectorAll('#ctx-manifold .scatterlayer .trace')) {
                const cd = trace.__data__; if (!cd || !cd[0] || !cd[0].trace.customdata) continue;
                const points = trace.querySelectorAll('path.point');
                for (const p of points) {
                    const index = cd[0].trace.customdata[p.__data__.i];
                    const r = p.getBoundingClientRect();
                    if (index !== shown && r.width > 0) return {index, x: r.x + r.width / 2, y: r.y + r.height / 2};
                }
            }
            return null; }""",
        shown_index(page),
    )
    assert target is not None, "no point to click"
    page.mouse.move(target["x"], target["y"])
    # hover previews the stimulus under the cursor (its thumbnail and caption)
    page.wait_for_function("(document.querySelector('#ctx-manifold .ctx-preview img')?.src || '').startsWith('data:image/png')",
                           timeout=20_000)
    assert f"#{target['index']}" in page.inner_text("#ctx-manifold .ctx-preview span")
    assert page.locator("#ctx-manifold .modebar-btn[data-title='Download plot as SVG']").count() == 1  # and PNG: plotly's own
    page.mouse.click(target["x"], target["y"])
    wait_for_index(page, target["index"])
    page.wait_for_function("(i) => document.querySelector('#ctx-manifold [data-selected]')?.dataset.selected === String(i)",
                           arg=target["index"], timeout=20_000)
    ringed = page.evaluate(
        "() => [...document.querySelectorAll('#ctx-manifold .scatterlayer .trace')].filter(t => t.__data__?.[0]?.trace.meta === 'selected')"
        ".map(t => t.querySelectorAll('path.point').length)"
    )
    assert ringed == [1, 1], f"the selected stimulus is ringed in both maps: {ringed}"
    page.screenshot(path=str(tmp_path / "manifold-selected.png"), full_page=True)


def test_dataset_switch_clears_the_encoding_map(page, tmp_path):
    page.get_by_role("tab", name="Encoding maps").click()
    page.wait_for_function("document.querySelector('#ctx-enc-embedder input')?.value", timeout=30_000)
    page.click("#ctx-enc-fit")
    page.wait_for_function("(document.querySelector('#ctx-enc-status')?.innerText || '').includes('finished')", timeout=150_000)
    page.wait_for_function("(document.querySelector('#ctx-enc-brain .ctx-status')?.innerText ?? 'x') === ''", timeout=30_000)
    page.screenshot(path=str(tmp_path / "encoding-human.png"), full_page=True)
    page.locator("#ctx-dataset input").click()
    page.get_by_role("option", name="demo-mouse", exact=False).first.click()
    page.wait_for_function("(document.querySelector('#ctx-dataset-info')?.innerText || '').includes('neurons')", timeout=60_000)
    page.wait_for_function("!(document.querySelector('#ctx-enc-status')?.innerText || '').includes('finished')", timeout=30_000)
    page.wait_for_function(
        "(document.querySelector('#ctx-enc-brain .ctx-status')?.innerText || '').includes('fit')", timeout=30_000
    )
    page.screenshot(path=str(tmp_path / "encoding-after-switch.png"), full_page=True)
    assert not page.errors, page.errors
