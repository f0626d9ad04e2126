"""CLIP-S / RefCLIP-S over arrays (backend.analysis.clip_score): against a direct re-implementation
of the reference code's formula (jmhessel/clipscore, clipscore.py) and hand-computed values."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from backend.analysis.clip_score import clip_scores, harmonic_mean, unit_rows


def reference_code(images, candidates, references, w=2.5):
    """jmhessel/clipscore's arithmetic, step by step (get_clip_score, get_refonlyclipscore, main)
    on precomputed features: numpy >= 1.21 normalisation, per-item scores, then np.mean."""
    images = images / np.sqrt(np.sum(images**2, axis=1, keepdims=True))
    candidates = candidates / np.sqrt(np.sum(candidates**2, axis=1, keepdims=True))
    per_image_text = w * np.clip(np.sum(images * candidates, axis=1), 0, None)

    flattened_refs, flattened_refs_idxs = [], []
    for idx, refs in enumerate(references):
        flattened_refs.extend(refs)
        flattened_refs_idxs.extend([idx for _ in refs])
    flattened_refs = np.vstack(flattened_refs)
    flattened_refs = flattened_refs / np.sqrt(np.sum(flattened_refs**2, axis=1, keepdims=True))
    cand_idx2refs = collections.defaultdict(list)
    for ref_feats, cand_idx in zip(flattened_refs, flattened_refs_idxs):
        cand_idx2refs[cand_idx].append(ref_feats)
    cand_idx2refs = {k: np.vstack(v) for k, v in cand_idx2refs.items()}
    per_text_text = np.array([np.max(cand.dot(cand_idx2refs[i].transpose())) for i, cand in enumerate(candidates)])

    refclip = 2 * per_image_text * per_text_text / (per_image_text + per_text_text)
    return np.mean(per_image_text), np.mean(refclip), per_image_text, per_text_text, refclip


def _awkward(seed=0, n=7, d=12, m=(1, 3, 2, 5, 1, 4, 2)):
    """Unnormalised vectors of mixed scales; several references per item, in varying numbers;
    some image-candidate cosines negative (clipped); every item has a reference with a positive
    cosine to its candidate (where the reference code is defined the same as the paper)."""
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n, d)) * rng.uniform(0.01, 50, size=(n, 1))
    candidates = rng.normal(size=(n, d)) * rng.uniform(0.01, 50, size=(n, 1))
    candidates[:3] = -images[:3] + 0.3 * rng.normal(size=(3, d))  # negative cosines
    refs = []
    for i, k in enumerate(m):
        r = rng.normal(size=(k, d)) * rng.uniform(0.1, 9, size=(k, 1))
        r[0] = candidates[i] * 3 + rng.normal(size=d) * np.linalg.norm(candidates[i])  # one related
        refs.append(r)
    return images, candidates, refs


def test_matches_the_reference_code_on_awkward_inputs():
    images, candidates, refs = _awkward()
    clip_mean, refclip_mean, per_it, per_tt, per_ref = reference_code(images, candidates, refs)
    assert (np.sum(unit_rows(images) * unit_rows(candidates), 1) < 0).sum() >= 3  # the clip is exercised
    assert np.all(per_tt > 0)
    out = clip_scores(images, candidates, refs)
    assert out["n"] == 7
    np.testing.assert_allclose(out["per_item"]["clip_s"], per_it, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out["per_item"]["text_s"], per_tt, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out["per_item"]["refclip_s"], per_ref, rtol=0, atol=1e-12)
    assert out["clip_s"] == pytest.approx(clip_mean, abs=1e-12)
    assert out["refclip_s"] == pytest.approx(refclip_mean, abs=1e-12)
    # the corpus RefCLIP-S is the mean of per-item harmonic means, not the harmonic mean of means
    assert out["refclip_s"] != pytest.approx(float(harmonic_mean(clip_mean, per_tt.mean())), abs=1e-6)


def test_references_as_one_array_equal_a_list_of_arrays():
    rng = np.random.default_rng(1)
    images, candidates, refs = rng.normal(size=(5, 8)), rng.normal(size=(5, 8)), rng.normal(size=(5, 3, 8))
    a = clip_scores(images, candidates, refs)
    b = clip_scores(images, candidates, [r for r in refs])
    assert a["clip_s"] == b["clip_s"] and a["refclip_s"] == b["refclip_s"]
    refs[:, :, :] = np.abs(refs) * np.sign(candidates)[:, None, :]  # all positive cosines
    np.testing.assert_allclose(clip_scores(images, candidates, refs)["refclip_s"],
                               reference_code(images, candidates, list(refs))[1], atol=1e-12)


def test_float32_inputs_are_computed_in_float64():
    images, candidates, refs = _awkward(seed=3)
    f32 = clip_scores(images.astype(np.float32), candidates.astype(np.float32), [r.astype(np.float32) for r in refs])
    # the same float32 values, promoted first: identical to the last bit
    f64 = clip_scores(images.astype(np.float32).astype(np.float64), candidates.astype(np.float32).astype(np.float64),
                      [r.astype(np.float32).astype(np.float64) for r in refs])
    assert f32["per_item"]["clip_s"].dtype == np.float64
    assert f32["clip_s"] == f64["clip_s"] and f32["refclip_s"] == f64["refclip_s"]
    np.testing.assert_array_equal(f32["per_item"]["refclip_s"], f64["per_item"]["refclip_s"])
    # and the float32 rounding of the inputs moves the scores by float32's precision, no more
    exact = clip_scores(images, candidates, refs)
    assert f32["refclip_s"] == pytest.approx(exact["refclip_s"], abs=1e-6)


def test_scale_does_not_matter():
    images, candidates, refs = _awkward(seed=4)
    a = clip_scores(images, candidates, refs)
    b = clip_scores(images * 1e-30, candidates * 1e20, [r * 7.5 for r in refs])
    assert a["clip_s"] == pytest.approx(b["clip_s"], abs=1e-12)
    assert a["refclip_s"] == pytest.approx(b["refclip_s"], abs=1e-12)


def test_hand_computed_values():
    # item 0: cos(image, cand) = 0.6, references at cos 0.8 and -1 -> text term 0.8
    # item 1: cos(image, cand) = -0.6 (clipped: CLIP-S 0), reference identical (cos 1)
    images = np.array([[1.0, 0.0, 0.0], [-3.0, 0.0, 0.0]])
    candidates = np.array([[0.6, 0.8, 0.0], [0.6, 0.8, 0.0]]) * 10
    refs = [np.array([[0.0, 1.0, 0.0], [-0.6, -0.8, 0.0]]), np.array([[6.0, 8.0, 0.0]])]
    out = clip_scores(images, candidates, refs)
    np.testing.assert_allclose(out["per_item"]["cos_image"], [0.6, -0.6], atol=1e-15)
    np.testing.assert_allclose(out["per_item"]["clip_s"], [1.5, 0.0], atol=1e-15)
    np.testing.assert_allclose(out["per_item"]["text_s"], [0.8, 1.0], atol=1e-15)
    h0 = 2 * 1.5 * 0.8 / (1.5 + 0.8)  # 1.0434782608695652
    np.testing.assert_allclose(out["per_item"]["refclip_s"], [h0, 0.0], atol=1e-15)
    assert out["clip_s"] == pytest.approx(0.75, abs=1e-15)
    assert out["refclip_s"] == pytest.approx(h0 / 2, abs=1e-15)
    # w scales the image term only
    w1 = clip_scores(images, candidates, refs, w=1.0)
    np.testing.assert_allclose(w1["per_item"]["text_s"], [0.8, 1.0], atol=1e-15)
    assert w1["per_item"]["refclip_s"][0] == pytest.approx(2 * 0.6 * 0.8 / 1.4, abs=1e-15)


def test_negative_reference_cosines_are_clipped_as_in_the_paper():
    # The paper clips the text term at 0; the reference code does not (it would give a negative
    # harmonic mean here: 2 * 2.5 * -0.5 / (2.5 - 0.5) = -1.25).
    images, candidates = np.array([[1.0, 0.0]]), np.array([[1.0, 0.0]])
    refs = [np.array([[-1.0, np.sqrt(3.0)]])]  # cos -0.5
    assert reference_code(images, candidates, refs)[1] == pytest.approx(-1.25)
    out = clip_scores(images, candidates, refs)
    assert out["per_item"]["text_s"][0] == 0.0
    assert out["clip_s"] == pytest.approx(2.5) and out["refclip_s"] == 0.0


def test_zero_vectors_have_cosine_zero_and_no_nan():
    images = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    candidates = np.array([[1.0, 0.0], [0.0, 0.0], [2.0, 0.0]], dtype=np.float32)
    refs = [np.array([[1.0, 0.0]]), np.array([[1.0, 0.0]]), np.zeros((2, 2))]
    with np.errstate(all="raise"):
        out = clip_scores(images, candidates, refs)
    for values in out["per_item"].values():
        assert not np.isnan(values).any()
    np.testing.assert_array_equal(out["per_item"]["clip_s"], [0.0, 0.0, 2.5])
    np.testing.assert_array_equal(out["per_item"]["text_s"], [1.0, 0.0, 0.0])
    # item 0: H(0, 1) = 0; item 1: H(0, 0) = 0 (not 0/0); item 2: H(2.5, 0) = 0
    np.testing.assert_array_equal(out["per_item"]["refclip_s"], [0.0, 0.0, 0.0])
    assert out["clip_s"] == pytest.approx(2.5 / 3) and out["refclip_s"] == 0.0


def test_without_references_and_with_an_empty_reference_set():
    images, candidates, refs = _awkward(seed=5)
    alone = clip_scores(images, candidates)
    assert alone["refclip_s"] is None and "refclip_s" not in alone["per_item"]
    assert alone["clip_s"] == clip_scores(images, candidates, refs)["clip_s"]
    refs[2] = np.zeros((0, images.shape[1]))
    out = clip_scores(images, candidates, refs)
    assert np.isnan(out["per_item"]["refclip_s"][2])
    kept = [i for i in range(len(refs)) if i != 2]
    assert out["refclip_s"] == pytest.approx(np.mean(out["per_item"]["refclip_s"][kept]))
    assert clip_scores(images[:1], candidates[:1], [[]])["refclip_s"] is None


def test_shape_errors_are_one_line():
    rng = np.random.default_rng(0)
    images, candidates = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    with pytest.raises(ValueError, match="both be"):
        clip_scores(images, candidates[:2])
    with pytest.raises(ValueError, match="one set per candidate"):
        clip_scores(images, candidates, [rng.normal(size=(1, 4))] * 2)
    with pytest.raises(ValueError, match=r"item 1 must be \[m, 4\]"):
        clip_scores(images, candidates, [rng.normal(size=(1, 4)), rng.normal(size=(1, 5)), rng.normal(size=(1, 4))])
    with pytest.raises(ValueError, match="no items"):
        clip_scores(np.zeros((0, 4)), np.zeros((0, 4)))
