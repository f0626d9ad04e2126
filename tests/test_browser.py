"""End to end: launch.py as a user runs it, the page in headless Chromium, a stimulus switch."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from tests.conftest import free_port, launch_and_wait, stop_launched

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    for candidate in (os.environ.get("CORTEXTUAL_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail("no Chromium found: install Debian's chromium (run.sh test does) or set CORTEXTUAL_CHROMIUM")


@pytest.fixture(scope="module")
def explorer_url(tmp_path_factory):
    """launch.py with the full default demo world, in a process group we can stop."""
    env = dict(os.environ)
    env.pop("CORTEXTUAL_DEMO_SIZE", None)  # the real default world, as a user gets it
    log = tmp_path_factory.mktemp("launch") / "launch.log"
    process, url = launch_and_wait(["--port", str(free_port())], log, env=env)
    yield url
    stop_launched(process)


def canvas_digest(page, selector: str) -> str:
    return page.evaluate(
        """(sel) => { const c = document.querySelector(sel + ' canvas');
                      return c ? c.toDataURL().slice(-4000) : ''; }""",
        selector,
    )


@pytest.mark.browser
@pytest.mark.slow
def test_selecting_a_stimulus_updates_brain_and_captions(explorer_url, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1300})
        errors = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(explorer_url)
        page.wait_for_selector("#ctx-gallery img", timeout=120_000)
        page.wait_for_function("document.querySelector('#ctx-stimulus-title')?.innerText.includes('#0')", timeout=60_000)
        page.wait_for_function("(+document.querySelector('#ctx-brain .ctx-brain')?.dataset.renders || 0) > 0", timeout=60_000)
        before_brain = canvas_digest(page, "#ctx-brain")
        before_captions = page.inner_text("#ctx-captions")
        assert "Reference caption" in before_captions and len(before_brain) > 1000

        page.locator("#ctx-gallery img").nth(5).click()
        page.wait_for_function("document.querySelector('#ctx-stimulus-title')?.innerText.includes('#5')", timeout=30_000)
        page.wait_for_function(
            "(before) => { const c = document.querySelector('#ctx-brain canvas'); return c && c.toDataURL().slice(-4000) !== before; }",
            arg=before_brain,
            timeout=30_000,
        )
        after_captions = page.inner_text("#ctx-captions")
        after_brain = canvas_digest(page, "#ctx-brain")
        page.screenshot(path=str(tmp_path / "explorer.png"), full_page=True)
        browser.close()

    assert after_captions != before_captions, "captions follow the selected stimulus"
    assert after_brain != before_brain, "the brain panel follows the selected stimulus"
    assert (tmp_path / "explorer.png").stat().st_size > 50_000
    assert not errors, errors
    print(f"screenshot: {tmp_path / 'explorer.png'}")


@pytest.mark.browser
@pytest.mark.slow
def test_models_run_as_jobs_from_the_page_with_a_progress_bar(explorer_url, tmp_path):
    """A simulated captioner and the real MiniLM embedder run as backend jobs from the viewer."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1400})
        page.goto(explorer_url)
        page.wait_for_function("(+document.querySelector('#ctx-brain .ctx-brain')?.dataset.renders || 0) > 0", timeout=120_000)
        page.locator("#ctx-runs").get_by_text("Run models").first.click()
        page.locator("#ctx-captioner input").click()
        page.get_by_role("option", name="Objects only (simulated) · simulated").click()
        page.click("#ctx-caption-run")
        page.wait_for_selector(".progress-level-inner", timeout=20_000)  # the job's progress bar
        page.wait_for_function("document.querySelector('#ctx-job-status')?.innerText.includes('caption finished')", timeout=120_000)
        caption_status = page.inner_text("#ctx-job-status")

        page.click("#ctx-embed-run")  # MiniLM on the reference captions
        page.wait_for_function(
            "document.querySelector('#ctx-job-status')?.innerText.includes('embed-captions finished')", timeout=120_000
        )
        embed_status = page.inner_text("#ctx-job-status")

        page.click("#ctx-generate-run")
        page.wait_for_function("document.querySelectorAll('#ctx-reconstructions img').length >= 3", timeout=60_000)
        page.screenshot(path=str(tmp_path / "jobs.png"), full_page=True)
        browser.close()

    assert "sim-objects-only" in caption_status and "captioned: 1200" in caption_status
    assert "all-MiniLM-L6-v2" in embed_status and "dim: 384" in embed_status


@pytest.fixture(scope="module")
def imported_datasets(tmp_path_factory) -> dict[str, str]:
    """Miniature NSD, Algonauts and Allen downloads imported into the explorer's cache."""
    from backend.data.importers import IMPORTERS
    from tests.test_import_algonauts import write_algonauts, write_coco
    from tests.test_import_allen import write_nwb
    from tests.test_import_nsd import write_nsd

    base = tmp_path_factory.mktemp("sources")
    write_nsd(base / "nsd")
    write_algonauts(base / "algonauts")
    write_coco(base / "algonauts", shared={27, 64, 8})
    (base / "allen").mkdir()
    write_nwb(base / "allen" / "ophys_experiment_1.nwb", seed=1, area="VISp", depth="175 microns", genotype="Cux2-CreERT2/wt", n_cells=6, repeats=3)
    write_nwb(base / "allen" / "ophys_experiment_2.nwb", seed=2, area="VISl", depth="375 microns", genotype="Rbp4-Cre_KL100/wt", n_cells=4, repeats=3)
    kinds = {"nsd": {"mesh": "fsaverage3"}, "algonauts": {}, "allen": {}}
    return {kind: IMPORTERS[kind](base / kind, dataset_id=f"browser-{kind}", **options).name for kind, options in kinds.items()}


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize(("kind", "panel"), [("nsd", "#ctx-brain .ctx-brain"), ("algonauts", "#ctx-brain .ctx-brain"), ("allen", "#ctx-mouse .ctx-mouse")])
def test_imported_datasets_open_in_the_viewer(explorer_url, imported_datasets, kind, panel, tmp_path):
    from playwright.sync_api import sync_playwright

    dataset_id = imported_datasets[kind]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1300})
        errors = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(explorer_url)
        page.wait_for_function("(+document.querySelector('#ctx-brain .ctx-brain')?.dataset.renders || 0) > 0", timeout=120_000)
        page.locator("#ctx-dataset input").click()
        page.get_by_role("option", name=f"[{dataset_id}]").click()
        page.wait_for_function(f"document.querySelector('#ctx-dataset-info')?.innerText.length > 0 && document.querySelector('#ctx-stimulus-title')?.innerText.includes('#0')", timeout=60_000)
        page.wait_for_function(f"(+document.querySelector('{panel}')?.dataset.renders || 0) > 0", timeout=60_000)
        page.wait_for_function("document.querySelectorAll('#ctx-gallery img').length > 0", timeout=60_000)
        info = page.inner_text("#ctx-dataset-info")
        page.screenshot(path=str(tmp_path / f"{kind}.png"), full_page=True)
        browser.close()
    assert "stimuli" in info and not errors, errors


def renders(selector: str) -> str:
    """A JS condition: the canvas panel under ``selector`` has drawn at least once."""
    return f"(+document.querySelector('{selector}')?.dataset.renders || 0) > 0"


def status_says(selector: str, text: str) -> str:
    return f"document.querySelector('{selector}')?.innerText.includes({text!r})"


def text_of(page, selector: str) -> str:
    return page.inner_text(selector)


@pytest.mark.browser
@pytest.mark.slow
def test_every_panel_is_populated(explorer_url, tmp_path):
    """Each analysis runs from its panel on the default demo world and its panel fills in:
    decoded caption, reconstruction from the brain and manifolds in Explore, encoding map, text -> brain,
    controls, captioner comparison, RSA matrices, planted truth."""
    from playwright.sync_api import sync_playwright

    shots = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1500})
        errors = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(explorer_url)
        page.wait_for_function(renders("#ctx-brain .ctx-brain"), timeout=120_000)

        # Explore: a test stimulus, its caption and image decoded from the brain.
        page.locator("#ctx-split").get_by_text("test", exact=True).click()
        page.wait_for_function(status_says("#ctx-page", "test"), timeout=30_000)
        page.locator("#ctx-gallery img").nth(0).click()
        page.wait_for_function(status_says("#ctx-stimulus-title", "test"), timeout=30_000)
        page.locator("#ctx-runs").get_by_text("Run models").first.click()
        page.click("#ctx-decode-run")
        page.wait_for_function(status_says("#ctx-job-status", "generate-images finished"), timeout=300_000)
        page.wait_for_function(status_says("#ctx-captions", "Decoded from the brain"), timeout=30_000)
        page.wait_for_function(
            "[...document.querySelectorAll('#ctx-reconstructions img')].some(i => (i.alt || i.closest('button')?.innerText || '').includes('decoded from the brain'))"
            " || document.querySelector('#ctx-reconstructions')?.innerText.includes('decoded from the brain')",
            timeout=30_000,
        )
        decoded_row = page.inner_text("#ctx-captions")

        # Manifolds: computed once, then the ringed point follows the selection.
        page.click("#ctx-manifold-run")
        page.wait_for_function(status_says("#ctx-manifold-status", "Mapped"), timeout=300_000)
        page.wait_for_function("document.querySelectorAll('#ctx-manifold .scatterlayer path.point').length > 100", timeout=60_000)
        marked_before = page.get_attribute("#ctx-manifold [data-selected]", "data-selected")
        page.locator("#ctx-gallery img").nth(1).click()
        page.wait_for_function(
            "(before) => { const m = document.querySelector('#ctx-manifold [data-selected]'); return m && m.dataset.selected && m.dataset.selected !== before; }",
            arg=marked_before,
            timeout=30_000,
        )
        shots["explore"] = tmp_path / "explore.png"
        page.screenshot(path=str(shots["explore"]), full_page=True)

        # Encoding maps and text -> brain.
        page.get_by_role("tab", name="Encoding maps").click()
        page.click("#ctx-enc-fit")
        page.wait_for_function(status_says("#ctx-enc-status", "encode finished"), timeout=300_000)
        page.wait_for_function(renders("#ctx-enc-brain .ctx-brain"), timeout=60_000)
        page.fill("#ctx-t2b-text textarea", "a large dog to the left of a small cat in a grassy field")
        page.press("#ctx-t2b-text textarea", "Enter")
        page.wait_for_function(renders("#ctx-t2b-brain .ctx-brain"), timeout=60_000)
        shots["encoding"] = tmp_path / "encoding.png"
        page.screenshot(path=str(shots["encoding"]), full_page=True)

        # Controls: full caption against word-level controls.
        page.get_by_role("tab", name="Controls").click()
        page.click("#ctx-controls-run")
        page.wait_for_function(status_says("#ctx-controls-status", "Compared 3 controls"), timeout=300_000)
        page.wait_for_function(renders("#ctx-controls-brain .ctx-brain"), timeout=60_000)
        controls_table = text_of(page, "#ctx-controls-table")
        controls_page = page.content()
        shots["controls"] = tmp_path / "controls.png"
        page.screenshot(path=str(shots["controls"]), full_page=True)

        # Captioner comparison: one point per caption source.
        page.get_by_role("tab", name="Captioner comparison").click()
        page.click("#ctx-compare-run")
        page.wait_for_function(status_says("#ctx-compare-status", "Compared"), timeout=480_000)
        compare_table = text_of(page, "#ctx-compare-table")
        page.wait_for_selector("#ctx-compare-plot canvas, #ctx-compare-plot svg", timeout=30_000)
        shots["comparison"] = tmp_path / "comparison.png"
        page.screenshot(path=str(shots["comparison"]), full_page=True)

        # RSA: the table and the matrices.
        page.get_by_role("tab", name="RSA").click()
        page.click("#ctx-rsa-run")
        page.wait_for_function(status_says("#ctx-rsa-status", "RSA over"), timeout=300_000)
        page.wait_for_function("document.querySelectorAll('#ctx-rsa-rdms .heatmaplayer image, #ctx-rsa-rdms .hm image').length > 0", timeout=60_000)
        rsa_table = text_of(page, "#ctx-rsa-table")
        shots["rsa"] = tmp_path / "rsa.png"
        page.screenshot(path=str(shots["rsa"]), full_page=True)

        # Planted truth.
        page.get_by_role("tab", name="Planted truth").click()
        page.wait_for_function(renders("#ctx-truth-brain .ctx-brain"), timeout=60_000)
        browser.close()

    assert "cosine" in decoded_row, "the decoded caption comes with its similarity to the reference"
    regions = ("EVC", "animate", "food", "place", "caption")
    assert all(word in controls_table for word in (*regions, "mean of word embeddings", "nouns only"))
    # the demo grammar has no verbs: that control is not plotted, and the page says why
    assert "verbs only" not in controls_table and "verbs only: not available (no caption has any verb)" in controls_page
    assert all(source in compare_table for source in ("reference", "sim-objects-only", "sim-one-object", "sim-noisy-words"))
    assert all(region in rsa_table for region in regions)
    assert all(path.stat().st_size > 30_000 for path in shots.values())
    assert not errors, errors
    print("screenshots:", *shots.values())


@pytest.mark.browser
@pytest.mark.slow
def test_a_dataset_folder_given_to_the_launcher_opens_in_the_page(tmp_path):
    """`launch.py --dataset DIR`: the folder is linked into the catalog under an id, and the page
    opens it (the page once asked the backend for /api/datasets/<absolute path>, which is no route)."""
    from playwright.sync_api import sync_playwright

    from tests.test_folder import make_folder

    folder = make_folder(tmp_path / "my lab's data")
    log = tmp_path / "launch.log"
    process, url = launch_and_wait(["--dataset", str(folder), "--port", str(free_port())], log, timeout=180)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1300})
            errors = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(url)
            page.wait_for_function(status_says("#ctx-stimulus-title", "#0"), timeout=120_000)
            page.wait_for_function(renders("#ctx-mouse .ctx-mouse"), timeout=60_000)
            info = page.inner_text("#ctx-dataset-info")
            page.screenshot(path=str(tmp_path / "folder.png"), full_page=True)
            browser.close()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)
    output = log.read_text()
    assert "in the catalog as 'my_lab_s_data'" in output, output[-2000:]
    assert "stimuli" in info, info
    assert "Traceback" not in output and "Not Found" not in info and not errors, (output[-2000:], errors)
