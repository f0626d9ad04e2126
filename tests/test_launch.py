"""The launcher: dataset listing, the supervised backend process and its restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.service.client import BackendClient, BackendUnavailable
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


def test_datasets_command_lists_the_demo_world_with_sizes(small_world):
    out = subprocess.run(
        [sys.executable, "launch.py", "datasets"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    ).stdout
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["id", "space", "stimuli", "units"]
    human = next(line for line in lines if line.startswith("demo-human"))
    assert "surface" in human and "20,484" in human and "MiB" in human and "ready" in human
    assert any(line.startswith("demo-mouse") and "neurons" in line for line in lines)


def test_host_defaults_to_loopback():
    import launch

    parser_help = subprocess.run([sys.executable, "launch.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    assert "127.0.0.1" in parser_help
    assert launch.DEFAULT_PORT == 7860


def wait_health(client: BackendClient, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.health()
        except BackendUnavailable:
            assert time.monotonic() < deadline, "backend did not come up"
            time.sleep(0.2)


@pytest.mark.slow
def test_supervisor_restarts_a_dead_backend(small_world):
    import launch

    supervisor = launch.BackendSupervisor("127.0.0.1", free_port())
    supervisor.start()
    client = BackendClient(supervisor.url, timeout=5)
    try:
        first = wait_health(client)
        assert first["demo"]["state"] in ("ready", "generating")
        supervisor.watch()
        os.kill(first["pid"], signal.SIGKILL)
        with pytest.raises(BackendUnavailable):  # the request during the outage fails, clearly
            time.sleep(0.3)
            client.health()
        second = wait_health(client)
        assert second["pid"] != first["pid"]
        assert supervisor.restarts == 1
        assert client.datasets()[0]["id"] == "demo-human", "cached data survive the restart"
    finally:
        supervisor.stop()
        client.close()


@pytest.mark.slow
def test_viewer_uses_a_backend_that_is_already_running(backend_url):
    """--backend-url: no backend process is started; the page is served from the given one."""
    import httpx

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "launch.py", "--backend-url", backend_url, "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "viewer did not answer"
            time.sleep(0.3)
        config = httpx.get(f"http://127.0.0.1:{port}/config", timeout=10).json()
        assert any("Cortextual" in str(c.get("props", {}).get("value", "")) for c in config["components"])
        # Uploads are capped at the corpus limit by Gradio itself, before anything is stored.
        from viewer.model_runs import MAX_CORPUS_UPLOAD

        upload = f"http://127.0.0.1:{port}/gradio_api/upload"
        too_big = httpx.post(upload, files={"files": ("corpus.txt", b"a caption\n" * (MAX_CORPUS_UPLOAD // 10 + 1))}, timeout=60)
        assert too_big.status_code == 413, too_big.text[:200]
        small = httpx.post(upload, files={"files": ("corpus.txt", b"a caption\nanother one\n")}, timeout=60)
        assert small.status_code == 200, small.text[:200]
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)
    assert "backend ready at " + backend_url in process.stdout.read()


def test_import_command_writes_a_listed_dataset_and_explains_errors(tmp_path):
    from tests.test_import_nsd import write_nsd

    source = tmp_path / "nsd"
    write_nsd(source)
    done = subprocess.run(
        [sys.executable, "launch.py", "import", "nsd", "--root", str(source), "--id", "mini-nsd", "--mesh", "fsaverage3", "--sessions", "1-2"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "[import] done" in done.stdout and "--dataset mini-nsd" in done.stdout
    listed = subprocess.run([sys.executable, "launch.py", "datasets"], cwd=ROOT, capture_output=True, text=True, timeout=120).stdout
    assert any(line.startswith("mini-nsd") and "surface" in line for line in listed.splitlines())

    again = subprocess.run(
        [sys.executable, "launch.py", "import", "nsd", "--root", str(source), "--id", "mini-nsd", "--mesh", "fsaverage3"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert again.returncode == 1 and "already exists" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    bad = subprocess.run(
        [sys.executable, "launch.py", "import", "nsd", "--root", str(source), "--colour", "blue"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert bad.returncode == 1 and "colour" in bad.stderr


@pytest.mark.slow
def test_a_job_interrupted_by_a_backend_crash_is_reported_and_run_again(small_world, tmp_path, monkeypatch):
    """kill -9 mid-job: the restarted backend reports the job as interrupted (not 404), and the
    viewer's job follower runs it again once, to completion."""
    import launch
    from tests.conftest import CACHE_ROOT
    from viewer.model_runs import follow_job, job_summary

    # A store of its own (the same datasets), so the fit made here is not found by other tests.
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "datasets").symlink_to(CACHE_ROOT / "datasets", target_is_directory=True)
    monkeypatch.setenv("CORTEXTUAL_CACHE", str(cache))
    supervisor = launch.BackendSupervisor("127.0.0.1", free_port())
    supervisor.start()
    client = BackendClient(supervisor.url, timeout=10)
    started: list[dict] = []

    def start() -> dict:
        job = client.encode("demo-human", "sim-one-object", "sentence-transformers/all-MiniLM-L6-v2")
        started.append(job)
        if len(started) == 1:  # the backend dies while its first job is queued or running
            os.kill(client.health()["pid"], signal.SIGKILL)
        return job

    try:
        wait_health(client)
        quiet = lambda *args, **kwargs: None  # noqa: E731  (no progress bar here)
        assert follow_job(client, lambda: client.caption("demo-human", "sim-one-object"), quiet)["state"] == "done"
        supervisor.watch()
        job = follow_job(client, start, quiet)
        assert job["state"] == "done" and job["restarted"], job
        assert "run again after the backend restarted" in job_summary(job)
        assert len(started) == 2 and started[0]["id"] != started[1]["id"]
        first = client.job(started[0]["id"])
        assert first["state"] == "interrupted" and "restarted" in first["message"], first
        assert supervisor.restarts == 1
    finally:
        supervisor.stop()
        client.close()


def test_a_taken_backend_port_is_said_or_refused(capsys):
    import socket

    import launch

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        other = launch._backend_port(None, port)
        assert other != port and f"port {port} is taken" in capsys.readouterr().out
        with pytest.raises(SystemExit, match=f"--backend-port {port} is taken"):
            launch._backend_port(port, port + 1)
    free = free_port()
    assert launch._backend_port(None, free) == free and capsys.readouterr().out == ""
