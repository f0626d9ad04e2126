"""Time umap_embedding on 10,000 x 384 points: first call (numba compiles) and second call.

Run: .venv/bin/python bench/bench_umap.py [n] [p]. The numba cache is a fresh temp folder, so
the first call includes the full compilation a new process without a cache pays.
"""

import sys
import tempfile
import time

import numpy as np

from backend.analysis.manifolds import umap_embedding


def main(n: int = 10_000, p: int = 384) -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=3.0, size=(10, p))
    x = (centres[rng.integers(0, 10, n)] + rng.normal(size=(n, p))).astype(np.float32)
    with tempfile.TemporaryDirectory() as cache:
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            umap_embedding(x, seed=0, cache_dir=cache)
            times.append(time.perf_counter() - t0)
    print(f"umap_embedding {n} x {p}: first {times[0]:.1f} s (with numba compilation), "
          f"second {times[1]:.1f} s, second/first {times[1] / times[0]:.2f}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
