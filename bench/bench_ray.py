"""The Ray path (launch.py batch) against the backend's in-process queue, on a local cluster.

    .venv/bin/python bench/bench_ray.py [--size 200x50] [--cpus 2]

On a demo world of ``--size`` (generated into a scratch cache: never the user's), two steps:
captioning every stimulus with the tests' tiny random-weight BLIP, and embedding every distinct
caption of every source with the real MiniLM. Each is timed through the stages the backend's
queue runs (in this process, one model), then through ``run_batch`` with 1 and with 2 workers
(a fresh store each time, so everything is computed). Prints items/s, the 2-vs-1-worker ratio,
and the overhead of Ray against the queue (time ratio; actor start-up and model loading
included on both sides; Ray's own start-up is printed apart). On a machine with as many cores as
workers the ratio says how well the work spreads; on a cluster, each worker is a GPU.
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
os.environ["CORTEXTUAL_CACHE"] = tempfile.mkdtemp(prefix="cortextual-bench-ray-")  # never the user's
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="200x50", help="demo world training x test stimuli (default 200x50)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster (default 2)")
    args = parser.parse_args(argv)
    os.environ["CORTEXTUAL_DEMO_SIZE"] = args.size
    scratch = Path(os.environ["CORTEXTUAL_CACHE"])

    from backend.cache import Store
    from backend.cluster.batch import BatchSettings, connect, run_batch
    from backend.data.catalog import open_dataset
    from backend.data.demo.world import ensure_demo_world
    from backend.models.pool import ModelPool
    from backend.stages.captions import caption_dataset, caption_sources, source_captions
    from backend.stages.embeddings import embed_texts_cached
    from tests.models_tiny import register_tiny

    started = time.perf_counter()
    ensure_demo_world()
    ds = open_dataset("demo-mouse")
    blip = register_tiny("blip").id
    print(f"demo world {args.size}: {ds.n_stimuli} stimuli ({time.perf_counter() - started:.0f} s to prepare)")

    # The in-process queue's stages, one model in this process (as the backend runs them).
    rows, queue_rates = [], {}
    store = Store(scratch / "queue.sqlite")
    t0 = time.perf_counter()
    caption_dataset(ds, blip, store=store, pool=ModelPool())
    queue_rates["caption"] = ds.n_stimuli / (time.perf_counter() - t0)
    texts = sorted({t for s in caption_sources(ds, store) for t in source_captions(ds, s, store)})
    t0 = time.perf_counter()
    embed_texts_cached(texts, MINILM, store=store, pool=ModelPool())
    queue_rates["embed"] = len(texts) / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    connect(num_cpus=args.cpus)
    print(f"Ray local cluster with {args.cpus} CPUs started in {time.perf_counter() - t0:.1f} s (not counted below)")
    ray_rates: dict[tuple[str, int], float] = {}
    for workers in (1, 2):
        for step, captioners, embedders, n in (("caption", [blip], [], ds.n_stimuli), ("embed", [], [MINILM], None)):
            fresh = Store(scratch / f"ray-{step}-{workers}.sqlite")
            if step == "embed":  # the same caption sources as the queue embedded
                run_batch([ds], [blip], [], None, store=fresh, settings=BatchSettings(workers=workers), steps=("caption",), say=lambda line: None)
            summary = run_batch(
                [ds], captioners, embedders, None, store=fresh, settings=BatchSettings(workers=workers),
                steps=(step,), say=lambda line: None,
            )
            ray_rates[(step, workers)] = summary.computed[step] / summary.seconds

    print(f"\n{'step':<10}{'queue items/s':>15}{'ray 1 items/s':>15}{'ray 2 items/s':>15}{'2 vs 1':>9}{'queue vs ray 1':>16}")
    for step in ("caption", "embed"):
        q, r1, r2 = queue_rates[step], ray_rates[(step, 1)], ray_rates[(step, 2)]
        rows.append((step, q, r1, r2))
        print(f"{step:<10}{q:>15.1f}{r1:>15.1f}{r2:>15.1f}{r2 / r1:>8.2f}x{q / r1:>15.2f}x")
    print("\n'2 vs 1': items/s with 2 workers over 1; 'queue vs ray 1': how much faster the in-process queue is than a 1-worker Ray pool")
    print("(Ray's overhead: actor start, a model load per actor, data moving through the object store).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
