"""Scores of encoding models per unit: Pearson r, noise ceilings, fraction of the ceiling.

Conventions (NSD data manual; Allen et al. 2022; Algonauts 2023):

- ncsnr, the noise-ceiling signal-to-noise ratio of a unit: its responses to each stimulus are
  repeated; noise sd = sqrt(mean over stimuli of the across-repeat variance, ddof=1); with the
  responses z-scored (total variance 1), signal sd = sqrt(max(0, 1 - noise variance));
  ncsnr = signal sd / noise sd.
- Noise ceiling, in percent of the variance of responses averaged over n repeats that a perfect
  model could explain: NC = 100 * ncsnr^2 / (ncsnr^2 + 1/n); with a different number of repeats
  per stimulus, 1/n becomes the mean of 1/n_i over the stimuli scored (NSD's (A/3 + B/2 + C/1) /
  (A + B + C)).
- Model accuracy as a fraction of that ceiling: r^2 / (NC / 100), with negative r counted as 0
  (Algonauts). It can exceed 1 by chance when the ceiling is low.

This module is the one implementation of these formulas: the importers (NSD from its ncsnr files,
Allen from single trials) store the ceilings it computes. Limits, each tested:

- identical repeats with signal (zero noise variance): ncsnr = inf, ceiling 100%;
- ncsnr = inf: ceiling 100% (not inf / inf);
- a unit with no variance at all (no signal, no noise): ncsnr 0, ceiling 0% (nothing to explain);
- NaN in single trials marks a missing trial (a stimulus shown fewer times): it is left out, as if
  the trial were not there; a unit whose noise cannot be estimated (no stimulus with two valid
  trials, or no valid trial) gets NaN, never 0. inf in trials is an error.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

_UNIT_CHUNK = 65536  # units per pass, so float64 temporaries stay ~n x 65,536


def _as_units(a: Any, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name} must be [n_stimuli, n_units] or [n_stimuli], got {a.shape}")
    return a


def pearson_r(y_true: Any, y_pred: Any) -> np.ndarray:
    """float64 [n_units]: Pearson correlation over stimuli between matching columns.

    y_true, y_pred: [n_stimuli, n_units] (or [n_stimuli] for one unit, giving shape [1]).
    A column that is constant in either input has no defined correlation: it scores 0 (never
    NaN). NaN in the data propagates to that unit.
    """
    a, b = _as_units(y_true, "y_true"), _as_units(y_pred, "y_pred")
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    n, u = a.shape
    out = np.zeros(u, np.float64)
    if n < 2:
        return out
    for j in range(0, u, _UNIT_CHUNK):
        x = np.asarray(a[:, j:j + _UNIT_CHUNK], np.float64)
        y = np.asarray(b[:, j:j + _UNIT_CHUNK], np.float64)
        # Constant columns: decided on the raw values, since after subtracting a rounded mean
        # they leave ~1e-17 residues whose "correlation" would be noise of either sign.
        constant = (x.max(0) == x.min(0)) | (y.max(0) == y.min(0))
        x = x - x.mean(0)
        y = y - y.mean(0)
        num = np.einsum("ij,ij->j", x, y)
        den = np.sqrt(np.einsum("ij,ij->j", x, x) * np.einsum("ij,ij->j", y, y))
        with np.errstate(invalid="ignore", divide="ignore"):
            r = num / den
        r = np.where(constant, 0.0, np.clip(r, -1.0, 1.0))
        out[j:j + _UNIT_CHUNK] = r
    return out


def noise_ceiling_from_ncsnr(ncsnr: Any, n_repeats: Any) -> np.ndarray:
    """float64, shape of ``ncsnr``: noise ceiling in percent (0-100) of trial-averaged responses.

    ncsnr: [n_units] (any shape, any float dtype) noise-ceiling SNR, e.g. NSD's ``{lh,rh}.ncsnr.mgh``.
    n_repeats: number of repeats averaged per stimulus: a scalar, or [n_stimuli] per-stimulus
        counts of the stimuli being scored (the formula then uses mean(1/n)).
    ncsnr = inf gives 100; NaN ncsnr stays NaN.
    """
    ncsnr = np.asarray(ncsnr, np.float64)
    reps = np.asarray(n_repeats, np.float64)
    if reps.size == 0 or not np.isfinite(reps).all() or np.any(reps < 1):
        raise ValueError("repeat counts must be finite and >= 1 (at least one stimulus)")
    inv = float(np.mean(1.0 / reps))
    snr2 = ncsnr**2
    with np.errstate(invalid="ignore"):
        nc = 100.0 * snr2 / (snr2 + inv)
    return np.where(np.isposinf(snr2), 100.0, nc)  # no noise at all: everything is explainable


def ncsnr_from_trials(trials: Any) -> np.ndarray:
    """float64 [n_units]: NSD's noise-ceiling SNR from single trials.

    trials: [n_repeats, n_stimuli, n_units] single-trial responses, any float dtype (a memmap is
        fine; read in unit chunks, computed in float64). Missing trials (a stimulus shown fewer
        times) are NaN and are left out; inf raises ValueError.
    Follows the NSD manual: per unit, z-score all trials (ddof=0, as ``scipy.stats.zscore``),
    noise variance = mean over stimuli with >= 2 trials of the across-repeat variance (ddof=1),
    signal sd = sqrt(max(0, 1 - noise variance)), ncsnr = signal sd / noise sd. NSD z-scores per
    scan session; here all trials are one session, so z-score the input per session beforehand
    if sessions differ in scale. A constant unit gets 0; a unit without noise gets inf; a unit
    whose noise cannot be estimated (no stimulus with two valid trials) gets NaN.
    """
    t = np.asarray(trials) if not isinstance(trials, np.ndarray) else trials
    if t.ndim != 3:
        raise ValueError(f"trials must be [n_repeats, n_stimuli, n_units], got {t.shape}")
    if t.shape[0] < 2:
        raise ValueError("need at least 2 repeats")
    u = t.shape[2]
    out = np.zeros(u, np.float64)
    for j in range(0, u, _UNIT_CHUNK):
        x = np.asarray(t[:, :, j:j + _UNIT_CHUNK], np.float64)
        if np.isinf(x).any():
            raise ValueError(f"trials hold inf (unit {j + int(np.argwhere(np.isinf(x))[0][2])}); NaN marks a missing trial")
        valid = np.isfinite(x)
        counts = valid.sum(0)  # [n_stimuli, c] trials per stimulus and unit
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # stimuli (or units) with no trial at all
            # Total variance of all trials (z-scoring makes it 1; ncsnr is scale-free, so use the
            # ratio directly instead of dividing by it first).
            total_var = np.nanvar(x, axis=(0, 1))
            mean = np.nanmean(x, axis=0)
            dev2 = np.nansum((x - mean) ** 2, axis=0)  # [n_stimuli, c]
            rep_var = np.where(counts >= 2, dev2 / np.maximum(counts - 1, 1), np.nan)
            noise_var = np.nanmean(rep_var, axis=0)
            noise_frac = noise_var / total_var
            signal_frac = np.clip(1.0 - noise_frac, 0.0, None)
            snr = np.sqrt(signal_frac) / np.sqrt(noise_frac)
        snr = np.where(total_var > 0, snr, 0.0)
        # Identical repeats leave ~1e-32 of rounding "noise" after the mean is subtracted.
        snr = np.where((total_var > 0) & (noise_frac <= 1e-12), np.inf, snr)
        # No stimulus with two valid trials (or no valid trial): the noise is unknown, so is ncsnr.
        snr = np.where(np.isfinite(noise_var) & np.isfinite(total_var), snr, np.nan)
        out[j:j + _UNIT_CHUNK] = snr
    return out


def split_half_ceiling(trials: Any) -> np.ndarray:
    """float64 [n_units]: split-half noise ceiling in percent, comparable to the NSD formula.

    trials: [n_repeats, n_stimuli, n_units], n_repeats >= 2 (NaN = missing trial).
    Averages even-numbered and odd-numbered repeats separately, correlates the two halves over
    stimuli per unit (r), and corrects to the reliability of the average of all repeats with
    Spearman-Brown, rho = 2r / (1 + r). A reliability is the share of the averaged response's
    variance that is signal, the same quantity as NC / 100, so the result is 100 * max(rho, 0).
    Exact for an even number of repeats; with an odd number the halves differ by one repeat.
    """
    t = np.asarray(trials) if not isinstance(trials, np.ndarray) else trials
    if t.ndim != 3:
        raise ValueError(f"trials must be [n_repeats, n_stimuli, n_units], got {t.shape}")
    if t.shape[0] < 2:
        raise ValueError("need at least 2 repeats")
    u = t.shape[2]
    out = np.zeros(u, np.float64)
    for j in range(0, u, _UNIT_CHUNK):
        x = np.asarray(t[:, :, j:j + _UNIT_CHUNK], np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN half -> NaN, left out below
            a = np.nanmean(x[0::2], axis=0)
            b = np.nanmean(x[1::2], axis=0)
        ok = np.isfinite(a) & np.isfinite(b)
        if ok.all():
            r = pearson_r(a, b)
        else:  # stimuli missing a half are left out, unit by unit
            r = np.array([pearson_r(a[ok[:, i], i], b[ok[:, i], i])[0] for i in range(a.shape[1])])
        rho = 2.0 * r / (1.0 + r)
        out[j:j + _UNIT_CHUNK] = 100.0 * np.clip(rho, 0.0, None)
    return out


def fraction_of_ceiling(r: Any, noise_ceiling_percent: Any, *, min_ceiling: float = 1e-6) -> np.ndarray:
    """float64, shape of ``r``: r^2 / (NC / 100), the share of explainable variance explained.

    r: Pearson r per unit (negative r counts as 0, as in Algonauts 2023).
    noise_ceiling_percent: NC per unit in percent (from :func:`noise_ceiling_from_ncsnr` or
        :func:`split_half_ceiling`). Where NC < ``min_ceiling`` percent (no explainable variance)
        or is NaN, the result is NaN.
    """
    r = np.asarray(r, np.float64)
    nc = np.asarray(noise_ceiling_percent, np.float64)
    r2 = np.clip(r, 0.0, None) ** 2
    ok = np.isfinite(nc) & (nc >= min_ceiling)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, r2 / (nc / 100.0), np.nan)
