"""Cache hits against computing: the stage layer's store, for captions and text embeddings.

    .venv/bin/python bench/bench_cache.py [--n 120]

A small demo world (``--n`` training stimuli) is captioned by the tests' tiny BLIP (added by
local path, as users add models) and its reference captions are embedded by the real MiniLM,
each through the cached stage exactly as a backend job runs it: first cold (model loaded, every
item computed and written), then warm (every item read from the store, the model never touched).
Ratios are printed against the cold run in the same process.
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
os.environ["CORTEXTUAL_CACHE"] = tempfile.mkdtemp(prefix="cortextual-bench-cache-")  # never the user's


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=120, help="training stimuli of the demo world (test: n/4)")
    args = parser.parse_args()

    from backend.cache import Store
    from backend.data.demo.world import ensure_demo_world
    from backend.data.folder import load_folder
    from backend.models.pool import ModelPool
    from backend.stages.captions import caption_dataset
    from backend.stages.embeddings import embed_texts_cached
    from backend.stages.inputs import image_hashes
    from tests.models_tiny import register_tiny

    folders = ensure_demo_world(n_train=args.n, n_test=max(5, args.n // 4), neurons_per_area=10)
    ds = load_folder(folders["demo-human"], "demo-human")
    image_hashes(ds)  # hashing the image files once is not part of either path
    store, pool = Store(), ModelPool(device="cpu")
    blip = register_tiny("blip").id
    minilm = "sentence-transformers/all-MiniLM-L6-v2"
    texts = list(ds.stimuli.captions)

    rows = []
    for label, run in (
        (f"caption {ds.n_stimuli} images (tiny BLIP)", lambda: caption_dataset(ds, blip, store=store, pool=pool)),
        (f"embed {len(texts)} captions (MiniLM)", lambda: embed_texts_cached(texts, minilm, store=store, pool=pool)),
    ):
        start = time.perf_counter()
        cold = run()
        cold_s = time.perf_counter() - start
        loads = sum(pool.loads.values())
        pool.clear()
        start = time.perf_counter()
        warm = run()
        warm_s = time.perf_counter() - start
        assert sum(pool.loads.values()) == loads, "a cache hit loaded a model"
        assert (cold == warm) if isinstance(cold, list) else (cold == warm).all()
        rows.append((label, cold_s, warm_s))

    print(f"\n{'stage':42s} {'cold (s)':>9s} {'cached (s)':>11s} {'per item (ms)':>14s} {'ratio':>8s}")
    for label, cold_s, warm_s in rows:
        print(f"{label:42s} {cold_s:9.2f} {warm_s:11.3f} {1000 * warm_s / ds.n_stimuli:14.3f} {warm_s / cold_s:8.4f}")
    print("\nratio = cached / cold (lower is better); no model was loaded for the cached runs")


if __name__ == "__main__":
    main()
