"""Image metrics against reference implementations (torchmetrics and scikit-image, `dev` extra).

Compared here, on random and structured images (gradients, checkerboards, discs, smooth noise,
and degraded copies: noise, blur, shift, contrast change):
* SSIM vs scikit-image ``rgb2gray`` + ``structural_similarity`` with the reconstruction
  literature's arguments (our default) and vs torchmetrics ``StructuralSimilarityIndexMeasure``
  (Gaussian 11 x 11, sigma 1.5, data_range 1), which averages the same SSIM map over the whole
  mirror-padded image (our ``border="reflect"``) -- both to 1e-9 (float64 throughout);
* PixCorr vs torchmetrics ``pearson_corrcoef`` and ``np.corrcoef`` -- to 1e-9;
* 2-way identification vs a transcription of MindEye's ``np.corrcoef``-based evaluation -- exact.
The resize step (torch ``interpolate``, antialiased bilinear, as torchvision ``Resize``) has no
reference here (torchvision is not installed); it is checked for identity at the same size and
for preserving constants, and the SSIM/PixCorr comparisons at the default size run on its output.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.analysis.image_metrics import (
    pixcorr,
    resize_images,
    rgb_to_gray,
    ssim,
    to_float_images,
    paired_similarity,
    top1_identification,
    two_way_identification,
)


def _structured_images(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """float64 [n, h, w, 3] in [0, 1]: a mix of natural-ish structure and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    out = []
    for i in range(n):
        kind = i % 5
        if kind == 0:       # colour gradients
            img = np.stack([xx, yy, 1 - xx * yy], -1)
        elif kind == 1:     # checkerboard with a random period
            p = rng.integers(3, 9)
            c = ((np.mgrid[0:h, 0:w][0] // p + np.mgrid[0:h, 0:w][1] // p) % 2).astype(float)
            img = np.stack([c, 0.5 * c, 1 - c], -1)
        elif kind == 2:     # discs
            img = np.zeros((h, w, 3))
            for _ in range(4):
                cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.3)
                img[(yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2] = rng.uniform(0, 1, 3)
        elif kind == 3:     # smooth noise (blurred with a box filter)
            z = rng.uniform(0, 1, (h + 8, w + 8, 3))
            img = sum(z[a:a + h, b:b + w] for a in range(8) for b in range(8)) / 64
        else:               # white noise
            img = rng.uniform(0, 1, (h, w, 3))
        out.append(np.clip(img, 0, 1))
    return np.stack(out)


def _degrade(images: np.ndarray, seed: int = 1) -> np.ndarray:
    """Reconstruction-like copies: noise, blur, shift, contrast change, or an unrelated image."""
    rng = np.random.default_rng(seed)
    out = []
    for i, img in enumerate(images):
        kind = i % 5
        if kind == 0:
            d = img + rng.normal(0, 0.1, img.shape)
        elif kind == 1:
            d = (img + np.roll(img, 1, 0) + np.roll(img, 1, 1) + np.roll(img, (1, 1), (0, 1))) / 4
        elif kind == 2:
            d = np.roll(img, (3, -2), (0, 1))
        elif kind == 3:
            d = 0.5 * img + 0.2
        else:
            d = rng.uniform(0, 1, img.shape)
        out.append(np.clip(d, 0, 1))
    return np.stack(out)


@pytest.fixture(scope="module")
def pairs():
    a = _structured_images(10, 64, 64)
    return a, _degrade(a)


# ------------------------------------------------------------------------------------- SSIM

def _torchmetrics_ssim(ga: np.ndarray, gb: np.ndarray, full_image: bool = False):
    """torchmetrics' SSIM (module API) on grey images [n, H, W], per image; optionally the map."""
    from torchmetrics.image import StructuralSimilarityIndexMeasure

    metric = StructuralSimilarityIndexMeasure(gaussian_kernel=True, sigma=1.5, kernel_size=11,
                                              data_range=1.0, k1=0.01, k2=0.03, reduction="none",
                                              return_full_image=full_image)
    out = metric(torch.from_numpy(ga[:, None]), torch.from_numpy(gb[:, None]))
    return (out[0].numpy(), out[1][:, 0].numpy()) if full_image else out.numpy()


def _skimage_ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The literature's call (MindEye / brain-diffuser evaluation scripts)."""
    from skimage.color import rgb2gray
    from skimage.metrics import structural_similarity

    return np.array([structural_similarity(rgb2gray(x), rgb2gray(y), gaussian_weights=True, sigma=1.5,
                                           use_sample_covariance=False, data_range=1.0)
                     for x, y in zip(a, b)])


def test_ssim_matches_skimage_and_torchmetrics(pairs):
    a, b = pairs
    ours = ssim(a, b, size=None)
    # The literature's SSIM (skimage): mean of the SSIM map away from the border.
    np.testing.assert_allclose(ours, _skimage_ssim(a, b), rtol=0, atol=1e-9)
    assert ours.min() < 0.2 and ours.max() > 0.5       # the pairs span a useful range
    # torchmetrics computes the same map but averages it over the whole (mirror-padded) image:
    # identical to ours with border="reflect", and its map's interior gives our default.
    ga, gb = rgb_to_gray(a), rgb_to_gray(b)
    tm_mean, tm_map = _torchmetrics_ssim(ga, gb, full_image=True)
    np.testing.assert_allclose(ssim(a, b, size=None, border="reflect"), tm_mean, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours, tm_map[:, 5:-5, 5:-5].mean(axis=(1, 2)), rtol=0, atol=1e-9)
    # On 64 x 64 images the two conventions differ by up to a few hundredths.
    assert 1e-4 < np.abs(ours - tm_mean).max() < 0.1


def test_ssim_non_square_and_uint8():
    a = _structured_images(5, 40, 72, seed=3)
    b = _degrade(a, seed=4)
    ours = ssim(a, b, size=None)
    np.testing.assert_allclose(ours, _skimage_ssim(a, b), rtol=0, atol=1e-9)
    a8, b8 = (a * 255).round().astype(np.uint8), (b * 255).round().astype(np.uint8)
    np.testing.assert_allclose(ssim(a8, b8, size=None), _skimage_ssim(a8 / 255.0, b8 / 255.0), atol=1e-9)


def test_ssim_at_the_literature_size(pairs):
    # Default path: resize to 425 x 425 then SSIM; the SSIM part is checked against skimage and
    # torchmetrics on the very resized images.
    a, b = pairs
    ra, rb = resize_images(a[:2], 425), resize_images(b[:2], 425)
    assert ra.shape == (2, 425, 425, 3)
    np.testing.assert_allclose(ssim(a[:2], b[:2]), _skimage_ssim(ra, rb), rtol=0, atol=1e-9)
    np.testing.assert_allclose(ssim(a[:2], b[:2], border="reflect"),
                               _torchmetrics_ssim(rgb_to_gray(ra), rgb_to_gray(rb)), rtol=0, atol=1e-9)


def test_ssim_sanity(pairs):
    a, _ = pairs
    np.testing.assert_allclose(ssim(a, a, size=None), 1.0, atol=1e-12)
    with pytest.raises(ValueError):
        ssim(a[:, :8, :8], a[:, :8, :8], size=None)
    with pytest.raises(ValueError):
        ssim(a, a[:3], size=None)


# ---------------------------------------------------------------------------------- PixCorr

def test_pixcorr_matches_torchmetrics_and_numpy(pairs):
    from torchmetrics.functional import pearson_corrcoef

    a, b = pairs
    ours = pixcorr(a, b, size=None)
    x = torch.from_numpy(a.reshape(len(a), -1).T.copy())      # [pixels, n]: one output per pair
    y = torch.from_numpy(b.reshape(len(b), -1).T.copy())
    np.testing.assert_allclose(ours, pearson_corrcoef(y, x).numpy(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours, [np.corrcoef(p.ravel(), q.ravel())[0, 1] for p, q in zip(a, b)],
                               rtol=0, atol=1e-12)
    # At the default size, against numpy on the resized images (MindEye: Resize(425) + corrcoef).
    ra, rb = resize_images(a[:3], 425), resize_images(b[:3], 425)
    np.testing.assert_allclose(pixcorr(a[:3], b[:3]),
                               [np.corrcoef(p.ravel(), q.ravel())[0, 1] for p, q in zip(ra, rb)], atol=1e-12)


def test_pixcorr_sanity(pairs):
    a, b = pairs
    np.testing.assert_allclose(pixcorr(a, a, size=None), 1.0, atol=1e-12)
    np.testing.assert_allclose(pixcorr(a, 1 - a, size=None), -1.0, atol=1e-12)
    np.testing.assert_allclose(pixcorr(a, 0.3 * a + 0.1, size=None), 1.0, atol=1e-12)  # affine-invariant
    rng = np.random.default_rng(5)
    noise = pixcorr(rng.uniform(size=(4, 64, 64, 3)), rng.uniform(size=(4, 64, 64, 3)), size=None)
    assert np.all(np.abs(noise) < 4 / np.sqrt(64 * 64 * 3))
    # Different input sizes are brought to a common size.
    assert pixcorr(a[:2], resize_images(a[:2], 100), size=64).shape == (2,)
    with pytest.raises(ValueError):
        pixcorr(a[:2], resize_images(a[:2], 100), size=None)


# ------------------------------------------------------------------------ resize / conversion

def test_resize_and_conversion():
    a = _structured_images(3, 50, 50)
    assert resize_images(a, 50) is not None and np.array_equal(resize_images(a, 50), a)
    const = np.full((2, 30, 40, 3), 0.25)
    np.testing.assert_allclose(resize_images(const, 425), 0.25, atol=1e-12)
    r = resize_images(a, 425)
    assert r.shape == (3, 425, 425, 3) and r.min() >= -1e-9 and r.max() <= 1 + 1e-9
    u8 = (a * 255).astype(np.uint8)
    np.testing.assert_allclose(to_float_images(u8), u8 / 255.0)
    assert to_float_images(np.zeros((64, 64, 3), np.uint8)).shape == (1, 64, 64, 3)
    assert to_float_images(np.zeros((2, 64, 64))).shape == (2, 64, 64, 1)
    assert to_float_images(np.zeros((2, 8, 8, 4))).shape == (2, 8, 8, 3)   # alpha dropped
    from skimage.color import rgb2gray

    np.testing.assert_allclose(rgb_to_gray(a), np.stack([rgb2gray(x) for x in a]), atol=1e-12)


# ------------------------------------------------------------------------- identification

def _mindeye_two_way(preds: np.ndarray, reals: np.ndarray) -> float:
    """MindEye's two_way_identification on already-computed features (np.corrcoef-based)."""
    n = len(reals)
    r = np.corrcoef(reals, preds)[:n, n:]         # r[i, j] = corr(real_i, pred_j)
    congruents = np.diag(r)
    success = r < congruents                      # success[i, j]: real_i less similar to pred_j
    return float(np.mean(np.sum(success, 0)) / (n - 1))


def test_two_way_matches_mindeye_formulation():
    rng = np.random.default_rng(0)
    true = rng.normal(size=(60, 128))
    pred = 0.3 * true + rng.normal(size=(60, 128))          # weakly informative predictions
    ours, items = two_way_identification(pred, true, per_item=True)
    assert ours == pytest.approx(_mindeye_two_way(pred, true), abs=1e-12)
    assert items.shape == (60,) and 0.6 < ours < 1.0
    # Features of any shape are flattened per item.
    assert two_way_identification(pred.reshape(60, 8, 16), true.reshape(60, 8, 16)) == ours


def test_identification_perfect_and_chance():
    rng = np.random.default_rng(1)
    n = 300
    true = rng.normal(size=(n, 64))
    for metric in ("pearson", "cosine"):
        assert two_way_identification(true, true, metric) == 1.0
        assert top1_identification(true, true, metric) == 1.0
        assert two_way_identification(2 * true + 1 if metric == "pearson" else 2 * true, true, metric) == 1.0
    # Random predictions: per-item scores are ~uniform (sd 1/sqrt(12)), so the mean is
    # 0.5 +- 0.29/sqrt(n); allow 4 sd. Top-1 is Binomial(n, 1/n)/n: allow <= 6 hits of 300.
    pred = rng.normal(size=(n, 64))
    tw = two_way_identification(pred, true)
    assert abs(tw - 0.5) < 4 * 0.289 / np.sqrt(n)
    assert top1_identification(pred, true) <= 6 / n


def test_top1_and_two_way_agree_per_item():
    rng = np.random.default_rng(2)
    true = rng.normal(size=(40, 32))
    pred = true + rng.normal(scale=1.5, size=(40, 32))
    _, tw = two_way_identification(pred, true, per_item=True)
    top, t1 = top1_identification(pred, true, per_item=True)
    np.testing.assert_array_equal(t1, (tw == 1.0).astype(float))
    assert 0 < top < 1
    # Cosine differs from Pearson only through centring; on centred features they agree.
    c = true - true.mean(axis=1, keepdims=True)
    p = pred - pred.mean(axis=1, keepdims=True)
    assert two_way_identification(p, c, "cosine") == two_way_identification(pred, true, "pearson")
    with pytest.raises(ValueError):
        two_way_identification(pred[:1], true[:1])
    with pytest.raises(ValueError):
        two_way_identification(pred, true, "euclid")


def test_paired_similarity_is_the_diagonal_of_the_identification_similarities():
    rng = np.random.default_rng(3)
    true = rng.normal(size=(12, 3, 5))  # features of any shape, flattened per item
    pred = true + rng.normal(scale=0.8, size=true.shape)
    p, t = pred.reshape(12, -1), true.reshape(12, -1)
    cos = np.diag(p @ t.T) / (np.linalg.norm(p, axis=1) * np.linalg.norm(t, axis=1))
    np.testing.assert_allclose(paired_similarity(pred, true), cos, rtol=1e-12)
    pearson = [np.corrcoef(a, b)[0, 1] for a, b in zip(p, t, strict=True)]
    np.testing.assert_allclose(paired_similarity(pred, true, "pearson"), pearson, rtol=1e-12)
    # An unreadable item (zero features) has similarity 0, not NaN; a scaled copy has 1.
    pred[0] = 0
    out = paired_similarity(pred, true)
    assert out[0] == 0 and np.isfinite(out).all()
    assert paired_similarity(3 * true, true) == pytest.approx(np.ones(12))
    with pytest.raises(ValueError):
        paired_similarity(pred[:3], true)
    with pytest.raises(ValueError):
        paired_similarity(pred, true, "euclid")


def test_identification_with_a_constant_item_loses_only_that_item():
    """A constant image under pearson (or a zero vector under cosine) has no direction: it is
    similar to nothing, and the other items' comparisons are unaffected (no NaN column)."""
    from backend.analysis.image_metrics import top1_identification, two_way_identification

    rng = np.random.default_rng(3)
    true = rng.normal(size=(30, 64))
    pred = true + rng.normal(scale=0.5, size=true.shape)
    clean_top1 = top1_identification(pred, true, metric="pearson")
    broken = true.copy()
    broken[7] = 5.0  # constant: zero after centring
    top1 = top1_identification(pred, broken, metric="pearson")
    two_way = two_way_identification(pred, broken, metric="pearson")
    assert np.isfinite(two_way) and clean_top1 - 1 / 30 - 1e-12 <= top1 <= clean_top1
    zero = true.copy()
    zero[3] = 0.0
    assert top1_identification(pred, zero, metric="cosine") >= top1_identification(pred, true, metric="cosine") - 1 / 30 - 1e-12
