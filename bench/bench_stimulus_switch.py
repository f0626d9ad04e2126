"""What one stimulus switch costs: bytes, server time, latency under load, click to repaint.

    .venv/bin/python bench/bench_stimulus_switch.py [--switches 40] [--clients 20] [--no-browser] [--numba]

Part 1 (in process, a real backend on loopback):
  - the switch read (/stimuli/{i}/switch, one request): its bytes, of which the per-unit values
    (float16; budget 100 KB), the backend's time for it and the viewer handler's whole time
    (request + decoding + panel updates; budget 150 ms);
  - per-switch latency with ``--clients`` concurrent clients (threads, each its own connection),
    p50 and p95 (goal < 300 ms), for the one-request switch and for the eight separate reads a
    switch made before (metadata, two image sizes, responses, captions, captioners, decoded
    caption, reconstructions) as the reference.
Part 2 (browser): launch.py as users run it, headless Chromium clicking through the gallery; the
bytes Chromium receives per switch and the time from click to the repainted brain panel (its
root element, elem_id ctx-brain, counts repaints in ``data-paints``; without that attribute the
change of the captions panel is timed instead, and the report says which).
Part 3 (``--numba``): UMAP as the manifolds job runs it, in a fresh process with an empty numba
cache folder and again with the folder the first run filled (what launch.py's NUMBA_CACHE_DIR gives).

Prints wall times and the process's CPU time; the machine's load average is printed too, since
other work on the machine inflates every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

BUDGET_MS = 150.0
BYTES_BUDGET = 100_000
GOAL_MS = 300.0
RENDERER = "sim-scene-renderer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_backend():
    import uvicorn

    from backend.service.app import create_app
    from backend.service.client import BackendClient

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    client = BackendClient(url)
    while True:
        try:
            if client.health()["demo"]["state"] == "ready":
                return server, url, client
        except Exception:
            pass
        time.sleep(0.5)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def separate_reads(client, ds: str, i: int) -> None:
    """The eight reads a switch made before the switch endpoint (the reference)."""
    from backend.service.client import BackendError

    client.stimulus(ds, i)
    client.stimulus_image(ds, i, size=320)
    client.stimulus_image(ds, i, size=256)
    client.responses(ds, i)
    client.captions(ds, i)
    client.captioners(ds)
    for read in (lambda: client.decoded(ds, i), lambda: client.brain_caption(ds, i)):
        try:
            read()
        except BackendError:
            pass
    client.reconstructions(ds, i, RENDERER)


def concurrent(url: str, clients: int, switches: int, n_stimuli: int, one_request: bool) -> list[float]:
    """Per-switch latencies (ms) of ``clients`` threads each making ``switches`` switches at once."""
    from backend.service.client import BackendClient

    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def worker(k: int) -> None:
        client = BackendClient(url)
        client.switch("demo-human", k) if one_request else separate_reads(client, "demo-human", k)  # connection warm
        barrier.wait()
        mine = []
        for j in range(switches):
            i = (k * 37 + j * 11) % n_stimuli
            t0 = time.perf_counter()
            if one_request:
                client.switch("demo-human", i, model=RENDERER)
            else:
                separate_reads(client, "demo-human", i)
            mine.append(1000 * (time.perf_counter() - t0))
        with lock:
            latencies.extend(mine)
        client.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def in_process(switches: int, clients: int) -> None:
    import gradio as gr
    import httpx

    from viewer.app import SURFACE_VIEWS, Explorer
    from viewer.brain_panel import BrainPanel
    from viewer.mouse_panel import MousePanel

    server, url, client = start_backend()
    with gr.Blocks():
        brain, mouse = BrainPanel(views=SURFACE_VIEWS), MousePanel()
    explorer = Explorer(client, brain, mouse)
    print(f"load average before: {os.getloadavg()}")

    for dataset_id in ("demo-human", "demo-mouse"):
        space = explorer.unit_space(dataset_id)
        n = explorer.detail(dataset_id)["n_stimuli"]
        t0 = time.perf_counter()
        static = explorer.surface_static(brain, dataset_id) if space["kind"] == "surface" else mouse.static_payload(space)
        static_ms = 1000 * (time.perf_counter() - t0)
        static_bytes = len(json.dumps(static))
        explorer.show_stimulus(dataset_id, 0, RENDERER)  # warm caches (first geometry use)
        handler, route, total_bytes, value_bytes, cpu = [], [], [], [], []
        for i in range(1, switches + 1):
            row = (i * 7) % n
            c0, t0 = time.process_time(), time.perf_counter()
            explorer.show_stimulus(dataset_id, row, RENDERER)
            handler.append(1000 * (time.perf_counter() - t0))
            cpu.append(1000 * (time.process_time() - c0))
            t0 = time.perf_counter()
            raw = httpx.get(f"{url}/api/datasets/{dataset_id}/stimuli/{row}/switch", params={"model": RENDERER}).content
            route.append(1000 * (time.perf_counter() - t0))
            total_bytes.append(len(raw))
            value_bytes.append(len(json.loads(raw)["responses"]["data"]))
        print(f"\n{dataset_id} ({space['kind']}, {explorer.detail(dataset_id)['n_units']:,} units, {n:,} stimuli)")
        print(f"  static payload, once per dataset      {static_bytes / 1e3:8.1f} KB  ({static_ms:.0f} ms to build, cached after)")
        print(f"  switch answer (one request)           {statistics.median(total_bytes) / 1e3:8.1f} KB  (images included)")
        print(f"  of which per-unit values (float16)    {statistics.median(value_bytes) / 1e3:8.1f} KB  (budget {BYTES_BUDGET / 1e3:.0f} KB)")
        print(f"  backend time for the switch read      {statistics.median(route):8.1f} ms median, p95 {pct(route, 0.95):.1f} ms (loopback)")
        print(f"  viewer handler per switch (server)    {statistics.median(handler):8.1f} ms median, p95 {pct(handler, 0.95):.1f} ms"
              f"  (budget {BUDGET_MS:.0f} ms; CPU of this process {statistics.median(cpu):.1f} ms)")

    n = explorer.detail("demo-human")["n_stimuli"]
    per_client = max(3, switches // 4)
    for one_request, name in ((True, "one request (switch read)"), (False, "eight separate reads (before)")):
        t0 = time.perf_counter()
        latencies = concurrent(url, clients, per_client, n, one_request)
        wall = time.perf_counter() - t0
        print(f"\n{clients} concurrent clients, {per_client} switches each, {name}")
        print(f"  per-switch latency p50 {statistics.median(latencies):7.0f} ms   p95 {pct(latencies, 0.95):7.0f} ms"
              f"   (goal < {GOAL_MS:.0f} ms; {len(latencies) / wall:.1f} switches/s)")
    print(f"load average after: {os.getloadavg()}")
    server.should_exit = True


def in_browser(switches: int) -> None:
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("CORTEXTUAL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "launch.py", "--port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        import httpx

        url = f"http://127.0.0.1:{port}"
        t_start = time.perf_counter()
        while True:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        launch_s = time.perf_counter() - t_start
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=chromium, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
            )
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            cdp = page.context.new_cdp_session(page)
            cdp.send("Network.enable")
            received = {"bytes": 0}
            cdp.on("Network.dataReceived", lambda e: received.__setitem__("bytes", received["bytes"] + e["encodedDataLength"]))
            cdp.on("Network.webSocketFrameReceived", lambda e: received.__setitem__("bytes", received["bytes"] + len(e["response"]["payloadData"])))
            t0 = time.perf_counter()
            page.goto(url)
            page.wait_for_function("(document.querySelector('#ctx-captions')?.innerText || '').includes('Reference')", timeout=180_000)
            painted = page.wait_for_function(
                "() => document.querySelector('#ctx-brain[data-paints], #ctx-brain [data-paints]') !== null", timeout=60_000
            ) if _has_paints(page) else None
            first_page_s = time.perf_counter() - t0
            first_bytes = received["bytes"]
            measure = "repainted brain panel (data-paints)" if painted is not None else "changed captions panel (no data-paints on #ctx-brain)"
            per_switch, latency = [], []
            for i in range(1, switches + 1):
                before = page.evaluate(PAINT_STATE)
                received["bytes"] = 0
                t0 = time.perf_counter()
                page.locator("#ctx-gallery img").nth(i % 24).click()
                page.wait_for_function(f"(b) => ({PAINT_STATE})() !== b", arg=before, timeout=30_000)
                latency.append(1000 * (time.perf_counter() - t0))
                time.sleep(0.3)  # let the stimulus image finish arriving
                per_switch.append(received["bytes"])
            browser.close()
        print("\nbrowser (headless Chromium at 1600x1000, launch.py on the default demo world)")
        print(f"  launch.py to first answer             {launch_s:8.1f} s (demo world already in the cache)")
        print(f"  first page load to captions           {first_page_s:8.1f} s, {first_bytes / 1e6:.2f} MB")
        print(f"  bytes received per switch (median)    {statistics.median(per_switch) / 1e3:8.1f} KB  (incl. images)")
        print(f"  click to {measure}: median {statistics.median(latency):.0f} ms, p95 {pct(latency, 0.95):.0f} ms")
    finally:
        os.killpg(process.pid, signal.SIGTERM)


#: What changes when a switch has been painted: the brain panel's repaint counter where part A's
#: panel keeps one, else the captions panel's text.
PAINT_STATE = """() => { const b = document.querySelector('#ctx-brain[data-paints], #ctx-brain [data-paints]');
  return b ? 'p' + b.dataset.paints : 'c' + (document.querySelector('#ctx-captions')?.innerText || ''); }"""


def _has_paints(page) -> bool:
    try:
        page.wait_for_function("() => document.querySelector('#ctx-brain[data-paints], #ctx-brain [data-paints]') !== null", timeout=20_000)
        return True
    except Exception:
        return False


UMAP_SCRIPT = """
import sys, time
sys.path.insert(0, {root!r})
import numpy as np
from backend.analysis.manifolds import umap_embedding
x = np.random.default_rng(0).normal(size=({n}, 384)).astype(np.float32)
t0, c0 = time.perf_counter(), time.process_time()
umap_embedding(x, metric="cosine")
first = (time.perf_counter() - t0, time.process_time() - c0)
t0, c0 = time.perf_counter(), time.process_time()
umap_embedding(x, metric="cosine")
print(round(first[0], 1), round(first[1], 1), round(time.perf_counter() - t0, 1), round(time.process_time() - c0, 1))
"""


def numba_cache(n: int = 1200) -> None:
    """UMAP (as the manifolds stage runs it) in a fresh process: with an empty numba cache folder,
    then with the folder that run filled (what launch.py's NUMBA_CACHE_DIR keeps across restarts);
    each process also times a second call, the cost without any compilation."""
    folder = Path(tempfile.mkdtemp(prefix="numba-bench-"))
    script = UMAP_SCRIPT.format(root=str(ROOT), n=n)
    print(f"\nUMAP of {n} x 384 in a fresh process (numba cache {folder})")
    for label in ("empty numba cache (first use after install)", "numba cache filled by the run before"):
        env = {**os.environ, "NUMBA_CACHE_DIR": str(folder)}
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=ROOT)
        if out.returncode:
            print(f"  {label}: failed: {out.stderr.strip().splitlines()[-1]}")
            continue
        first_wall, first_cpu, again_wall, again_cpu = (float(v) for v in out.stdout.split()[-4:])
        print(f"  {label:46s} first call {first_wall:6.1f} s wall / {first_cpu:5.1f} s CPU;"
              f" second call {again_wall:5.1f} s / {again_cpu:5.1f} s; process {time.perf_counter() - t0:5.1f} s")
    shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--switches", type=int, default=40)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--numba", action="store_true", help="also time UMAP in a fresh process with and without numba's cache")
    args = parser.parse_args()
    in_process(args.switches, args.clients)
    if not args.no_browser:
        in_browser(min(args.switches, 20))
    if args.numba:
        numba_cache()


if __name__ == "__main__":
    main()
