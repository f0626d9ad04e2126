"""End to end: launch.py as a user runs it, the page in headless Chromium, a stimulus switch."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

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
    port = free_port()
    env = dict(os.environ)
    env.pop("CORTEXTUAL_DEMO_SIZE", None)  # the real default world, as a user gets it
    log = tmp_path_factory.mktemp("launch") / "launch.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "launch.py", "--port", str(port)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        assert process.poll() is None, f"launch.py exited: {log.read_text()[-2000:]}"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"explorer did not answer: {log.read_text()[-2000:]}"
        time.sleep(0.5)
    yield url
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


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

    assert "sim-objects-only" in caption_status and "captioned: 1100" in caption_status
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
