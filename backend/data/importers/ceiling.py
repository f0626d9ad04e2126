"""Noise ceilings from ncsnr, NSD's way (Allen et al. 2022, "noise ceiling" in the NSD data manual).

ncsnr is the noise-ceiling signal-to-noise ratio of a unit: the sd of its signal over stimuli
divided by the sd of its trial-to-trial noise, for responses z-scored per unit. The noise ceiling
of responses averaged over n trials, in percent of their variance, is

    NC = 100 * ncsnr^2 / (ncsnr^2 + 1/n)

and when stimuli were averaged over different numbers of trials, 1/n becomes the mean of 1/n_i
over the stimuli evaluated (NSD: (A/3 + B/2 + C/1) / (A + B + C) for A, B, C stimuli with 3, 2, 1
trials).
"""

from __future__ import annotations

import numpy as np


def noise_ceiling_from_ncsnr(ncsnr: np.ndarray, trial_counts: np.ndarray) -> np.ndarray:
    """float32 [n_units], percent: ncsnr float [n_units]; trial_counts int [n_stimuli] (each >= 1)."""
    counts = np.asarray(trial_counts, dtype=np.float64)
    if counts.size == 0 or counts.min() < 1:
        raise ValueError("every evaluated stimulus needs at least one trial")
    inverse_n = float(np.mean(1.0 / counts))
    snr2 = np.asarray(ncsnr, dtype=np.float64) ** 2
    return (100.0 * snr2 / (snr2 + inverse_n)).astype(np.float32)


def ncsnr_from_trials(trials: np.ndarray) -> np.ndarray:
    """float32 [n_units]: ncsnr estimated from single trials float [n_repeats, n_stimuli, n_units].

    As NSD does: z-score each unit over all its trials; the noise variance is the mean over stimuli
    of the variance across repeats (ddof=1); the signal variance is what is left of the total (1),
    floored at 0.
    """
    trials = np.asarray(trials, dtype=np.float64)
    if trials.shape[0] < 2:
        raise ValueError("ncsnr needs at least two repeats per stimulus")
    flat = trials.reshape(-1, trials.shape[-1])
    sd = flat.std(axis=0)
    sd[sd == 0] = 1.0
    z = (trials - flat.mean(axis=0)) / sd
    noise_var = z.var(axis=0, ddof=1).mean(axis=0)
    signal_sd = np.sqrt(np.clip(1.0 - noise_var, 0.0, None))
    noise_sd = np.sqrt(noise_var)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(noise_sd > 0, signal_sd / noise_sd, 0.0)
    return out.astype(np.float32)
