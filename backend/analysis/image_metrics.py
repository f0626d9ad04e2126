"""Image reconstruction metrics: PixCorr, SSIM, 2-way and top-1 identification.

Plain functions over arrays. The conventions are those of the fMRI reconstruction literature
(Ozcelik & VanRullen 2023 "brain-diffuser", Scotti et al. 2023 "MindEye", and most work since),
whose evaluation code does, per (reconstruction, stimulus) pair:

* PixCorr -- scale to [0, 1], resize to 425 x 425 (bilinear, antialiased: torchvision
  ``Resize(425)``), flatten all RGB values and take the Pearson correlation (``np.corrcoef``);
* SSIM -- the same resize, convert to grey with skimage's ``rgb2gray`` (BT.709 weights
  0.2125, 0.7154, 0.0721 on the [0, 1] values), then skimage ``structural_similarity`` with
  ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0``;
* 2-way identification -- with features of an image network (AlexNet, Inception, CLIP, ...)
  of the reconstructions and the stimuli, the fraction of distractor stimuli whose feature vector
  correlates (Pearson) less with a reconstruction than its own stimulus does;
* embedding similarity -- the similarity (for CLIP embeddings, cosine) of each reconstruction's
  features to its own stimulus's, averaged.

Each function returns per-item values; papers report their mean. Features for identification are
computed elsewhere (no model is loaded here).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "LITERATURE_SIZE",
    "to_float_images",
    "resize_images",
    "rgb_to_gray",
    "pixcorr",
    "ssim",
    "two_way_identification",
    "top1_identification",
    "paired_similarity",
]

LITERATURE_SIZE = 425          # NSD stimuli are 425 x 425; MindEye / brain-diffuser resize to this
_GRAY_WEIGHTS = np.array([0.2125, 0.7154, 0.0721])   # skimage.color.rgb2gray (ITU-R BT.709)
_SSIM_SIGMA = 1.5
_SSIM_RADIUS = int(3.5 * _SSIM_SIGMA + 0.5)          # 5: skimage/scipy truncate=3.5 -> 11 x 11 window
_SSIM_K1, _SSIM_K2 = 0.01, 0.03


def to_float_images(images) -> np.ndarray:
    """Images as float64 [n, H, W, C] in [0, 1].

    Accepts [n, H, W, C] or [n, H, W] (grey; C=1 is added), or a single [H, W, C] image when C is
    1, 3 or 4 (n=1 is added). uint8 is divided by 255; float input is taken as already in [0, 1]
    (not rescaled, so that a reconstruction's contrast is not changed). An alpha channel (C=4) is
    dropped.
    """
    x = np.asarray(images)
    if x.ndim == 3 and x.shape[-1] in (1, 3, 4) and x.shape[0] not in (1, 3, 4):
        x = x[None]                      # one [H, W, C] image
    if x.ndim == 3:
        x = x[..., None]                 # [n, H, W] grey
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected images [n, H, W, C] with C in 1, 3, 4; got shape {x.shape}")
    if x.shape[-1] == 4:
        x = x[..., :3]
    if x.dtype == np.uint8:
        return x.astype(np.float64) / 255.0
    if np.issubdtype(x.dtype, np.integer) or x.dtype == bool:
        raise ValueError(f"integer images must be uint8, got {x.dtype}")
    return x.astype(np.float64, copy=False)


def resize_images(images, size: int | tuple[int, int] | None) -> np.ndarray:
    """Resize float images [n, H, W, C] to size x size (or (H, W)) by antialiased bilinear
    interpolation, the operation of torchvision's ``Resize`` on tensors (antialias=True), via
    ``torch.nn.functional.interpolate``. Images already at the size are returned unchanged.

    Unlike torchvision's ``Resize(425)`` (shorter side to 425, aspect kept) the output is square;
    for the square NSD stimuli and their reconstructions this is the same operation.
    """
    x = to_float_images(images)
    if size is None:
        return x
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if x.shape[1:3] == hw:
        return x
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    out = F.interpolate(t, size=hw, mode="bilinear", align_corners=False, antialias=True)
    return out.numpy().transpose(0, 2, 3, 1)


def rgb_to_gray(images) -> np.ndarray:
    """Grey images [n, H, W] from float images [n, H, W, C]: skimage ``rgb2gray`` weights
    (0.2125 R + 0.7154 G + 0.0721 B, no gamma handling); a one-channel image is returned as is."""
    x = to_float_images(images)
    return x[..., 0] if x.shape[-1] == 1 else x @ _GRAY_WEIGHTS


def _pair(a, b, size):
    a = resize_images(a, size)
    b = resize_images(b, size)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{a.shape[0]} images vs {b.shape[0]}: need one per pair")
    if a.shape[1:3] != b.shape[1:3]:
        raise ValueError(f"image sizes differ ({a.shape[1:3]} vs {b.shape[1:3]}); pass size=...")
    return a, b


def pixcorr(a, b, size: int | None = LITERATURE_SIZE) -> np.ndarray:
    """Pixel correlation per image pair: Pearson r over all pixel values, float64 [n] in [-1, 1].

    a, b: images [n, H, W, C] (uint8, or float in [0, 1]; sizes may differ). Both are resized to
    ``size`` x ``size`` first (default 425, the literature's; ``None`` keeps them as they are and
    requires equal sizes); all channels are flattened together (RGB, not grey, as in MindEye /
    brain-diffuser). Report the mean. A constant image has no defined correlation: NaN.
    """
    a, b = _pair(a, b, size)
    if a.shape[-1] != b.shape[-1]:
        raise ValueError("images have different numbers of channels")
    x = a.reshape(len(a), -1)
    y = b.reshape(len(b), -1)
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.einsum("ij,ij->i", x, y) / np.sqrt(np.einsum("ij,ij->i", x, x) * np.einsum("ij,ij->i", y, y))
    return np.clip(r, -1.0, 1.0)


def _gaussian_window() -> np.ndarray:
    k = np.arange(-_SSIM_RADIUS, _SSIM_RADIUS + 1, dtype=np.float64)
    w = np.exp(-0.5 * (k / _SSIM_SIGMA) ** 2)
    return w / w.sum()


def _window_means(x: np.ndarray, w: np.ndarray, border: str) -> np.ndarray:
    """Separable correlation of [n, H, W] with the 1-D window w along H and W.

    border="crop": only pixels whose whole window lies inside the image ([n, H-10, W-10]);
    border="reflect": every pixel, the image mirrored at its edges without repeating the edge
    pixel (torch's "reflect" = scipy's "mirror"), as torchmetrics pads.
    """
    from scipy.ndimage import correlate1d

    mode = "mirror" if border == "reflect" else "reflect"
    y = correlate1d(x, w, axis=1, mode=mode)
    y = correlate1d(y, w, axis=2, mode=mode)
    if border == "reflect":
        return y
    r = len(w) // 2
    # The padding mode does not matter here: the rows/columns it influences are cropped.
    return y[:, r:-r, r:-r]


def ssim(a, b, size: int | None = LITERATURE_SIZE, *, data_range: float = 1.0,
         border: str = "crop", batch: int = 32) -> np.ndarray:
    """Structural similarity per image pair on grey images, float64 [n] (1 = identical).

    a, b: images [n, H, W, C] (uint8, or float in [0, 1]). Both are resized to ``size`` x ``size``
    (default 425; ``None`` keeps them, equal sizes required), converted to grey (skimage
    ``rgb2gray`` weights), then SSIM as skimage's ``structural_similarity(gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=1.0)`` -- the literature's call: 11 x 11
    Gaussian window (sigma 1.5), population (co)variances, C1 = (0.01 L)^2, C2 = (0.03 L)^2 with
    L = data_range, and the SSIM map averaged over the pixels at least 5 from the border
    (``border="crop"``). Images must be at least 11 x 11. Report the mean.

    ``border="reflect"`` instead averages the map over every pixel, windows reaching past the edge
    seeing the mirrored image: torchmetrics' ``structural_similarity_index_measure`` (1.x). The
    map is the same inside; the mean differs by up to a few 0.01 on small images, less at 425.
    """
    if border not in ("crop", "reflect"):
        raise ValueError(f"border must be 'crop' or 'reflect', not {border!r}")
    a, b = _pair(a, b, size)
    ga, gb = rgb_to_gray(a), rgb_to_gray(b)
    if min(ga.shape[1:]) < 2 * _SSIM_RADIUS + 1:
        raise ValueError(f"images must be at least {2 * _SSIM_RADIUS + 1} pixels on each side")
    w = _gaussian_window()
    c1 = (_SSIM_K1 * data_range) ** 2
    c2 = (_SSIM_K2 * data_range) ** 2
    out = np.empty(len(ga))
    for s in range(0, len(ga), batch):       # bounded memory for large sets at 425 x 425
        x, y = ga[s:s + batch], gb[s:s + batch]
        ux, uy = _window_means(x, w, border), _window_means(y, w, border)
        vx = _window_means(x * x, w, border) - ux * ux
        vy = _window_means(y * y, w, border) - uy * uy
        vxy = _window_means(x * y, w, border) - ux * uy
        smap = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
        out[s:s + batch] = smap.mean(axis=(1, 2))
    return out


def _similarity(pred, true, metric: str) -> np.ndarray:
    """S[i, j] = similarity(pred_i, true_j) for feature arrays [n, ...] (flattened per item)."""
    p = np.asarray(pred, dtype=np.float64).reshape(len(pred), -1)
    t = np.asarray(true, dtype=np.float64).reshape(len(true), -1)
    if p.shape != t.shape:
        raise ValueError(f"prediction features {p.shape} and target features {t.shape} differ")
    if p.shape[0] < 2:
        raise ValueError("identification needs at least 2 items")
    if metric == "pearson":
        p = p - p.mean(axis=1, keepdims=True)
        t = t - t.mean(axis=1, keepdims=True)
    elif metric != "cosine":
        raise ValueError(f"metric must be 'pearson' or 'cosine', not {metric!r}")
    # A zero row (a zero vector, or a constant one under pearson) points nowhere: similarity 0
    # with everything, never NaN (one NaN column made every top-1 comparison false).
    p = unit_rows(p)
    t = unit_rows(t)
    return p @ t.T


def unit_rows(x: np.ndarray) -> np.ndarray:
    """float [n, d]: each row of ``x`` [n, d] scaled to length 1; all-zero rows stay zero."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def two_way_identification(pred_feats, true_feats, metric: str = "pearson",
                           per_item: bool = False):
    """2-way identification accuracy (chance 0.5, perfect 1).

    pred_feats, true_feats: arrays [n, ...] of features of the n predictions (reconstructions, or
    decoded embeddings) and of their n targets, row i of one paired with row i of the other.
    For prediction i and every other target j, the comparison succeeds when
    sim(pred_i, true_i) > sim(pred_i, true_j) (strictly; ties fail); the item's score is its
    success fraction over the n-1 distractors and the result is the mean over items. sim is the
    Pearson correlation of the flattened feature vectors (``metric="pearson"``, as in MindEye /
    brain-diffuser, which use ``np.corrcoef``) or their cosine (``metric="cosine"``).
    Returns a float, or ``(mean, per-item array [n])`` with ``per_item=True``.
    """
    s = _similarity(pred_feats, true_feats, metric)
    own = np.diag(s)
    n = len(s)
    wins = (s < own[:, None]).sum(axis=1)          # the diagonal itself is never strictly less
    items = wins / (n - 1)
    return (float(items.mean()), items) if per_item else float(items.mean())


def top1_identification(pred_feats, true_feats, metric: str = "pearson", per_item: bool = False):
    """Top-1 identification accuracy (chance 1/n): the fraction of predictions whose own target
    is strictly more similar to them than every other target (same ``sim`` as
    ``two_way_identification``; an item is a success exactly when its 2-way score is 1).
    Returns a float, or ``(mean, per-item 0/1 array [n])`` with ``per_item=True``.
    """
    s = _similarity(pred_feats, true_feats, metric)
    own = np.diag(s)
    others = s.copy()
    np.fill_diagonal(others, -np.inf)
    items = (others.max(axis=1) < own).astype(np.float64)
    return (float(items.mean()), items) if per_item else float(items.mean())


def paired_similarity(pred_feats, true_feats, metric: str = "cosine") -> np.ndarray:
    """Similarity of each prediction to its own target, float64 [n]: row i of ``pred_feats`` with
    row i of ``true_feats`` (arrays [n, ...], flattened per item), by cosine (``metric="cosine"``,
    the similarity CLIP embeddings are trained with) or Pearson correlation (``"pearson"``). The
    diagonal of the similarity matrix the identification scores use, except that an all-zero (or,
    for Pearson, constant) vector has similarity 0 instead of NaN. Report the mean."""
    p = np.asarray(pred_feats, dtype=np.float64).reshape(len(pred_feats), -1)
    t = np.asarray(true_feats, dtype=np.float64).reshape(len(true_feats), -1)
    if p.shape != t.shape:
        raise ValueError(f"prediction features {p.shape} and target features {t.shape} differ")
    if metric == "pearson":
        p = p - p.mean(axis=1, keepdims=True)
        t = t - t.mean(axis=1, keepdims=True)
    elif metric != "cosine":
        raise ValueError(f"metric must be 'pearson' or 'cosine', not {metric!r}")
    norms = np.linalg.norm(p, axis=1) * np.linalg.norm(t, axis=1)
    dots = np.einsum("ij,ij->i", p, t)
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
