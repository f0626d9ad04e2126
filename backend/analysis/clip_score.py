"""CLIP-S and RefCLIP-S (Hessel et al. 2021, "CLIPScore: A Reference-free Evaluation Metric for
Image Captioning", EMNLP) over precomputed CLIP embeddings.

Plain functions over arrays; no model is loaded here (``backend.stages.clip_scores`` embeds the
images and captions). What the reference implementation (jmhessel/clipscore, ``clipscore.py``)
computes, and what is reproduced:

* every image, candidate and reference vector is L2-normalised (``x / sqrt(sum(x**2))``);
* ``CLIP-S(c, v) = w * max(cos(c, v), 0)`` with ``w = 2.5`` -- the weight is on the image term
  only (``get_clip_score``);
* the text side is ``max over references r of cos(c, r)`` with *no* weight (``get_refonlyclipscore``);
* ``RefCLIP-S = 2 * a * b / (a + b)``, the harmonic mean of ``a = CLIP-S`` and that text term,
  per item (``main``);
* corpus scores are plain means of the per-item scores (``np.mean`` of CLIP-S, and of RefCLIP-S:
  the mean of per-item harmonic means, not the harmonic mean of the two means).

Where this module departs from the reference code, it is on inputs the code leaves undefined:

* the text term is clipped at 0 as in the paper (eq. 2: ``max(max_r cos(c, r), 0)``); the code
  does not clip it, so a candidate whose every reference has a negative cosine gets a negative or
  unbounded harmonic mean there;
* a zero vector has cosine 0 with everything (the code divides by zero: NaN);
* a harmonic mean of 0 and 0 is 0 (the code: 0/0, NaN);
* arithmetic is float64 whatever the input dtype (the code keeps CLIP's float16/32 features).

The reference code also prefixes every caption (candidates and references) with "A photo depicts "
before CLIP's text encoder; that is the embedding stage's business (see the stage).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["CLIP_S_WEIGHT", "clip_scores", "harmonic_mean", "unit_rows"]

#: The paper's (and reference code's) w: rescales CLIP-S toward [0, 1] on MS-COCO.
CLIP_S_WEIGHT = 2.5


def unit_rows(x: np.ndarray) -> np.ndarray:
    """float64 copy of ``x`` [..., d] with each vector L2-normalised; zero vectors stay zero."""
    x = np.asarray(x, dtype=np.float64)
    norm = np.sqrt(np.sum(x * x, axis=-1, keepdims=True))
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def harmonic_mean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise ``2ab / (a + b)`` for a, b >= 0, with 0 where ``a + b == 0``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    total = a + b
    return np.divide(2.0 * a * b, total, out=np.zeros(np.broadcast(a, b).shape), where=total > 0)


def clip_scores(
    images: np.ndarray,
    candidates: np.ndarray,
    references: np.ndarray | Sequence[np.ndarray] | None = None,
    *,
    w: float = CLIP_S_WEIGHT,
) -> dict:
    """CLIP-S and (with references) RefCLIP-S of n candidate captions.

    images: [n, d] CLIP image embeddings (image_embeds, the projected space), one per item.
    candidates: [n, d] CLIP text embeddings of the candidate captions, row i for image i.
    references: None (CLIP-S only), an array [n, m, d], or a sequence of n arrays [m_i, d]: the
        text embeddings of item i's reference captions (a bare [d] vector is one reference).
        An item with m_i = 0 has no RefCLIP-S
        (NaN per item, left out of the mean).
    Inputs need not be normalised and may be float16/32; everything is computed in float64.

    Returns ``{"clip_s": float, "refclip_s": float | None, "n": n, "per_item": {"clip_s": [n],
    "cos_image": [n], "text_s": [n] (max_r cos(c, r) clipped at 0; NaN without references),
    "refclip_s": [n] (NaN without references)}}`` with float64 arrays; ``refclip_s`` is None when
    references is None or no item has any.
    """
    img, cand = unit_rows(images), unit_rows(candidates)
    if img.ndim != 2 or cand.shape != img.shape:
        raise ValueError(f"images and candidates must both be [n, d], got {np.shape(images)} and {np.shape(candidates)}")
    n, d = img.shape
    if n == 0:
        raise ValueError("no items to score")
    cos_image = np.sum(img * cand, axis=1)
    clip_s = w * np.clip(cos_image, 0.0, None)
    per_item = {"clip_s": clip_s, "cos_image": cos_image}
    result = {"clip_s": float(clip_s.mean()), "refclip_s": None, "n": n, "per_item": per_item}
    if references is None:
        return result
    if isinstance(references, np.ndarray) and references.ndim != 3:
        raise ValueError(f"references as one array must be [n, m, d], got {references.shape}")
    if len(references) != n:
        raise ValueError(f"references must hold one set per candidate: {len(references)} sets for {n} candidates")
    text_s = np.full(n, np.nan)
    for i, refs in enumerate(references):
        refs = np.asarray(refs)
        if refs.size == 0:
            continue
        if refs.ndim == 1:
            refs = refs[None]  # one reference given as a bare vector
        if refs.ndim != 2 or refs.shape[1] != d:
            raise ValueError(f"references of item {i} must be [m, {d}], got {refs.shape}")
        refs = unit_rows(refs)
        text_s[i] = max(float(np.max(refs @ cand[i])), 0.0)
    has = ~np.isnan(text_s)
    refclip = np.full(n, np.nan)
    refclip[has] = harmonic_mean(clip_s[has], text_s[has])
    per_item.update(text_s=text_s, refclip_s=refclip)
    result["refclip_s"] = float(refclip[has].mean()) if has.any() else None
    return result
