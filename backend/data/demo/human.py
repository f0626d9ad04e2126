"""A simulated human subject on fsaverage5 whose tuning is planted, so analyses can be checked.

Regions (both hemispheres, placed where their real counterparts lie on the pial surface):

    EVC       early visual cortex, retinotopic: each vertex sums local contrast energy over a
              Gaussian receptive field in the contralateral visual field, larger with eccentricity
    animate   ventral temporal, lateral fusiform: animals and people
    food      ventral temporal, between: food
    place     ventral temporal, medial (parahippocampal): buildings, vehicles and outdoor scenes
    caption   lateral occipitotemporal: the caption's MiniLM embedding (caption-level meaning),
              half of it the part a bag of words cannot give, so relations matter there

Every vertex has unit-variance, spatially smooth Gaussian noise per trial; inside a region its
signal has standard deviation ``ncsnr`` (peaking at the region's centre), outside it is zero. So
the noise ceiling is known exactly: NC = 100 * ncsnr^2 / (ncsnr^2 + 1/n_repeats).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.data.demo.features import gaussian_receptive_fields, standardise
from backend.data.surface import HEMISPHERES, load_hemispheres, smooth, smoothing_operator

ROI_NAMES = ("none", "EVC", "animate", "food", "place", "caption")

#: name -> (left-hemisphere pial target in mm, radius on the sphere in degrees, peak ncsnr)
_REGIONS = {
    "EVC": ((-10.0, -95.0, 0.0), 34.0, 1.4),
    "animate": ((-42.0, -58.0, -20.0), 16.0, 1.2),
    "food": ((-30.0, -68.0, -14.0), 13.0, 1.0),
    "place": ((-26.0, -42.0, -12.0), 14.0, 1.1),
    "caption": ((-50.0, -62.0, 10.0), 22.0, 1.2),
}
NOISE_SMOOTHING_STEPS = 4  # ~8 mm FWHM on fsaverage5: the scale of fMRI noise correlations
N_TUNING_BUMPS = 6  # smooth spatial basis for the caption region's embedding weights


@dataclass(frozen=True)
class SurfaceLayout:
    """Where the planted regions lie. All arrays are over the 20,484 lh+rh vertices.

    labels:  int16, index into ROI_NAMES
    profile: float32 in 0..1, 1 at a region's centre falling to 0 at its border
    ncsnr:   float32, signal sd / noise sd
    rf:      float32 [n, 3], receptive field (x, y, sigma) in image fractions; NaN outside EVC
    sphere:  float32 [n, 3] unit vectors, for smooth spatial bases
    """

    labels: np.ndarray
    profile: np.ndarray
    ncsnr: np.ndarray
    rf: np.ndarray
    sphere: np.ndarray


def plant_layout() -> SurfaceLayout:
    """Place the regions on fsaverage5 (deterministic: it depends on the mesh only)."""
    pial, sphere = load_hemispheres("fsaverage5", "pial"), load_hemispheres("fsaverage5", "sphere")
    labels, profiles, ncsnrs, rfs, units = [], [], [], [], []
    for hemi in HEMISPHERES:
        unit = sphere[hemi].coords / np.linalg.norm(sphere[hemi].coords, axis=1, keepdims=True)
        n = len(unit)
        label = np.zeros(n, np.int16)
        profile = np.zeros(n, np.float32)
        best = np.full(n, np.inf, np.float32)
        centres = {}
        for code, (name, (target, radius, _)) in enumerate(_REGIONS.items(), start=1):
            target = np.array(target, np.float32) * (1 if hemi == "lh" else np.array([-1, 1, 1], np.float32))
            centre = unit[np.argmin(np.linalg.norm(pial[hemi].coords - target, axis=1))]
            centres[name] = centre
            angle = np.degrees(np.arccos(np.clip(unit @ centre, -1, 1)))
            # Relative distance decides overlaps, so neighbouring regions share a clean border.
            rel = angle / radius
            inside = (rel < 1) & (rel < best)
            label[inside] = code
            profile[inside] = 1 - rel[inside] ** 2
            best = np.where(inside, rel, best)
        peak = np.array([0.0] + [spec[2] for spec in _REGIONS.values()], np.float32)
        ncsnr = peak[label] * np.sqrt(profile)
        rfs.append(_retinotopy(unit, centres["EVC"], label == 1, right_field=hemi == "lh"))
        labels.append(label), profiles.append(profile), ncsnrs.append(ncsnr), units.append(unit)
    return SurfaceLayout(
        labels=np.concatenate(labels),
        profile=np.concatenate(profiles),
        ncsnr=np.concatenate(ncsnrs).astype(np.float32),
        rf=np.concatenate(rfs),
        sphere=np.concatenate(units).astype(np.float32),
    )


def _retinotopy(unit: np.ndarray, centre: np.ndarray, mask: np.ndarray, right_field: bool) -> np.ndarray:
    """float32 [n, 3] (x, y, sigma) receptive fields for EVC vertices, NaN elsewhere.

    Polar angle follows the direction from the region's centre on the sphere, eccentricity the
    distance; each hemisphere sees the contralateral half of the image (left hemisphere: right).
    """
    # Local tangent frame at the centre: u points superior-ish, v completes it.
    up = np.array([0.0, 0.0, 1.0], np.float32)
    u = up - (up @ centre) * centre
    u /= np.linalg.norm(u)
    v = np.cross(centre, u)
    d = unit - centre
    a, b = d @ u, d @ v
    radius = np.abs(np.stack([a, b])[:, mask]).max() + 1e-6
    ecc = np.clip(np.hypot(a, b) / radius, 0, 1)  # 0 (fovea) .. 1 (periphery)
    angle = np.arctan2(a, b)  # vertical position of the field follows u
    rf = np.full((len(unit), 3), np.nan, np.float32)
    horizontal = np.abs(np.cos(angle)) * ecc * 0.5
    x = 0.5 + (horizontal if right_field else -horizontal)
    y = 0.5 + np.sin(angle) * ecc * 0.5  # superior cortex (cuneus) -> lower visual field
    sigma = 0.04 + 0.12 * ecc
    rf[mask] = np.stack([x, y, sigma], axis=1)[mask]
    return rf


def simulate_human(
    contrast: np.ndarray,
    categories: np.ndarray,
    caption_embeddings: np.ndarray,
    relation_residuals: np.ndarray,
    trial_stimuli: np.ndarray,
    rng: np.random.Generator,
    n_repeats: int = 3,
) -> dict[str, np.ndarray]:
    """Responses of the simulated subject, in units of the per-trial noise sd.

    contrast:           float32 [n_stimuli, g, g] contrast energy grid (see image_features)
    categories:         float32 [n_stimuli, 3] presence of animate, food and place content
    caption_embeddings: float32 [n_stimuli, d] MiniLM embeddings of the reference captions
    relation_residuals: float32 [n_stimuli, d] the part of each caption embedding that the
                        average of its word embeddings does not predict linearly
    trial_stimuli:      int64 [k], stimuli shown ``n_repeats`` times (the test split)

    Returns responses [n_stimuli, 20484] (single trial for the others, the mean of the repeats for
    trial stimuli), trials [n_repeats, k, 20484], noise_ceiling [20484] (percent, for the mean of
    ``n_repeats``), roi_labels [20484] and planted maps.
    """
    layout = plant_layout()
    n_stimuli = contrast.shape[0]
    n_units = len(layout.labels)
    families = {
        "low_level": _low_level_signal(contrast, layout),
        "category": _category_signal(categories, layout, rng),
        "caption": _caption_signal(caption_embeddings, relation_residuals, layout, rng),
    }
    signal = np.zeros((n_stimuli, n_units), np.float32)
    for drive in families.values():
        signal += drive
    signal *= layout.ncsnr[None, :]

    n_rows = n_stimuli + (n_repeats - 1) * len(trial_stimuli)
    noise = _smooth_noise(n_rows, rng)
    responses = signal + noise[:n_stimuli]
    trials = np.empty((n_repeats, len(trial_stimuli), n_units), np.float32)
    trials[0] = responses[trial_stimuli]
    for r in range(1, n_repeats):
        start = n_stimuli + (r - 1) * len(trial_stimuli)
        trials[r] = signal[trial_stimuli] + noise[start : start + len(trial_stimuli)]
    responses[trial_stimuli] = trials.mean(axis=0)

    nc2 = layout.ncsnr**2
    noise_ceiling = (100 * nc2 / (nc2 + 1.0 / n_repeats)).astype(np.float32)
    truth = {
        "ncsnr": layout.ncsnr,
        "signal_low_level": np.where(layout.labels == 1, layout.ncsnr, 0).astype(np.float32),
        "signal_category": np.where(np.isin(layout.labels, [2, 3, 4]), layout.ncsnr, 0).astype(np.float32),
        "signal_caption": np.where(layout.labels == 5, layout.ncsnr, 0).astype(np.float32),
        "expected_test_r": np.sqrt(noise_ceiling / 100).astype(np.float32),
        "rf_x": layout.rf[:, 0],
        "rf_y": layout.rf[:, 1],
        "rf_sigma": layout.rf[:, 2],
    }
    return {
        "responses": responses,
        "trials": trials,
        "noise_ceiling": noise_ceiling,
        "roi_labels": layout.labels,
        "truth": truth,
    }


HUMAN_TRUTH_DESCRIPTIONS = {
    "ncsnr": "planted noise-ceiling SNR (signal sd / single-trial noise sd)",
    "signal_low_level": "signal sd driven by local contrast in a receptive field (EVC)",
    "signal_category": "signal sd driven by animate / food / place content",
    "signal_caption": "signal sd driven by the caption's MiniLM embedding (caption region)",
    "expected_test_r": "best achievable Pearson r on the test split (sqrt of the noise ceiling)",
    "rf_x": "receptive-field centre, image fraction from the left (EVC only)",
    "rf_y": "receptive-field centre, image fraction from the top (EVC only)",
    "rf_sigma": "receptive-field size (Gaussian sigma), image fraction (EVC only)",
}


def _low_level_signal(contrast: np.ndarray, layout: SurfaceLayout) -> np.ndarray:
    n, g, _ = contrast.shape
    out = np.zeros((n, len(layout.labels)), np.float32)
    evc = np.flatnonzero(layout.labels == 1)
    weights = gaussian_receptive_fields(layout.rf[evc, :2], layout.rf[evc, 2], g)
    out[:, evc] = standardise(contrast.reshape(n, g * g) @ weights.T)
    return out


def _category_signal(categories: np.ndarray, layout: SurfaceLayout, rng: np.random.Generator) -> np.ndarray:
    """Each ventral region prefers its own content, with a little vertex-to-vertex variety."""
    out = np.zeros((len(categories), len(layout.labels)), np.float32)
    feats = standardise(categories.astype(np.float32))
    for column, code in enumerate((2, 3, 4)):
        idx = np.flatnonzero(layout.labels == code)
        weights = np.full((feats.shape[1], len(idx)), 0.0, np.float32)
        weights[column] = 1.0
        weights += 0.15 * rng.standard_normal(weights.shape).astype(np.float32)
        out[:, idx] = standardise(feats @ weights)
    return out


def _caption_signal(
    embeddings: np.ndarray, residuals: np.ndarray, layout: SurfaceLayout, rng: np.random.Generator
) -> np.ndarray:
    """Smoothly varying linear read-outs of the caption embedding and of its relation residual."""
    out = np.zeros((len(embeddings), len(layout.labels)), np.float32)
    idx = np.flatnonzero(layout.labels == 5)
    # Smooth spatial basis: Gaussian bumps on the sphere around random vertices of the region.
    centres = layout.sphere[rng.choice(idx, N_TUNING_BUMPS, replace=False)]
    basis = np.exp(-((1 - layout.sphere[idx] @ centres.T) / 0.004)).astype(np.float32)  # [v, k]
    basis /= basis.sum(axis=1, keepdims=True)
    d = embeddings.shape[1]
    w_caption = basis @ rng.standard_normal((N_TUNING_BUMPS, d)).astype(np.float32)  # [v, d]
    w_relation = basis @ rng.standard_normal((N_TUNING_BUMPS, d)).astype(np.float32)
    caption = standardise(standardise(embeddings) @ w_caption.T)
    relation = standardise(standardise(residuals) @ w_relation.T)
    out[:, idx] = standardise(caption + relation)
    return out


def _smooth_noise(n_rows: int, rng: np.random.Generator) -> np.ndarray:
    """float32 [n_rows, 20484]: unit-variance noise, smooth along each hemisphere's surface."""
    mesh = load_hemispheres("fsaverage5", "white_matter")
    parts = []
    for hemi in HEMISPHERES:
        faces, n = mesh[hemi].faces, len(mesh[hemi].coords)
        operator = smoothing_operator(faces, n)
        white = rng.standard_normal((n, n_rows), dtype=np.float32)
        smoothed = smooth(white, operator, NOISE_SMOOTHING_STEPS)
        parts.append((smoothed / smoothed.std(axis=1, keepdims=True)).T)
    return np.ascontiguousarray(np.concatenate(parts, axis=1))
