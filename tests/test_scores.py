"""Per-unit scores against direct formulas and against simulations with a known ceiling."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr

from backend.analysis.scores import (
    fraction_of_ceiling,
    ncsnr_from_trials,
    noise_ceiling_from_ncsnr,
    pearson_r,
    split_half_ceiling,
)


def test_pearson_r_matches_scipy_columnwise():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 7)) * rng.uniform(0.1, 1e3, 7) + 1e4
    b = 0.5 * a + rng.normal(size=(40, 7)) * 300
    r = pearson_r(a, b)
    assert r.shape == (7,) and r.dtype == np.float64
    np.testing.assert_allclose(r, [pearsonr(a[:, j], b[:, j])[0] for j in range(7)], rtol=1e-10)
    np.testing.assert_allclose(pearson_r(a.astype(np.float32), b.astype(np.float32)), r, rtol=1e-4)
    np.testing.assert_allclose(pearson_r(a[:, 0], b[:, 0]), r[:1])


def test_pearson_r_constant_columns_are_zero_not_nan():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(30, 4))
    b = rng.normal(size=(30, 4))
    a[:, 1] = 0.1  # constant whose mean is not exact in binary
    b[:, 2] = -3.0
    r = pearson_r(a, b)
    assert r[1] == 0 and r[2] == 0
    assert np.all(np.isfinite(r)) and r[0] != 0
    a[0, 3] = np.nan
    assert np.isnan(pearson_r(a, b)[3])
    with pytest.raises(ValueError):
        pearson_r(a, b[:, :3])


def test_noise_ceiling_formula():
    ncsnr = np.array([0.0, 0.5, 1.0, 2.0, np.nan])
    nc = noise_ceiling_from_ncsnr(ncsnr, 3)
    np.testing.assert_allclose(nc[:4], 100 * ncsnr[:4] ** 2 / (ncsnr[:4] ** 2 + 1 / 3))
    assert nc[0] == 0 and np.isnan(nc[4])
    # Per-stimulus repeat counts: NSD's (A/3 + B/2 + C/1) / (A + B + C)
    counts = np.array([3] * 6 + [2] * 3 + [1])
    expected = 100 * 1.0 / (1.0 + (6 / 3 + 3 / 2 + 1 / 1) / 10)
    assert noise_ceiling_from_ncsnr(1.0, counts) == pytest.approx(expected)
    with pytest.raises(ValueError):
        noise_ceiling_from_ncsnr(1.0, 0)


def _trials(n_repeats, n_stimuli, noise_var, seed=0):
    """Trials = signal (variance 1) + noise (variance noise_var per unit), with an offset."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(n_stimuli, len(noise_var)))
    signal = (signal - signal.mean(0)) / signal.std(0)  # exactly variance 1 over stimuli
    noise = rng.normal(size=(n_repeats, n_stimuli, len(noise_var))) * np.sqrt(noise_var)
    return 5.0 + signal[None] + noise


def test_ncsnr_matches_the_nsd_recipe_and_the_truth():
    noise_var = np.array([0.25, 1.0, 4.0])
    trials = _trials(3, 4000, noise_var)
    snr = ncsnr_from_trials(trials)
    # The NSD recipe written out: z-score all trials per unit, noise sd from across-repeat
    # variances (ddof=1), signal sd = sqrt(max(0, 1 - noise var)).
    z = (trials - trials.mean(axis=(0, 1))) / trials.std(axis=(0, 1))
    noise_sd = np.sqrt(np.mean(np.var(z, axis=0, ddof=1), axis=0))
    recipe = np.sqrt(np.clip(1 - noise_sd**2, 0, None)) / noise_sd
    np.testing.assert_allclose(snr, recipe, rtol=1e-10)
    # Against the planted truth sqrt(1 / noise_var): close with 12,000 trials
    np.testing.assert_allclose(snr, np.sqrt(1 / noise_var), rtol=0.05)
    # Scale-free: multiplying a unit's data does not change its ncsnr
    np.testing.assert_allclose(ncsnr_from_trials(trials * 7.5), snr, rtol=1e-10)


def test_ncsnr_with_missing_trials_and_degenerate_units():
    trials = _trials(3, 3000, np.array([1.0, 1.0, 1.0]), seed=2)
    trials[2, :1000, :] = np.nan  # a third of the stimuli were shown twice only
    trials[:, :, 1] = 4.0  # constant unit
    trials[:, :, 2] = trials[0, :, 2]  # no noise at all (repeats identical)
    trials[2, :1000, 2] = np.nan
    snr = ncsnr_from_trials(trials)
    assert snr[0] == pytest.approx(1.0, rel=0.06)
    assert snr[1] == 0
    assert snr[2] == np.inf
    assert noise_ceiling_from_ncsnr(snr[2], 3) == 100


def test_split_half_and_ncsnr_ceilings_agree_with_the_truth():
    noise_var = np.array([0.5, 2.0, 8.0])
    n_repeats = 4
    trials = _trials(n_repeats, 5000, noise_var, seed=3)
    truth = 100 * 1.0 / (1.0 + noise_var / n_repeats)  # share of the 4-trial mean that is signal
    split = split_half_ceiling(trials)
    from_snr = noise_ceiling_from_ncsnr(ncsnr_from_trials(trials), n_repeats)
    np.testing.assert_allclose(split, truth, atol=2.5)
    np.testing.assert_allclose(from_snr, truth, atol=2.5)
    # Direct formula: halves of even / odd repeats, Spearman-Brown
    a, b = trials[0::2].mean(0), trials[1::2].mean(0)
    r = np.array([np.corrcoef(a[:, j], b[:, j])[0, 1] for j in range(3)])
    np.testing.assert_allclose(split, 100 * 2 * r / (1 + r), rtol=1e-10)


def test_split_half_pure_noise_is_near_zero_and_never_negative():
    rng = np.random.default_rng(4)
    trials = rng.normal(size=(2, 500, 50))
    split = split_half_ceiling(trials)
    assert np.all(split >= 0) and np.median(split) < 5
    trials[1, :20, 0] = np.nan  # missing halves are skipped for that unit only
    assert np.isfinite(split_half_ceiling(trials)).all()


def test_fraction_of_ceiling():
    r = np.array([0.5, -0.2, 0.3, 0.4, 0.1])
    nc = np.array([50.0, 40.0, 0.0, np.nan, 100.0])
    frac = fraction_of_ceiling(r, nc)
    assert frac[0] == pytest.approx(0.25 / 0.5)
    assert frac[1] == 0  # negative r counts as 0 (Algonauts)
    assert np.isnan(frac[2]) and np.isnan(frac[3])
    assert frac[4] == pytest.approx(0.01)


# --- one noise-ceiling implementation, with its limits -----------------------------------------


def test_the_importers_share_this_noise_ceiling():
    """backend.data.importers.ceiling gave 0% for identical repeats and NaN for ncsnr = inf; it is gone."""
    import importlib

    import backend.data.importers.allen as allen
    import backend.data.importers.nsd as nsd

    with pytest.raises(ImportError):
        importlib.import_module("backend.data.importers.ceiling")
    assert allen.noise_ceiling_from_ncsnr is noise_ceiling_from_ncsnr and allen.ncsnr_from_trials is ncsnr_from_trials
    assert nsd.noise_ceiling_from_ncsnr is noise_ceiling_from_ncsnr


def nsd_manual_ceiling(ncsnr: float, counts: list[int]) -> float:
    """NSD data manual: NC = 100 * ncsnr^2 / (ncsnr^2 + (A/3 + B/2 + C/1) / (A + B + C)), A, B, C =
    images with 3, 2, 1 repeats; written out with Python floats."""
    a, b, c = counts.count(3), counts.count(2), counts.count(1)
    inverse_n = (a / 3 + b / 2 + c / 1) / (a + b + c)
    return 100 * ncsnr**2 / (ncsnr**2 + inverse_n)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_noise_ceiling_matches_the_nsd_manual_with_per_image_repeat_counts(dtype):
    rng = np.random.default_rng(5)
    ncsnr = rng.uniform(0, 3, 50).astype(dtype)
    counts = [3] * 37 + [2] * 9 + [1] * 4
    nc = noise_ceiling_from_ncsnr(ncsnr, np.array(counts, np.int16))
    expected = [nsd_manual_ceiling(float(s), counts) for s in ncsnr]
    np.testing.assert_allclose(nc, expected, rtol=1e-12)
    assert nc.dtype == np.float64 and np.all((nc >= 0) & (nc <= 100))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ceiling_limits(dtype):
    """Identical repeats with signal: 100%; ncsnr = inf: 100%; no signal and no noise: 0."""
    rng = np.random.default_rng(6)
    signal = rng.normal(size=(40, 3))
    trials = np.repeat(signal[None], 3, axis=0).astype(dtype)  # [3, 40, 3], repeats identical
    trials[:, :, 1] = 2.5  # constant: no signal, no noise
    trials[:, :, 2] += rng.normal(size=(3, 40)).astype(dtype)  # ordinary unit
    snr = ncsnr_from_trials(trials)
    assert snr[0] == np.inf and snr[1] == 0 and 0 < snr[2] < np.inf
    nc = noise_ceiling_from_ncsnr(snr, 3)
    assert nc[0] == 100 and nc[1] == 0 and 0 < nc[2] < 100
    assert noise_ceiling_from_ncsnr(np.array([np.inf], dtype), [3, 2, 1])[0] == 100


def test_ncsnr_from_float32_trials_matches_float64():
    trials = _trials(3, 800, np.array([0.3, 1.0, 3.0]), seed=7)
    np.testing.assert_allclose(ncsnr_from_trials(trials.astype(np.float32)), ncsnr_from_trials(trials), rtol=1e-5)


def test_a_nan_trial_is_a_missing_trial_never_a_silent_zero():
    """NaN marks a missing trial (documented): the result equals leaving that trial out; a unit with
    no stimulus repeated (no noise estimate at all) or only NaN is NaN, never 0."""
    trials = _trials(3, 200, np.array([1.0, 1.0, 1.0]), seed=8)
    trials[1, 7, 0] = np.nan
    snr = ncsnr_from_trials(trials)
    # Leaving the trial out by hand: stimulus 7 of unit 0 has two trials.
    x = trials[:, :, 0]
    valid = x[np.isfinite(x)]
    total = valid.var()
    per_stimulus = [np.var(x[np.isfinite(x[:, k]), k], ddof=1) for k in range(x.shape[1])]
    noise = np.mean(per_stimulus)
    np.testing.assert_allclose(snr[0], np.sqrt(max(0, 1 - noise / total)) / np.sqrt(noise / total), rtol=1e-10)
    trials[:, :, 1] = np.nan
    trials[1:, :, 2] = np.nan  # one trial per stimulus: noise cannot be estimated
    snr = ncsnr_from_trials(trials)
    assert np.isnan(snr[1]) and np.isnan(snr[2])
    assert np.isnan(noise_ceiling_from_ncsnr(snr, 3)[1:]).all()
