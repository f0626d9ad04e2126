"""The demo world: deterministic from its seed, the shape the issue asks for, and its planted tuning is really there."""

from __future__ import annotations

import hashlib
import inspect

import numpy as np
import pytest

from backend.config import demo_world_size
from backend.data.demo import mouse as mouse_sim
from backend.data.demo import pictograms
from backend.data.demo.human import ROI_NAMES
from backend.data.demo.world import ensure_demo_world
from backend.data.surface import adjacency, load_hemispheres


def digest(folder) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_other_world(tmp_path):
    size = {"n_train": 24, "n_test": 8, "neurons_per_area": 6}
    first = ensure_demo_world(seed=3, root=tmp_path / "a", **size)
    second = ensure_demo_world(seed=3, root=tmp_path / "b", **size)
    other = ensure_demo_world(seed=4, root=tmp_path / "c", **size)
    for dataset_id in first:
        files = digest(first[dataset_id])
        assert len(files) > 30
        assert files == digest(second[dataset_id])
        assert files["responses.npy"] != digest(other[dataset_id])["responses.npy"]


def test_generation_is_idempotent_and_never_lists_partial_worlds(tmp_path):
    size = {"n_train": 12, "n_test": 6, "neurons_per_area": 4}
    folders = ensure_demo_world(seed=1, root=tmp_path, **size)
    stamp = {k: (p / "manifest.json").stat().st_mtime_ns for k, p in folders.items()}
    again = ensure_demo_world(seed=1, root=tmp_path, **size)
    assert {k: (p / "manifest.json").stat().st_mtime_ns for k, p in again.items()} == stamp
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_default_size_meets_the_brief(monkeypatch):
    monkeypatch.delenv("CORTEXTUAL_DEMO_SIZE")
    n_train, n_test = demo_world_size()
    assert n_train >= 1000 and n_test >= 100
    assert inspect.signature(mouse_sim.simulate_mouse).parameters["per_area"].default >= 200
    assert len(pictograms.CATEGORIES) >= 40 and len(pictograms.GROUPS) >= 6


def test_test_stimuli_have_three_repeats_averaged(human, mouse):
    for ds in (human, mouse):
        test_rows = ds.stimuli.indices("test")
        np.testing.assert_array_equal(ds.trial_stimuli, test_rows)
        assert ds.trials.shape[0] == 3
        np.testing.assert_allclose(ds.responses[test_rows], ds.trials.mean(axis=0), atol=1e-5)


def test_human_has_every_planted_region_on_both_hemispheres(human):
    assert human.n_units == 20484
    labels = human.space.roi_labels
    for code, name in enumerate(ROI_NAMES[1:], start=1):
        assert (labels[:10242] == code).sum() > 40, name
        assert (labels[10242:] == code).sum() > 40, name
    assert set(human.truth) >= {"ncsnr", "signal_low_level", "signal_category", "signal_caption", "expected_test_r"}


def test_noise_ceiling_is_the_nsd_formula_and_matches_the_trials(human):
    ncsnr = human.truth_map("ncsnr")
    np.testing.assert_allclose(human.noise_ceiling, 100 * ncsnr**2 / (ncsnr**2 + 1 / 3), rtol=1e-5)
    assert (ncsnr[human.space.roi_labels == 0] == 0).all()
    # NSD's estimate from the single trials: noise variance from repeat scatter, signal from the rest.
    trials = np.asarray(human.trials, np.float64)
    noise_var = trials.var(axis=0, ddof=1).mean(axis=0)
    signal_var = np.clip(trials.mean(axis=0).var(axis=0, ddof=1) - noise_var / 3, 0, None)
    estimate = np.sqrt(signal_var / noise_var)
    assert 0.9 < noise_var.mean() < 1.1, "noise is unit variance per trial"
    regions = human.space.roi_labels > 0
    assert estimate[regions].mean() > 3 * estimate[~regions].mean()
    assert np.corrcoef(estimate, ncsnr)[0, 1] > 0.5


def test_noise_is_spatially_smooth(human):
    noise = np.asarray(human.trials[0] - human.trials[1], np.float64)  # the signal cancels
    lh = load_hemispheres("fsaverage5", "white_matter")["lh"]
    i, j = adjacency(lh.faces, len(lh.coords)).nonzero()
    pick = np.random.default_rng(0).choice(len(i), 2000, replace=False)
    z = (noise - noise.mean(0)) / noise.std(0)
    neighbour_r = np.mean(z[:, i[pick]] * z[:, j[pick]])
    distant_r = np.mean(z[:, i[pick]] * z[:, np.random.default_rng(1).permutation(j[pick])])
    assert neighbour_r > 0.6 and abs(distant_r) < 0.15


def test_early_visual_cortex_is_retinotopic(human):
    """Left EVC sees the right half of the image and answers to contrast there."""
    from PIL import Image

    from backend.data.demo.features import contrast_energy_grid

    rf_x = human.truth_map("rf_x")
    labels = human.space.roi_labels
    assert (rf_x[:10242][labels[:10242] == 1] >= 0.5).all() and (rf_x[10242:][labels[10242:] == 1] <= 0.5).all()
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in human.stimuli.image_paths])
    grid = contrast_energy_grid(images, 16)
    right_minus_left = grid[:, :, 8:].mean(axis=(1, 2)) - grid[:, :, :8].mean(axis=(1, 2))
    evc = np.flatnonzero(labels == 1)
    lh, rh = evc[evc < 10242], evc[evc >= 10242]
    responses = np.asarray(human.responses, np.float64)
    lateralisation = responses[:, lh].mean(1) - responses[:, rh].mean(1)
    assert np.corrcoef(lateralisation, right_minus_left)[0, 1] > 0.5


@pytest.mark.parametrize(("region", "column"), [("animate", 0), ("food", 1), ("place", 2)])
def test_category_regions_prefer_their_category(human, small_world, region, column):
    from backend.data.demo import scenes
    from backend.data.demo.world import _category_features

    features = _category_features([scenes.parse(c) for c in human.stimuli.captions])
    has = features[:, column] > 0
    roi = human.space.roi_labels == ROI_NAMES.index(region)
    mean_response = np.asarray(human.responses, np.float64)[:, roi].mean(axis=1)
    effect = mean_response[has].mean() - mean_response[~has].mean()
    assert has.sum() > 5 and effect > 0.5, f"{region}: preferred minus other = {effect:.2f} noise sd"


def test_mouse_areas_and_hierarchy(mouse):
    space = mouse.space
    assert space.areas == tuple(mouse_sim.MOUSE_AREAS)
    counts = np.bincount(space.area, minlength=6)
    assert (counts == counts[0]).all()
    for code, name in enumerate(space.areas):
        (cx, cy, rx, ry), _ = mouse_sim.MOUSE_AREAS[name]
        m = space.area == code
        assert (((space.x[m] - cx) / rx) ** 2 + ((space.y[m] - cy) / ry) ** 2 <= 1).all(), f"{name} neurons lie in {name}"
    low = mouse.truth_map("weight_low_level")
    semantic = mouse.truth_map("weight_semantic")
    per_area_low = [low[space.area == k].mean() for k in range(6)]
    per_area_sem = [semantic[space.area == k].mean() for k in range(6)]
    assert int(np.argmax(per_area_low)) == space.areas.index("VISp")
    assert per_area_sem == sorted(per_area_sem), "semantic drive grows along the hierarchy"
