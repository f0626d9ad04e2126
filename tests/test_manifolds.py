"""Manifolds: Procrustes alignment and UMAP embeddings."""

from pathlib import Path

import numpy as np
import pytest

from backend.analysis.manifolds import align, trustworthiness, umap_embedding


@pytest.mark.parametrize("reflect", [False, True])
def test_align_recovers_planted_similarity_transform(reflect):
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(50, 2))
    theta = 0.7
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    if reflect:
        rotation = rotation @ np.diag([1.0, -1.0])
    other = 3.5 * reference @ rotation + np.array([10.0, -4.0])
    aligned = align(reference, other)
    assert aligned.dtype == np.float32 and aligned.shape == reference.shape
    np.testing.assert_allclose(aligned, reference, atol=1e-5)


def test_align_is_least_squares_under_noise():
    rng = np.random.default_rng(1)
    reference = rng.normal(size=(100, 2))
    other = 0.2 * (reference + 0.1 * rng.normal(size=reference.shape))[:, ::-1] - 7
    aligned = align(reference, other)
    assert np.abs(aligned - reference).mean() < 0.1
    with pytest.raises(ValueError):
        align(reference, other[:10])


@pytest.mark.slow
def test_umap_separates_clusters_and_is_deterministic(numba_cache_dir):
    cache = numba_cache_dir  # compiled kernels reused across runs
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 20)).astype(np.float32)
    labels = np.repeat([0, 1], 100)
    x[labels == 1] += 8.0
    emb = umap_embedding(x, seed=0, cache_dir=cache)
    assert emb.dtype == np.float32 and emb.shape == (200, 2)
    assert silhouette_score(emb, labels) > 0.7
    assert trustworthiness(x, emb) > 0.8
    np.testing.assert_array_equal(emb, umap_embedding(x, seed=0, cache_dir=cache))


@pytest.mark.slow
def test_umap_kernels_are_cached_on_disk(numba_cache_dir):
    """umap-learn's own kernels (not marked cacheable upstream) land in numba's disk cache, so the
    next process loads them instead of compiling."""
    import os

    from backend.analysis.manifolds import _cache_umap_kernels

    umap_embedding(np.random.default_rng(1).normal(size=(60, 8)), seed=0, cache_dir=numba_cache_dir)
    assert _cache_umap_kernels() == 0  # every kernel already has its cache
    folder = Path(os.environ["NUMBA_CACHE_DIR"])
    # the SGD layout kernel lives in umap/layouts.py and is compiled on every fit
    layouts = [p.name for p in folder.rglob("layouts.*.nbi")]
    assert any("optimize_layout_euclidean" in name for name in layouts), layouts


@pytest.mark.slow
def test_background_warm_up_fills_a_kernel_cache_that_lacks_umap(numba_cache_dir, tmp_path, monkeypatch):
    """The warm-up child compiles what the cache lacks. The cache starts as this session's minus
    umap-learn's layout kernels, so the child compiles those only (seconds, not a minute)."""
    import os
    import shutil

    from backend.analysis import manifolds

    umap_embedding(np.random.default_rng(2).normal(size=(60, 8)), seed=0, cache_dir=numba_cache_dir)
    shutil.copytree(os.environ["NUMBA_CACHE_DIR"], tmp_path / "numba")
    for path in (tmp_path / "numba").rglob("layouts.*"):
        path.unlink()
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))
    monkeypatch.setenv("CORTEXTUAL_WARM_KERNELS", "0")
    assert manifolds.warm_kernels_in_background() is None  # switched off
    monkeypatch.setenv("CORTEXTUAL_WARM_KERNELS", "1")
    assert not manifolds.kernels_cached()
    child = manifolds.warm_kernels_in_background()
    assert child is not None and child.wait(timeout=600) == 0
    assert manifolds.kernels_cached()
    assert manifolds.warm_kernels_in_background() is None  # nothing left to do
