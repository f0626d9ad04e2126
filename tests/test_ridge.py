"""Ridge encoding models against scikit-learn and against planted truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge, RidgeCV

from backend.analysis.ridge import RidgeFit, fit_ridge_cv

ALPHAS = np.logspace(-2, 4, 13)


def _data(n: int, d: int, units: int, seed: int = 0, offset: float = 3.0):
    """X [n, d], Y [n, units] = X W + noise with a different noise level per unit, non-zero means."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) + rng.normal(size=d)
    W = rng.normal(size=(d, units)) * 0.3
    noise = rng.normal(size=(n, units)) * rng.uniform(0.1, 5.0, units)
    return X, X @ W + noise + offset


def _rel(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


@pytest.mark.parametrize("n, d", [(60, 20), (200, 50), (40, 80), (30, 30)])
def test_loo_matches_sklearn_ridgecv_float64(n, d):
    X, Y = _data(n, d, 25, seed=n + d)
    ref = RidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(X, Y)
    fit = fit_ridge_cv(X, Y, ALPHAS, method="loo", dtype=torch.float64, device="cpu")
    X_new = np.random.default_rng(1).normal(size=(15, d))
    np.testing.assert_array_equal(fit.alpha, ref.alpha_)
    assert _rel(fit.predict(X_new), ref.predict(X_new)) < 1e-10
    assert _rel(fit.coef, ref.coef_.T) < 1e-10
    assert _rel(fit.intercept, ref.intercept_) < 1e-10
    # cv_score is 1 - LOO MSE / variance; scikit-learn's best_score_ is -LOO MSE.
    np.testing.assert_allclose(-(1 - fit.cv_score) * Y.var(0), ref.best_score_, rtol=1e-9)


def test_loo_matches_sklearn_float32_and_without_intercept():
    X, Y = _data(300, 40, 50, seed=3)
    ref = RidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(X, Y)
    fit = fit_ridge_cv(X.astype(np.float32), Y.astype(np.float32), ALPHAS, method="loo", device="cpu")
    assert fit.coef.dtype == np.float32
    assert np.mean(fit.alpha == ref.alpha_) >= 0.98  # float32 may split a near-tie
    assert _rel(fit.predict(X), ref.predict(X)) < 1e-4

    Yc = Y - Y.mean(0)  # no intercept: scikit-learn's uncentred fit
    ref0 = RidgeCV(alphas=ALPHAS, alpha_per_target=True, fit_intercept=False).fit(X, Yc)
    fit0 = fit_ridge_cv(X, Yc, ALPHAS, method="loo", fit_intercept=False, dtype="float64", device="cpu")
    np.testing.assert_array_equal(fit0.alpha, ref0.alpha_)
    assert _rel(fit0.coef, ref0.coef_.T) < 1e-10
    assert np.all(fit0.intercept == 0)


def _sklearn_kfold(X, Y, alphas, pairs):
    sse = np.zeros((len(alphas), Y.shape[1]))
    for train, test in pairs:
        for i, alpha in enumerate(alphas):
            pred = Ridge(alpha=alpha).fit(X[train], Y[train]).predict(X[test])
            sse[i] += ((pred - Y[test]) ** 2).sum(0)
    best = sse.argmin(0)
    coef = np.empty((X.shape[1], Y.shape[1]))
    intercept = np.empty(Y.shape[1])
    for u in range(Y.shape[1]):
        model = Ridge(alpha=alphas[best[u]]).fit(X, Y[:, u])
        coef[:, u], intercept[u] = model.coef_, model.intercept_
    return alphas[best], coef, intercept


@pytest.mark.parametrize("n, d", [(90, 25), (45, 70)])
def test_kfold_matches_loop_of_sklearn_ridge(n, d):
    X, Y = _data(n, d, 12, seed=7 + d)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, n)  # uneven user folds given as labels
    pairs = [(np.flatnonzero(labels != g), np.flatnonzero(labels == g)) for g in range(4)]
    alpha, coef, intercept = _sklearn_kfold(X, Y, ALPHAS, pairs)
    for folds in (labels, pairs):
        fit = fit_ridge_cv(X, Y, ALPHAS, method="kfold", folds=folds, dtype=torch.float64, device="cpu")
        np.testing.assert_array_equal(fit.alpha, alpha)
        assert _rel(fit.coef, coef) < 1e-9
        assert _rel(fit.intercept, intercept) < 1e-9


def test_kfold_default_is_contiguous_blocks():
    from sklearn.model_selection import KFold

    X, Y = _data(80, 10, 6, seed=2)
    pairs = list(KFold(5).split(X))  # unshuffled KFold = contiguous blocks
    alpha, coef, _ = _sklearn_kfold(X, Y, ALPHAS, pairs)
    fit = fit_ridge_cv(X, Y, ALPHAS, method="kfold", dtype=torch.float64, device="cpu")
    np.testing.assert_array_equal(fit.alpha, alpha)
    assert _rel(fit.coef, coef) < 1e-9
    fit_splitter = fit_ridge_cv(X, Y, ALPHAS, method="kfold", folds=KFold(5), dtype=torch.float64, device="cpu")
    np.testing.assert_array_equal(fit_splitter.alpha, alpha)


@pytest.mark.parametrize("n, d", [(80, 15), (30, 50)])
def test_gcv_matches_explicit_hat_matrix(n, d):
    X, Y = _data(n, d, 10, seed=11)
    fit = fit_ridge_cv(X, Y, ALPHAS, method="gcv", dtype=torch.float64, device="cpu")
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    scores = []
    for alpha in ALPHAS:
        H = np.full((n, n), 1.0 / n) + Xc @ np.linalg.solve(Xc.T @ Xc + alpha * np.eye(d), Xc.T)
        resid = Y - H @ Y
        scores.append((resid**2).mean(0) / (1 - np.trace(H) / n) ** 2)
    scores = np.array(scores)
    np.testing.assert_array_equal(fit.alpha, ALPHAS[scores.argmin(0)])
    np.testing.assert_allclose(1 - fit.cv_score, scores.min(0) / Yc.var(0), rtol=1e-8)
    ref = np.stack([Ridge(alpha=a).fit(X, Y[:, u]).coef_ for u, a in enumerate(fit.alpha)], 1)
    assert _rel(fit.coef, ref) < 1e-9


@pytest.mark.parametrize("method", ["gcv", "loo", "kfold"])
def test_chunks_give_the_same_fit_as_one_chunk(method, tmp_path):
    X, Y = _data(70, 12, 23, seed=5)
    whole = fit_ridge_cv(X, Y, ALPHAS, method=method, dtype=torch.float64, device="cpu")
    assert whole.info["chunk_units"] == 23
    seen = []
    mm = np.lib.format.open_memmap(tmp_path / "Y.npy", mode="w+", dtype=np.float64, shape=Y.shape)
    mm[:] = Y
    mm.flush()
    ro = np.load(tmp_path / "Y.npy", mmap_mode="r")  # read-only memmap, as a dataset would hold it
    parts = fit_ridge_cv(X, ro, ALPHAS, method=method, dtype=torch.float64, device="cpu", chunk_units=5,
                         progress=lambda done, total: seen.append((done, total)))
    assert seen == [(5, 23), (10, 23), (15, 23), (20, 23), (23, 23)]
    np.testing.assert_array_equal(parts.alpha, whole.alpha)
    np.testing.assert_allclose(parts.coef, whole.coef, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(parts.intercept, whole.intercept, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(parts.cv_score, whole.cv_score, rtol=1e-12, atol=1e-14)


def test_y_rows_reads_a_split_of_a_memmap_chunk_by_chunk(tmp_path):
    X, Y = _data(120, 10, 17, seed=13)
    rows = np.random.default_rng(0).permutation(120)[:90]
    np.save(tmp_path / "Y.npy", Y.astype(np.float32))
    mm = np.load(tmp_path / "Y.npy", mmap_mode="r")
    direct = fit_ridge_cv(X[rows], Y[rows].astype(np.float32), ALPHAS, method="loo", device="cpu")
    for source in (mm, torch.from_numpy(Y.astype(np.float32))):
        subset = fit_ridge_cv(X[rows], source, ALPHAS, method="loo", y_rows=rows, chunk_units=4, device="cpu")
        np.testing.assert_array_equal(subset.alpha, direct.alpha)
        np.testing.assert_allclose(subset.coef, direct.coef, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        fit_ridge_cv(X[rows], mm, y_rows=rows[:50])


def test_memory_budget_sets_chunks_and_inputs_are_untouched():
    X, Y = _data(100, 8, 40, seed=9)
    Y_t = torch.from_numpy(Y.copy())
    threads = torch.get_num_threads()
    small = fit_ridge_cv(X, Y_t, ALPHAS, method="loo", device="cpu", memory_budget=100 * 4 * 2 * 10 + 4000)
    assert 1 <= small.info["chunk_units"] < 40
    assert torch.equal(Y_t, torch.from_numpy(Y))  # centring happens on a private copy
    assert torch.get_num_threads() == threads  # the single-threaded eigh restores the setting
    big = fit_ridge_cv(X, Y, ALPHAS, method="loo", device="cpu")
    np.testing.assert_array_equal(small.alpha, big.alpha)
    np.testing.assert_allclose(small.coef, big.coef, rtol=1e-5, atol=1e-6)


def test_recovers_planted_coefficients():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(2000, 30))
    W = rng.normal(size=(30, 8))
    Y = X @ W + 0.01 * rng.normal(size=(2000, 8)) + 5.0
    for method in ("gcv", "loo", "kfold"):
        fit = fit_ridge_cv(X, Y, ALPHAS, method=method, device="cpu")
        assert _rel(fit.coef, W) < 1e-3, method
        np.testing.assert_allclose(fit.intercept, 5.0, atol=1e-2)
        assert np.all(fit.cv_score > 0.999)


def test_alpha_follows_planted_noise():
    rng = np.random.default_rng(6)
    n, d = 400, 40
    X = rng.normal(size=(n, d))
    W = rng.normal(size=(d, 60)) * 0.2
    noise_sd = np.repeat([0.1, 10.0], 30)  # clean units, then very noisy ones
    Y = X @ W + rng.normal(size=(n, 60)) * noise_sd
    for method in ("gcv", "loo", "kfold"):
        fit = fit_ridge_cv(X, Y, np.logspace(-3, 5, 17), method=method, device="cpu")
        clean, noisy = fit.alpha[:30], fit.alpha[30:]
        assert np.median(noisy) > 100 * np.median(clean), method
        assert fit.cv_score[:30].min() > fit.cv_score[30:].max(), method


def test_gcv_is_close_to_loo_on_held_out_data():
    """The default (GCV) picks alphas that predict held-out data as well as exact LOO does."""
    X, Y = _data(600, 30, 40, seed=12)
    train, test = slice(0, 500), slice(500, None)
    loo = fit_ridge_cv(X[train], Y[train], ALPHAS, method="loo", device="cpu")
    gcv = fit_ridge_cv(X[train], Y[train], ALPHAS, device="cpu")
    assert gcv.method == "gcv"
    err_loo = ((loo.predict(X[test]) - Y[test]) ** 2).mean()
    err_gcv = ((gcv.predict(X[test]) - Y[test]) ** 2).mean()
    assert abs(err_gcv - err_loo) / err_loo < 0.01
    assert np.all(np.abs(np.log10(gcv.alpha) - np.log10(loo.alpha)) <= 0.5 + 1e-9)  # within a grid step


def test_constant_unit_and_bad_input():
    X, Y = _data(50, 5, 3, seed=1)
    Y[:, 1] = 7.0
    fit = fit_ridge_cv(X, Y, ALPHAS, method="loo", dtype=torch.float64, device="cpu")
    assert np.all(fit.coef[:, 1] == 0) and fit.intercept[1] == pytest.approx(7.0)
    assert fit.cv_score[1] == 0 and fit.alpha[1] == ALPHAS[0]
    assert isinstance(fit, RidgeFit)
    with pytest.raises(ValueError):
        fit_ridge_cv(X, Y, [-1.0, 1.0])
    with pytest.raises(ValueError):
        fit_ridge_cv(X, Y[:10])
    with pytest.raises(ValueError):
        fit_ridge_cv(X, Y, method="bogus")
    Y[3, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        fit_ridge_cv(X, Y, device="cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    X, Y = _data(300, 40, 50, seed=8)
    for method in ("gcv", "loo", "kfold"):
        cpu = fit_ridge_cv(X, Y, ALPHAS, method=method, dtype=torch.float64, device="cpu")
        gpu = fit_ridge_cv(X, Y, ALPHAS, method=method, dtype=torch.float64, device="cuda", chunk_units=16)
        np.testing.assert_array_equal(gpu.alpha, cpu.alpha)
        np.testing.assert_allclose(gpu.coef, cpu.coef, rtol=1e-9, atol=1e-12)
