"""What one stimulus switch costs: bytes to the browser and server time, against references.

    .venv/bin/python bench/bench_stimulus_switch.py [--switches 40] [--no-browser]

Part 1 (in process): a real backend on loopback and the viewer's own switch handler. Reports the
per-switch response payload against sending the geometry with every click (the reference a
whole-figure-per-click design pays), and the handler's server time against the 150 ms budget.

Part 2 (browser): launch.py as users run it, headless Chromium clicking through the gallery; the
bytes Chromium actually receives per switch (Chrome DevTools Protocol network events, images
included) and the time from click to repainted brain canvas.
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
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

BUDGET_MS = 150.0
BYTES_BUDGET = 100_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_process(switches: int) -> None:
    import gradio as gr
    import uvicorn

    from backend.service.app import create_app
    from backend.service.client import BackendClient
    from viewer.app import SURFACE_VIEWS, Explorer
    from viewer.brain_panel import BrainPanel
    from viewer.mouse_panel import MousePanel

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    client = BackendClient(f"http://127.0.0.1:{port}")
    while True:
        try:
            if client.health()["demo"]["state"] == "ready":
                break
        except Exception:
            pass
        time.sleep(0.5)

    with gr.Blocks():
        brain, mouse = BrainPanel(views=SURFACE_VIEWS), MousePanel()
    explorer = Explorer(client, brain, mouse)

    for dataset_id in ("demo-human", "demo-mouse"):
        space = explorer.unit_space(dataset_id)
        t0 = time.perf_counter()
        if space["kind"] == "surface":
            static = explorer.surface_static(brain, dataset_id)
        else:
            static = mouse.static_payload(space)
        static_ms = 1000 * (time.perf_counter() - t0)
        static_bytes = len(json.dumps(static))
        explorer.show_stimulus(dataset_id, 0)  # warm caches (first geometry use)
        times, sizes = [], []
        for i in range(1, switches + 1):
            t0 = time.perf_counter()
            outputs = explorer.show_stimulus(dataset_id, i, "sim-scene-renderer")
            times.append(1000 * (time.perf_counter() - t0))
            update = outputs[5] if space["kind"] == "surface" else outputs[6]
            sizes.append(len(json.dumps(update["value"])))
        per_switch = statistics.median(sizes)
        median_ms = statistics.median(times)
        n_units = len(client.responses(dataset_id, 0))
        print(f"\n{dataset_id} ({space['kind']}, {n_units:,} units)")
        print(f"  static payload, once per dataset     {static_bytes / 1e3:8.1f} KB  ({static_ms:.0f} ms to build, cached after)")
        print(f"  response payload per switch          {per_switch / 1e3:8.1f} KB")
        print(f"  ratio per switch vs geometry+values  {per_switch / (static_bytes + per_switch):8.3f}  (reference = 1)")
        print(f"  ratio per switch vs 100 KB budget    {per_switch / BYTES_BUDGET:8.3f}")
        print(f"  server time per switch (median)      {median_ms:8.1f} ms  (p90 {sorted(times)[int(0.9 * len(times))]:.1f} ms)")
        print(f"  ratio vs 150 ms budget               {median_ms / BUDGET_MS:8.3f}")
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
            page = browser.new_page(viewport={"width": 1500, "height": 1300})
            cdp = page.context.new_cdp_session(page)
            cdp.send("Network.enable")
            received = {"bytes": 0}
            cdp.on("Network.dataReceived", lambda e: received.__setitem__("bytes", received["bytes"] + e["encodedDataLength"]))
            cdp.on("Network.webSocketFrameReceived", lambda e: received.__setitem__("bytes", received["bytes"] + len(e["response"]["payloadData"])))
            t0 = time.perf_counter()
            page.goto(url)
            page.wait_for_function("(+document.querySelector('#ctx-brain .ctx-brain')?.dataset.renders || 0) > 0", timeout=120_000)
            first_page_s = time.perf_counter() - t0
            first_bytes = received["bytes"]
            per_switch, latency, paint = [], [], []
            for i in range(1, switches + 1):
                renders = page.evaluate("+document.querySelector('#ctx-brain .ctx-brain').dataset.renders")
                received["bytes"] = 0
                t0 = time.perf_counter()
                page.locator("#ctx-gallery img").nth(i % 24).click()
                page.wait_for_function(
                    "(n) => +document.querySelector('#ctx-brain .ctx-brain').dataset.renders > n", arg=renders, timeout=30_000
                )
                latency.append(1000 * (time.perf_counter() - t0))
                paint.append(float(page.evaluate("document.querySelector('#ctx-brain .ctx-brain').dataset.renderMs")))
                time.sleep(0.3)  # let the stimulus image finish arriving
                per_switch.append(received["bytes"])
            browser.close()
        print("\nbrowser (headless Chromium, launch.py on the default demo world)")
        print(f"  launch.py to first answer            {launch_s:8.1f} s (demo world already in the cache)")
        print(f"  first page load to painted brain     {first_page_s:8.1f} s, {first_bytes / 1e6:.2f} MB")
        print(f"  bytes received per switch (median)   {statistics.median(per_switch) / 1e3:8.1f} KB  (incl. the stimulus image)")
        print(f"  ratio per switch vs first page       {statistics.median(per_switch) / first_bytes:8.3f}")
        print(f"  click to repainted brain (median)    {statistics.median(latency):8.0f} ms")
        print(f"  of which painting the canvas         {statistics.median(paint):8.1f} ms")
    finally:
        os.killpg(process.pid, signal.SIGTERM)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--switches", type=int, default=40)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    in_process(args.switches)
    if not args.no_browser:
        in_browser(min(args.switches, 20))


if __name__ == "__main__":
    main()
