"""Hugging Face Spaces: the Space's files, the GPU entry points, and the app in Spaces mode.

A real Space (and ZeroGPU) cannot be reached from here; what can be checked is checked: the front
matter and requirements.txt, that every GPU call crosses a pickling boundary and asks for a
duration sized to its chunk, that it sees the Gradio request that started its job, and the whole
app started as a Space starts it (``SPACE_ID`` set, real ``spaces`` package, no GPU) in Chromium.
"""

from __future__ import annotations

import functools
import os
import pickle
import re
import sys
import time
import tomllib
import types
from pathlib import Path

import numpy as np
import pytest

from backend.models import zerogpu
from tests.conftest import free_port, launch_and_wait, stop_launched
from tests.models_tiny import register_tiny

ROOT = Path(__file__).resolve().parents[1]


def front_matter() -> dict:
    import yaml

    text = (ROOT / "README.md").read_text()
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match, "README.md must start with the Space's YAML front matter between --- lines"
    return yaml.safe_load(match.group(1))


def test_requirements_txt_is_generated_from_pyproject():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import requirements
    finally:
        sys.path.pop(0)
    expected = requirements.render()
    assert (ROOT / "requirements.txt").read_text() == expected, "requirements.txt is stale: run python scripts/requirements.py"
    lines = [line for line in expected.splitlines() if line and not line.startswith("#")]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert len(lines) == len(project["dependencies"]) + len(project["optional-dependencies"]["spaces"])
    torch_pin = next(line for line in lines if line.startswith("torch"))
    major, minor = map(int, re.match(r"torch==(\d+)\.(\d+)", torch_pin).groups())
    assert (2, 8) <= (major, minor) <= (2, 11), f"{torch_pin}: ZeroGPU supports torch 2.8-2.11"
    assert any(line.startswith("spaces") for line in lines)


def test_front_matter_describes_a_gradio_space():
    from packaging.requirements import Requirement

    from backend.models.registry import DEFAULTS, get_model

    meta = front_matter()
    assert meta["sdk"] == "gradio" and (ROOT / meta["app_file"]).is_file()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    gradio = next(Requirement(r) for r in project["dependencies"] if r.startswith("gradio"))
    assert gradio.specifier.contains(str(meta["sdk_version"])), f"sdk_version {meta['sdk_version']} is outside {gradio}"
    assert re.fullmatch(r"3\.\d+", str(meta["python_version"]))
    assert meta["suggested_hardware"] in {"t4-small", "t4-medium", "a10g-small", "a10g-large", "a100-large", "zero-a10g"}
    assert 0 < len(meta["short_description"]) <= 60
    preloaded = {entry.split()[0] for entry in meta["preload_from_hub"]}
    # The default text-to-image model and the default captioner / image embedder of the Space come preloaded.
    assert get_model(DEFAULTS["text_to_image"]).hf_id in preloaded
    assert {"Salesforce/blip-image-captioning-base", "openai/clip-vit-base-patch32"} <= preloaded


@pytest.fixture()
def fake_spaces(monkeypatch):
    """A ``spaces`` module whose GPU decorator acts like ZeroGPU's boundary: arguments and result
    are pickled (they cross into a forked worker there), the duration is asked for per call, and
    the Gradio request it would charge is recorded."""
    calls: list[dict] = []

    def GPU(task=None, *, duration=None, size=None):
        def decorate(fn):
            @functools.wraps(fn)
            def run(*args, **kwargs):
                from gradio.context import LocalContext

                seconds = duration(*args, **kwargs) if callable(duration) else duration
                request = LocalContext.request.get(None)
                args, kwargs = pickle.loads(pickle.dumps((args, kwargs)))
                result = fn(*args, **kwargs)
                calls.append({"fn": fn.__name__, "model": args[0], "n": len(args[2][0]), "seconds": seconds, "request": request})
                return pickle.loads(pickle.dumps(result))

            return run

        return decorate(task) if task is not None else decorate

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=GPU))
    monkeypatch.setenv("SPACE_ID", "test/cortextual")
    monkeypatch.setattr(zerogpu, "_GPU_FUNCTIONS", {})
    return calls


@pytest.mark.slow
def test_gpu_entry_points_pickle_and_ask_for_durations_sized_to_each_chunk(fake_spaces, human, tmp_path):
    from backend.cache import Store
    from backend.models.device import Cancelled
    from backend.models.pool import ModelPool
    from backend.stages.captions import CHUNK, caption_dataset
    from backend.stages.embeddings import embed_texts_cached
    from backend.stages.inputs import load_images

    blip = register_tiny("blip").id
    plain = ModelPool(device="cpu")
    expected = caption_dataset(human, blip, store=Store(tmp_path / "plain.sqlite"), pool=plain)
    wrapped = zerogpu.GpuPool(ModelPool(device="cpu"))
    got = caption_dataset(human, blip, store=Store(tmp_path / "gpu.sqlite"), pool=wrapped)
    assert got == expected
    sizes = [min(CHUNK, human.n_stimuli - start) for start in range(0, human.n_stimuli, CHUNK)]
    assert [c["n"] for c in fake_spaces] == sizes
    assert {c["fn"] for c in fake_spaces} == {"_caption_call"} and {c["model"] for c in fake_spaces} == {blip}
    assert [c["seconds"] for c in fake_spaces] == [zerogpu.duration_seconds("caption", n) for n in sizes]
    assert zerogpu.duration_seconds("caption", 32) < zerogpu.duration_seconds("caption", 64) <= zerogpu.MAX_SECONDS

    fake_spaces.clear()
    texts = list(human.stimuli.captions)
    minilm = "sentence-transformers/all-MiniLM-L6-v2"
    vectors = embed_texts_cached(texts, minilm, store=Store(tmp_path / "gpu.sqlite"), pool=wrapped)
    reference = embed_texts_cached(texts, minilm, store=Store(tmp_path / "plain.sqlite"), pool=plain)
    np.testing.assert_array_equal(vectors, reference)
    assert [(c["fn"], c["n"], c["seconds"]) for c in fake_spaces] == [("_embed_call", len(texts), zerogpu.duration_seconds("embed", len(texts)))]

    fake_spaces.clear()
    simulated = caption_dataset(human, "sim-objects-only", store=Store(tmp_path / "gpu.sqlite"), pool=wrapped)
    assert simulated == list(human.captions["sim-objects-only"]) and fake_spaces == [], "simulated models ask for no GPU"
    with pytest.raises(Cancelled):  # cancel is checked before a GPU call (callbacks cannot cross into the worker)
        wrapped.get(blip).caption(load_images(human, [0]), cancel=lambda: True)
    assert fake_spaces == []


@pytest.mark.slow
def test_a_job_s_gpu_calls_see_the_request_that_started_it(fake_spaces, small_world):
    """On ZeroGPU the request's token pays for the GPU: the job queue runs the work in the
    submitting request's context, through the in-process client."""
    from gradio.context import LocalContext

    from backend.service.app import create_app
    from backend.service.client import BackendClient

    blip = register_tiny("blip").id
    client = BackendClient.in_process(create_app(prepare_demo=False, wrap_pool=zerogpu.GpuPool))
    request = object.__new__(type("FakeGradioRequest", (), {}))
    token = LocalContext.request.set(request)
    try:
        job = client.caption("demo-mouse", blip, max_new_tokens=7)  # parameters no other test uses: nothing cached
    finally:
        LocalContext.request.reset(token)
    deadline = time.monotonic() + 120
    while (job := client.job(job["id"]))["state"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    client.close()
    assert job["state"] == "done", job
    assert fake_spaces and all(c["request"] is request for c in fake_spaces)
    assert sum(c["n"] for c in fake_spaces) == job["total"]


# ------------------------------------------------------------------------------ the app as a Space


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """``python launch.py`` as Spaces runs it: SPACE_ID and GRADIO_SERVER_PORT set, no flags, a
    fresh cache (the demo world is generated at start-up)."""
    port = free_port()
    cache = tmp_path_factory.mktemp("space-cache")
    env = {**os.environ, "SPACE_ID": "test/cortextual", "GRADIO_SERVER_PORT": str(port), "CORTEXTUAL_CACHE": str(cache)}
    log = cache / "launch.log"
    started = time.monotonic()
    # Spaces mode binds 0.0.0.0; the test connects over loopback.
    process, url = launch_and_wait([], log, env=env)
    print(f"Spaces-mode start-up, demo world {os.environ.get('CORTEXTUAL_DEMO_SIZE')} generated: {time.monotonic() - started:.1f} s")
    yield {"url": url, "port": port, "pid": process.pid, "log": log}
    stop_launched(process)


@pytest.mark.browser
@pytest.mark.slow
def test_space_runs_in_one_process_and_the_page_works(space, tmp_path):
    import psutil
    from playwright.sync_api import sync_playwright

    from tests.test_browser import CHROMIUM_FLAGS, chromium_path

    process = psutil.Process(space["pid"])
    assert process.children(recursive=True) == [], "Spaces mode starts no backend process"
    listening = {(c.laddr.ip, c.laddr.port) for c in process.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
    assert listening == {("0.0.0.0", space["port"])}, f"one server, on every interface: {listening}"
    log = space["log"].read_text()
    assert "Spaces mode: backend in this process, GPU entry points wrapped with spaces.GPU" in log, log[-2000:]
    assert "demo world" in log, "the demo world was generated at start-up"

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1300})
        errors = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(space["url"])
        page.wait_for_selector("#ctx-gallery img", timeout=120_000)
        page.wait_for_function("(+document.querySelector('#ctx-brain .ctx-brain')?.dataset.renders || 0) > 0", timeout=60_000)
        before = page.inner_text("#ctx-captions")
        page.locator("#ctx-gallery img").nth(5).click()
        page.wait_for_function("document.querySelector('#ctx-stimulus-title')?.innerText.includes('#5')", timeout=30_000)
        after = page.inner_text("#ctx-captions")

        page.locator("#ctx-runs").get_by_text("Run models").first.click()
        page.click("#ctx-embed-run")  # the real MiniLM through the GPU entry point, as a job
        page.wait_for_function("document.querySelector('#ctx-job-status')?.innerText.includes('embed-captions finished')", timeout=120_000)
        status = page.inner_text("#ctx-job-status")
        page.screenshot(path=str(tmp_path / "space.png"), full_page=True)
        browser.close()

    assert "Reference caption" in before and after != before, "captions follow the selected stimulus"
    assert "dim: 384" in status
    assert not errors, errors
