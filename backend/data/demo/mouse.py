"""A simulated mouse: neurons in six visual areas with tuning planted along the hierarchy.

Areas sit on a stylised map of the dorsal visual areas (mm; x lateral, y anterior, VISp at the
origin) and are ordered by the anatomical/functional hierarchy score of Siegle et al. (2021):
VISp < VISl < VISrl < VISal < VISpm < VISam. Each neuron mixes three drives, each unit-variance
over stimuli:

    low level   contrast energy in a retinotopic receptive field of the grayscale image (mice see
                the Allen stimuli in grayscale), strongest in VISp
    category    animate / food / place content
    semantic    a random read-out of the caption's MiniLM embedding, growing along the hierarchy

plus independent Gaussian noise per trial. Signal sd / noise sd (ncsnr) varies from neuron to
neuron, so the per-neuron noise ceiling is known.
"""

from __future__ import annotations

import numpy as np

from backend.data.demo.features import gaussian_receptive_fields, standardise

#: area -> (centre x, centre y, radius x, radius y) in mm on the dorsal map, hierarchy level 0..1
MOUSE_AREAS: dict[str, tuple[tuple[float, float, float, float], float]] = {
    "VISp": ((0.0, 0.0, 1.15, 1.35), 0.0),
    "VISl": ((1.55, 0.15, 0.38, 0.62), 0.25),
    "VISrl": ((0.85, 1.75, 0.5, 0.32), 0.45),
    "VISal": ((1.55, 1.2, 0.32, 0.38), 0.55),
    "VISpm": ((-1.45, 0.35, 0.32, 0.75), 0.8),
    "VISam": ((-0.55, 1.7, 0.48, 0.35), 1.0),
}
CELL_TYPES = ("Cux2", "Rorb", "Scnn1a", "Rbp4", "Sst", "Vip")
#: Cre lines by the depth range (um) they are imaged at in the Allen Brain Observatory.
_CELL_TYPE_DEPTHS = {"Cux2": (150, 300), "Rorb": (275, 375), "Scnn1a": (350, 375), "Rbp4": (375, 450), "Sst": (175, 350), "Vip": (175, 250)}

MOUSE_TRUTH_DESCRIPTIONS = {
    "ncsnr": "planted signal sd / single-trial noise sd",
    "weight_low_level": "share of signal variance from receptive-field contrast",
    "weight_category": "share of signal variance from animate / food / place content",
    "weight_semantic": "share of signal variance from the caption's MiniLM embedding",
    "hierarchy": "planted hierarchy level of the neuron's area (0 = VISp, 1 = VISam)",
    "expected_test_r": "best achievable Pearson r on the test split (sqrt of the noise ceiling)",
    "rf_x": "receptive-field centre, image fraction from the left",
    "rf_y": "receptive-field centre, image fraction from the top",
}


def area_outline(name: str, n_points: int = 48) -> np.ndarray:
    """float32 [n_points, 2]: the area's ellipse on the dorsal map, mm."""
    (cx, cy, rx, ry), _ = MOUSE_AREAS[name]
    t = np.linspace(0, 2 * np.pi, n_points, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1).astype(np.float32)


def place_neurons(per_area: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Neuron positions, areas, depths and Cre lines. Arrays are [n = 6 * per_area]."""
    area, x, y, depth, cell_type = [], [], [], [], []
    for code, (name, ((cx, cy, rx, ry), _)) in enumerate(MOUSE_AREAS.items()):
        r = 0.92 * np.sqrt(rng.uniform(0, 1, per_area))
        t = rng.uniform(0, 2 * np.pi, per_area)
        x.append(cx + rx * r * np.cos(t))
        y.append(cy + ry * r * np.sin(t))
        types = rng.integers(0, len(CELL_TYPES), per_area)
        lo_hi = np.array([_CELL_TYPE_DEPTHS[CELL_TYPES[k]] for k in types], np.float32)
        depth.append(rng.uniform(lo_hi[:, 0], lo_hi[:, 1]))
        cell_type.append(types)
        area.append(np.full(per_area, code))
    return {
        "area": np.concatenate(area).astype(np.int16),
        "x": np.concatenate(x).astype(np.float32),
        "y": np.concatenate(y).astype(np.float32),
        "depth": np.concatenate(depth).astype(np.float32),
        "cell_type": np.concatenate(cell_type).astype(np.int16),
    }


def simulate_mouse(
    contrast: np.ndarray,
    categories: np.ndarray,
    caption_embeddings: np.ndarray,
    trial_stimuli: np.ndarray,
    rng: np.random.Generator,
    per_area: int = 250,
    n_repeats: int = 3,
) -> dict[str, np.ndarray]:
    """Responses of the simulated mouse, in units of the per-trial noise sd.

    contrast: float32 [n_stimuli, g, g]; categories: float32 [n_stimuli, 3];
    caption_embeddings: float32 [n_stimuli, d]; trial_stimuli: int64 [k] shown ``n_repeats`` times.
    Returns responses [n_stimuli, n], trials [n_repeats, k, n], noise_ceiling [n] (percent),
    the neuron table (see :func:`place_neurons`) and planted maps.
    """
    neurons = place_neurons(per_area, rng)
    n = len(neurons["area"])
    levels = np.array([level for _, level in MOUSE_AREAS.values()], np.float32)
    hierarchy = levels[neurons["area"]]

    # Retinotopy: each area maps its ellipse onto the visual field (mirror-reversed in
    # neighbouring areas in the real mouse; a plain linear map is enough to be recoverable).
    rf = np.empty((n, 3), np.float32)
    for code, ((cx, cy, rx, ry), level) in enumerate(MOUSE_AREAS.values()):
        m = neurons["area"] == code
        rf[m, 0] = 0.5 + 0.45 * (neurons["x"][m] - cx) / rx
        rf[m, 1] = 0.5 - 0.45 * (neurons["y"][m] - cy) / ry
        rf[m, 2] = 0.12 + 0.15 * level  # receptive fields grow along the hierarchy
    g = contrast.shape[1]
    low = standardise(contrast.reshape(len(contrast), g * g) @ gaussian_receptive_fields(rf[:, :2], rf[:, 2], g).T)

    cat_w = rng.standard_normal((categories.shape[1], n)).astype(np.float32)
    category = standardise(standardise(categories.astype(np.float32)) @ cat_w)
    sem_w = rng.standard_normal((caption_embeddings.shape[1], n)).astype(np.float32)
    semantic = standardise(standardise(caption_embeddings) @ sem_w)

    # Variance shares: low level fades and semantics grow along the hierarchy.
    w_low = (1 - hierarchy) ** 2 + 0.05
    w_sem = hierarchy**1.5 + 0.05
    w_cat = 0.3 * hierarchy + 0.05
    total = w_low + w_sem + w_cat
    w_low, w_sem, w_cat = w_low / total, w_sem / total, w_cat / total
    signal = standardise(np.sqrt(w_low) * low + np.sqrt(w_cat) * category + np.sqrt(w_sem) * semantic)
    ncsnr = np.exp(rng.normal(np.log(0.7), 0.45, n)).astype(np.float32)
    signal *= ncsnr

    n_stimuli = len(contrast)
    responses = signal + rng.standard_normal(signal.shape, dtype=np.float32)
    trials = np.empty((n_repeats, len(trial_stimuli), n), np.float32)
    trials[0] = responses[trial_stimuli]
    for r in range(1, n_repeats):
        trials[r] = signal[trial_stimuli] + rng.standard_normal((len(trial_stimuli), n), dtype=np.float32)
    responses[trial_stimuli] = trials.mean(axis=0)
    assert responses.shape == (n_stimuli, n)

    nc2 = ncsnr**2
    noise_ceiling = (100 * nc2 / (nc2 + 1.0 / n_repeats)).astype(np.float32)
    truth = {
        "ncsnr": ncsnr,
        "weight_low_level": w_low.astype(np.float32),
        "weight_category": w_cat.astype(np.float32),
        "weight_semantic": w_sem.astype(np.float32),
        "hierarchy": hierarchy,
        "expected_test_r": np.sqrt(noise_ceiling / 100).astype(np.float32),
        "rf_x": rf[:, 0],
        "rf_y": rf[:, 1],
    }
    return {"responses": responses, "trials": trials, "noise_ceiling": noise_ceiling, "neurons": neurons, "truth": truth}
