"""Batched against one-by-one inference, for each model kind, in one process.

    .venv/bin/python bench/bench_models.py [--n 64] [--batch 16] [--repeats 3]

Captioners and CLIP towers are the tests' tiny random-weight models (built into a scratch folder,
added by local path, taken from the pool -- the users' path); the text embedder is the real
MiniLM. Each row times ``n`` items through the wrapper at ``--batch`` and at batch size 1, best
of ``--repeats``, and prints items/s and the ratio (batched speed-up). Tiny models mostly measure
per-call overhead (processor, generate loop), which is what batching removes; real models on a
GPU gain more. Cache-hit latency is added by the cache layer's own benchmark.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["CORTEXTUAL_CACHE"] = tempfile.mkdtemp(prefix="cortextual-bench-models-")  # never the user's


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=64, help="items per measurement (default 64)")
    parser.add_argument("--batch", type=int, default=16, help="batch size of the batched run (default 16)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs (default 3)")
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from PIL import Image

    from backend.models.pool import ModelPool
    from tests.models_tiny import CAPTIONER_ARCHITECTURES, register_tiny, tiny_id

    torch.set_num_threads(os.cpu_count() or 1)
    for architecture in (*CAPTIONER_ARCHITECTURES, "clip-text", "clip-vision", "stable-diffusion"):
        register_tiny(architecture)
    pool = ModelPool(device="cpu")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(args.n)]
    words = "a dog cat car tree red small large on in under the beach sky night field street".split()
    texts = [" ".join(rng.choice(words, size=int(rng.integers(3, 12)))) for _ in range(args.n)]

    rows: list[tuple[str, str, int, float, float]] = []

    def measure(label: str, kind: str, n: int, run) -> None:
        run(args.batch)  # warm up: first-call costs are not throughput
        batched = best_time(lambda: run(args.batch), args.repeats)
        single = best_time(lambda: run(1), args.repeats)
        rows.append((label, kind, n, n / batched, n / single))
        print(f"  {label:<34} done", file=sys.stderr, flush=True)

    for architecture in CAPTIONER_ARCHITECTURES:
        captioner = pool.get(tiny_id(architecture))
        measure(f"tiny {architecture}", "captioner", args.n, lambda b, c=captioner: c.caption(images, batch_size=b))
    minilm = pool.get("sentence-transformers/all-MiniLM-L6-v2")
    measure("MiniLM-L6 (real)", "text_embedder", args.n, lambda b: minilm.embed(texts, batch_size=b))
    clip_text = pool.get(tiny_id("clip-text"))
    measure("tiny CLIP text", "text_embedder", args.n, lambda b: clip_text.embed(texts, batch_size=b))
    clip_vision = pool.get(tiny_id("clip-vision"))
    measure("tiny CLIP vision", "image_embedder", args.n, lambda b: clip_vision.embed(images, batch_size=b))
    sd = pool.get(tiny_id("stable-diffusion"))
    few = texts[: max(1, args.n // 4)]  # fewer prompts: each image is a whole diffusion run
    measure("tiny Stable Diffusion (64px, 2 steps)", "text_to_image", len(few),
            lambda b: sd.generate(few, batch_size=b))

    print(f"\nbatched (batch {args.batch}) vs one-by-one, CPU, {torch.get_num_threads()} threads, "
          f"best of {args.repeats}")
    print(f"{'model':<38} {'kind':<15} {'items':>5} {'batched/s':>10} {'single/s':>9} {'ratio':>6}")
    for label, kind, n, fast, slow in rows:
        print(f"{label:<38} {kind:<15} {n:>5} {fast:>10.1f} {slow:>9.1f} {fast / slow:>5.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
