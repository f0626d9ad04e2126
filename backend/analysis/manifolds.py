"""Manifolds: 2-D UMAP embeddings of brain responses and text embeddings, and their alignment.

UMAP places each stimulus on a plane so that neighbours in the high-dimensional space (a brain
region's responses, a model's caption embeddings) stay neighbours. Two such maps of the same
stimuli are arbitrary up to rotation, reflection, scale and shift; :func:`align` removes that so
one stimulus can be followed from the brain map to the text map.

umap-learn compiles its kernels with numba on the first call in a process (1,000 x 384: 15-24 s;
10,000 x 384: about a minute; later calls 2-14 s). Pass ``cache_dir`` so that compilation is
cached on disk across processes; cache the embeddings themselves too. umap-learn does not mark its
kernels cacheable, so :func:`_cache_umap_kernels` turns numba's disk cache on for them: a fresh
process then loads them instead of compiling (1,200 x 384: 4.7 s of CPU instead of 15 s).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
from scipy.linalg import orthogonal_procrustes


def _set_numba_cache(cache_dir: str | Path | None) -> None:
    """Point NUMBA_CACHE_DIR at ``cache_dir``/numba (or a temp folder) before numba is imported.

    An explicit NUMBA_CACHE_DIR in the environment is kept. Once numba is imported the setting
    no longer changes anything, so only the first call in a process decides.
    """
    if "numba" in sys.modules or os.environ.get("NUMBA_CACHE_DIR"):
        return
    base = Path(cache_dir) if cache_dir is not None else Path(tempfile.gettempdir()) / "cortextual"
    folder = base / "numba"
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["NUMBA_CACHE_DIR"] = str(folder)


_KERNEL_PACKAGES = ("umap", "pynndescent")


def _cache_umap_kernels() -> int:
    """Turn on numba's disk cache for every jitted function of umap-learn and pynndescent not
    already cached; returns how many were turned on (0 on later calls).

    Both packages compile dozens of kernels per process; only pynndescent marks some of them
    ``cache=True``. Caching keys on the source file, so an upgraded package recompiles.
    """
    from numba.core.registry import CPUDispatcher  # noqa: PLC0415 - numba only after NUMBA_CACHE_DIR

    turned_on = 0
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in _KERNEL_PACKAGES:
            continue
        for value in list(vars(module).values()):
            if isinstance(value, CPUDispatcher) and type(value._cache).__name__ == "NullCache":
                value.enable_caching()
                turned_on += 1
    return turned_on


def kernels_cached() -> bool:
    """Whether NUMBA_CACHE_DIR already holds umap-learn's layout kernel (compiled by an earlier fit)."""
    folder = os.environ.get("NUMBA_CACHE_DIR")
    return bool(folder) and any(Path(folder).rglob("layouts._optimize_layout_euclidean*.nbi"))


def warm_kernels_in_background() -> subprocess.Popen | None:
    """Compile umap-learn's kernels into NUMBA_CACHE_DIR in a low-priority child process, so the
    first manifold after install takes seconds instead of a minute; None when there is nothing
    to do (no cache folder set, kernels already cached, or CORTEXTUAL_WARM_KERNELS=0).

    A separate process so compilation holds neither this process's GIL nor its import lock.
    """
    if os.environ.get("CORTEXTUAL_WARM_KERNELS", "1") == "0" or not os.environ.get("NUMBA_CACHE_DIR") or kernels_cached():
        return None
    code = "import numpy as np; from backend.analysis.manifolds import umap_embedding; umap_embedding(np.random.default_rng(0).normal(size=(60, 8)))"
    child = subprocess.Popen(
        [sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=lambda: os.nice(10),
    )
    threading.Thread(target=child.wait, name="umap-warm-up", daemon=True).start()  # reaped, never a zombie
    return child


def umap_embedding(
    x: np.ndarray,
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "euclidean",
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> np.ndarray:
    """float32 [n, 2]: UMAP of the rows of ``x`` [n, p] (n >= 3).

    Deterministic for a given seed (umap-learn then runs single-threaded, which is slower).
    n_neighbors is capped at n - 1. metric: any umap-learn metric ("cosine" suits text
    embeddings). cache_dir: where numba's compiled kernels are cached (see module docstring).
    """
    x = np.asarray(x, np.float32)
    if x.ndim != 2 or len(x) < 3:
        raise ValueError(f"need a 2-D array with at least 3 rows, got shape {x.shape}")
    _set_numba_cache(cache_dir)
    import umap  # noqa: PLC0415 - heavy import (numba), and NUMBA_CACHE_DIR must be set first

    _cache_umap_kernels()
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=max(2, min(n_neighbors, len(x) - 1)),
        min_dist=min_dist,
        metric=metric,
        random_state=seed,
        n_jobs=1,  # what random_state implies anyway; saying it silences umap's warning
    )
    return np.asarray(reducer.fit_transform(x), np.float32)


def align(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """float32 [n, 2]: ``other`` [n, d] rotated (or reflected), scaled and shifted onto ``reference``.

    Least-squares similarity transform (orthogonal Procrustes with a scale and a translation):
    minimises || s * (other - mean(other)) @ R + t - reference ||. Row i of both inputs must be
    the same stimulus. Reflections are allowed, since a UMAP map and its mirror image are
    equally valid.
    """
    ref = np.asarray(reference, np.float64)
    oth = np.asarray(other, np.float64)
    if ref.shape != oth.shape or ref.ndim != 2:
        raise ValueError(f"reference and other must be [n, d] of one shape, got {ref.shape}, {oth.shape}")
    ref_mean, oth_mean = ref.mean(axis=0), oth.mean(axis=0)
    a, b = oth - oth_mean, ref - ref_mean
    norm2 = float((a**2).sum())
    if norm2 == 0.0:
        return np.broadcast_to(ref_mean, ref.shape).astype(np.float32)
    rotation, singular_sum = orthogonal_procrustes(a, b)
    scale = singular_sum / norm2
    return (scale * a @ rotation + ref_mean).astype(np.float32)


def trustworthiness(x: np.ndarray, embedding: np.ndarray, n_neighbors: int = 5) -> float:
    """How well ``embedding`` [n, 2] keeps the neighbours of ``x`` [n, p]: 1 is perfect, ~0.5 random.

    scikit-learn's ``sklearn.manifold.trustworthiness`` (Venna & Kaski), Euclidean.
    """
    from sklearn.manifold import trustworthiness as _tw  # noqa: PLC0415

    return float(_tw(np.asarray(x), np.asarray(embedding), n_neighbors=n_neighbors))
