"""Shared fixtures: an isolated cache, a small demo world, a running backend."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# Tests never touch the user's cache. The in-process demo world is small (same generator, fewer
# stimuli) to keep the suite fast; the end-to-end test launches the full default one.
CACHE_ROOT = Path(tempfile.mkdtemp(prefix="cortextual-test-cache-"))
os.environ["CORTEXTUAL_CACHE"] = str(CACHE_ROOT)
os.environ["NILEARN_DATA"] = str(CACHE_ROOT / "nilearn")
SMALL_DEMO_SIZE = "120x30"
RUNNING: dict = {}
os.environ["CORTEXTUAL_DEMO_SIZE"] = SMALL_DEMO_SIZE
# Backends started by tests do not compile UMAP kernels in the background (a minute of CPU each);
# tests/test_manifolds.py checks the warm-up itself.
os.environ["CORTEXTUAL_WARM_KERNELS"] = "0"


@pytest.fixture(scope="session")
def small_world() -> dict[str, Path]:
    """id -> folder of the small demo world (seed 0), generated once per test session."""
    from backend.data.demo.world import ensure_demo_world

    return ensure_demo_world()


@pytest.fixture(scope="session")
def human(small_world):
    """The small world's simulated human, opened directly (not through the backend)."""
    from backend.data.folder import load_folder

    return load_folder(small_world["demo-human"], "demo-human")


@pytest.fixture(scope="session")
def mouse(small_world):
    from backend.data.folder import load_folder

    return load_folder(small_world["demo-mouse"], "demo-mouse")


@pytest.fixture(scope="session")
def backend_url(small_world) -> str:
    """A real backend (uvicorn on a free loopback port, in a thread) serving the small world."""
    import uvicorn

    from backend.service.app import create_app

    port = free_port()
    app = create_app()
    RUNNING["services"] = app.state.services
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "backend did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(5)


@pytest.fixture()
def backend_services(backend_url):
    """The in-process backend's Services (store, model pool, jobs), to look behind the API."""
    return RUNNING["services"]


@pytest.fixture()
def client(backend_url):
    from backend.service.client import BackendClient

    c = BackendClient(backend_url)
    yield c
    c.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_and_wait(args: list[str], log: Path, *, env: dict | None = None, timeout: float = 300):
    """Start ``python launch.py ARGS`` in its own process group (output to ``log``) and wait until
    its page answers on the ``--port`` it was given (or $GRADIO_SERVER_PORT); returns (process, url).
    Stop it with :func:`stop_launched`."""
    import subprocess
    import sys

    import httpx

    env = dict(os.environ if env is None else env)
    port = args[args.index("--port") + 1] if "--port" in args else env["GRADIO_SERVER_PORT"]
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "launch.py", *args], cwd=Path(__file__).resolve().parents[1], env=env,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, f"launch.py exited: {log.read_text()[-2000:]}"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"the page did not answer: {log.read_text()[-2000:]}"
        time.sleep(0.5)


def stop_launched(process, grace: float = 10) -> None:
    """Stop a launcher started by :func:`launch_and_wait` and its children (its process group):
    SIGTERM, then SIGKILL if it is still there after ``grace`` seconds."""
    import signal
    import subprocess

    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(grace)


@pytest.fixture(scope="session")
def numba_cache_dir(pytestconfig, tmp_path_factory) -> Path:
    """Where UMAP's compiled kernels are cached: pytest's cache folder, kept across sessions so a
    second run skips the minute of compilation, or a temp folder when the cache plugin is off."""
    cache = getattr(pytestconfig, "cache", None)
    return Path(cache.mkdir("cortextual-numba")) if cache is not None else tmp_path_factory.mktemp("numba")
