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


# ---------------------------------------------------------------------------------------------
# Awkward cases: wide designs with targets in the span of X, tall ones nearly so, large offsets,
# tiny alphas, no intercept, float32. References are scikit-learn in float64.


def _near_span(n: int, d: int, units: int, seed: int, noise: float):
    """X [n, d] and Y = X W + noise [n, units]: signal sd ~1, noise sd from ``noise`` (targets
    almost in the span of X) to 1e4 ``noise`` (units with a clear best alpha)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    signal = X @ (rng.normal(size=(d, units)) / np.sqrt(d))
    Y = signal + rng.normal(size=(n, units)) * (noise * 10 ** rng.uniform(0, 4, units))
    return X, Y


def _sklearn_gcv(X, Y, alphas, fit_intercept=True):
    """[n_alphas, units] GCV criterion (RSS/n) / (1 - df/n)^2 from scikit-learn Ridge's in-sample
    residuals (float64; Cholesky, accurate to ~1e-10 for these alphas >= 0.01 and 15x faster than
    its SVD solver on 500 x 2000) and df from numpy's singular values."""
    n = len(X)
    Xc = X - X.mean(0) if fit_intercept else X
    s2 = np.linalg.svd(Xc, compute_uv=False) ** 2
    out = []
    for a in alphas:
        resid = Y - Ridge(alpha=a, fit_intercept=fit_intercept, solver="cholesky").fit(X, Y).predict(X)
        df = (1 if fit_intercept else 0) + (s2 / (s2 + a)).sum()
        out.append((resid**2).mean(0) / (1 - df / n) ** 2)
    return np.array(out)


def _clear(criterion: np.ndarray, gap: float) -> np.ndarray:
    """Units whose best alpha beats the runner-up by more than ``gap`` (relative): not near ties."""
    low = np.sort(criterion, axis=0)
    return low[1] > low[0] * (1 + gap)


def _sklearn_predictions(X, Y, alpha, X_new, fit_intercept=True):
    """[n_new, units] scikit-learn Ridge predictions, each unit with its own alpha (>= 0.01)."""
    out = np.empty((len(X_new), Y.shape[1]))
    for a in np.unique(alpha):
        units = alpha == a
        model = Ridge(alpha=a, fit_intercept=fit_intercept, solver="cholesky").fit(X, Y[:, units])
        out[:, units] = model.predict(X_new).reshape(len(X_new), -1)
    return out


# (n, d, noise, float32 tolerance on the criterion). Wide: every target is in the span of X (the
# centred design has rank n - 1). Tall: the out-of-span part of the cleanest units is ~1e-6 of
# their variance. The float32 tolerances are ~10x the largest error measured over seeds 0-9 after
# the fix (wide 2.2e-7, tall 1.5e-5); before it the default GCV at alpha = 0.01 was off by up to
# 3.9e2x (100x500), 4.2e3x (500x2000) and 29% (tall), and float64 by up to 2e-5.
GCV_CASES = [(100, 500, 1e-2, 2e-6), (500, 2000, 1e-2, 2e-6), (400, 30, 1e-3, 2e-4)]


@pytest.mark.parametrize("n, d, noise, tol32", GCV_CASES)
def test_gcv_near_the_span_of_x_matches_sklearn_residuals(n, d, noise, tol32):
    X, Y = _near_span(n, d, 24, seed=n, noise=noise)
    small = [0.01]  # interpolation regime: the residual is ~1e-5 of y, the old difference ~1e-7
    ref = _sklearn_gcv(X, Y, ALPHAS)
    ref_small = _sklearn_gcv(X, Y, small)[0]
    for dtype, tol in (("float64", 1e-9), ("float32", tol32)):
        one = fit_ridge_cv(X, Y, small, device="cpu", dtype=dtype)
        np.testing.assert_allclose(one.cv_mse, ref_small, rtol=tol, err_msg=dtype)
        fit = fit_ridge_cv(X, Y, ALPHAS, device="cpu", dtype=dtype)
        np.testing.assert_allclose(fit.cv_mse, ref.min(0), rtol=tol, err_msg=dtype)
        clear = _clear(ref, 10 * tol)
        assert clear.sum() >= 2, "the case should have units whose best alpha is not a near tie"
        np.testing.assert_array_equal(fit.alpha[clear], ALPHAS[ref.argmin(0)][clear], err_msg=dtype)
    # predictions of the float64 fit = scikit-learn's at the same alphas, to 1e-6 of each sd
    X_new = np.random.default_rng(1).normal(size=(20, d))
    fit64 = fit_ridge_cv(X, Y, ALPHAS, device="cpu", dtype="float64")
    pred = _sklearn_predictions(X, Y, fit64.alpha, X_new)
    assert np.max(np.abs(fit64.predict(X_new) - pred) / Y.std(0)) < 1e-6


@pytest.mark.parametrize("n, d", [(200, 30), (60, 200)])
def test_large_offsets_cost_no_precision(n, d):
    """X + 1e4, Y + 1e6: means are subtracted in float64 before any rounding, the intercept stays
    float64 and predict centres X first. Before: the default float32 fit was 3-6% of a standard
    deviation off, and on the wide design float64 LOO chose another alpha than scikit-learn for 1
    unit in 10 (its Gram matrix was formed uncentred, ~1e8 per entry, and lost ~1e-8 of the
    spread). After: float32 within 2e-6 of a standard deviation, float64 within 2e-10."""
    X0, Y0 = _data(n, d, 10, seed=d)
    X, Y = X0 + 1e4, Y0 + 1e6
    X_new = np.random.default_rng(2).normal(size=(40, d)) + 1e4
    sd = Y.std(0)
    # The LOO criterion does not depend on offsets: RidgeCV on the data without them is the
    # reference (with them RidgeCV itself drifts by 7e-8 on the wide design).
    ref = RidgeCV(alphas=ALPHAS, alpha_per_target=True, store_cv_results=True).fit(X0, Y0)
    clear = _clear(ref.cv_results_.mean(0).T, 1e-6)
    for method in ("loo", "gcv", "kfold"):
        for dtype, tol in (("float64", 1e-6), ("float32", 2e-5)):  # float32: <= 2.0e-6 over seeds 0-9
            fit = fit_ridge_cv(X, Y, ALPHAS, method=method, device="cpu", dtype=dtype)
            assert fit.intercept.dtype == np.float64
            pred = fit.predict(X_new)
            assert pred.dtype == np.float64  # float64 X: float64 predictions, as scikit-learn
            err = np.max(np.abs(pred - _sklearn_predictions(X, Y, fit.alpha, X_new)) / sd)
            assert err < tol, (method, dtype, err)
            if method == "loo":
                np.testing.assert_array_equal(fit.alpha[clear], ref.alpha_[clear], err_msg=dtype)
                if dtype == "float64":
                    np.testing.assert_allclose(fit.cv_mse, -ref.best_score_, rtol=1e-8)


def _brute_loo(X, Y, alphas):
    """[n_alphas, units] mean squared leave-one-out error, refitting scikit-learn's Ridge (SVD
    solver) without each stimulus in turn; every alpha in one fit (per-target alphas)."""
    n, units = Y.shape
    Y_all = np.tile(Y, len(alphas))
    alpha_all = np.repeat(alphas, units)
    err = np.zeros(len(alphas) * units)
    for i in range(n):
        keep = np.arange(n) != i
        model = Ridge(alpha=alpha_all, solver="svd").fit(X[keep], Y_all[keep])
        err += (Y_all[i] - model.predict(X[i:i + 1])[0]) ** 2
    return (err / n).reshape(len(alphas), units)


@pytest.mark.parametrize("n, d", [(60, 300), (60, 20)])
def test_loo_with_tiny_alphas_matches_refitting_without_each_stimulus(n, d):
    """Alphas of 1e-12..1e-6: the exact LOO criterion equals n refits of scikit-learn's Ridge.

    Before the fix the wide case was off by 104% at 1e-12 (the leverage 1 - h ~ 1e-17 drowned in
    rounding of 1 - sum U^2). RidgeCV itself is not the reference here: its closed forms lose
    digits at such alphas (measured 1e-2 relative at 1e-12 in 'eigen' and 4e-3 in 'svd' mode); it
    is compared where it is accurate (alpha 1e-6, 3e-9 relative)."""
    X, Y = _near_span(n, d, 6, seed=d, noise=0.1)
    alphas = [1e-12, 1e-9, 1e-6]
    brute = _brute_loo(X, Y, alphas)
    for alpha, expected in zip(alphas, brute):
        fit = fit_ridge_cv(X, Y, [alpha], method="loo", device="cpu", dtype="float64")
        np.testing.assert_allclose(fit.cv_mse, expected, rtol=1e-8, err_msg=str(alpha))
    ref = RidgeCV(alphas=[1e-6], alpha_per_target=True).fit(X, Y)
    np.testing.assert_allclose(fit.cv_mse, -ref.best_score_, rtol=1e-7)
    X_new = np.random.default_rng(3).normal(size=(10, d))
    assert np.max(np.abs(fit.predict(X_new) - ref.predict(X_new)) / Y.std(0)) < 1e-6


def test_score_without_intercept_is_r2_about_the_mean():
    """fit_intercept=False: cv_mse is scikit-learn's -best_score_ and cv_score is R^2 in
    scikit-learn's r2_score convention (1 - SSE / sum of squares about the mean) of the LOO
    predictions -- not relative to mean(y^2), as before."""
    from sklearn.metrics import r2_score

    X, Y = _data(80, 10, 5, seed=4)  # offset 3: mean(y^2) and the variance differ a lot
    ref = RidgeCV(alphas=ALPHAS, alpha_per_target=True, fit_intercept=False, store_cv_results=True).fit(X, Y)
    for method in ("loo", "gcv", "kfold"):
        fit = fit_ridge_cv(X, Y, ALPHAS, method=method, fit_intercept=False, device="cpu", dtype="float64")
        np.testing.assert_allclose(fit.cv_score, 1 - fit.cv_mse / Y.var(0), rtol=1e-12)
        assert np.all(fit.intercept == 0)
    fit = fit_ridge_cv(X, Y, ALPHAS, method="loo", fit_intercept=False, device="cpu", dtype="float64")
    np.testing.assert_array_equal(fit.alpha, ref.alpha_)
    np.testing.assert_allclose(fit.cv_mse, -ref.best_score_, rtol=1e-9)
    best = ref.cv_results_[:, np.arange(5), np.searchsorted(ALPHAS, ref.alpha_)]  # squared LOO errors
    r2 = [r2_score(Y[:, u], Y[:, u] - np.sqrt(best[:, u])) for u in range(5)]
    np.testing.assert_allclose(fit.cv_score, r2, rtol=1e-9)


def test_float32_inputs():
    """float32 arrays in: float32 coefficients and predictions that agree with scikit-learn on the
    same numbers in float64 (measured <= 6.2e-7 of a standard deviation over seeds 0-9)."""
    X, Y = _near_span(300, 40, 20, seed=6, noise=0.5)
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    X64, Y64 = X32.astype(np.float64), Y32.astype(np.float64)
    X_new = np.random.default_rng(4).normal(size=(25, 40)).astype(np.float32)
    ref = RidgeCV(alphas=ALPHAS, alpha_per_target=True, store_cv_results=True).fit(X64, Y64)
    clear = _clear(ref.cv_results_.mean(0).T, 1e-4)
    for method in ("loo", "gcv"):
        fit = fit_ridge_cv(X32, Y32, ALPHAS, method=method, device="cpu")
        assert fit.coef.dtype == np.float32
        pred = fit.predict(X_new)
        assert pred.dtype == np.float32
        ref_pred = _sklearn_predictions(X64, Y64, fit.alpha, X_new.astype(np.float64))
        assert np.max(np.abs(pred - ref_pred) / Y64.std(0)) < 6e-6
        if method == "loo":
            np.testing.assert_array_equal(fit.alpha[clear], ref.alpha_[clear])
