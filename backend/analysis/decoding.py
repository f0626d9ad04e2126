"""Decoding text from the brain: nearest-neighbour retrieval of captions and identification.

A decoder (a ridge from responses to the embedding space, :mod:`backend.analysis.ridge`) predicts
an embedding per stimulus; these functions turn predictions into captions (the closest entries
of a caption corpus) and into identification scores among the candidate stimuli.
"""

from __future__ import annotations

import numpy as np

from backend.analysis.image_metrics import unit_rows, top1_identification, two_way_identification


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float64 [m, k]: cosine similarity between rows of ``a`` [m, d] and ``b`` [k, d]; 0 where
    either row is all zeros (a zero vector points nowhere: it matches nothing, and no NaN)."""
    return unit_rows(np.asarray(a, np.float64)) @ unit_rows(np.asarray(b, np.float64)).T


def retrieve(
    predicted: np.ndarray, corpus: np.ndarray, top: int = 1, exclude: np.ndarray | None = None, *, centred: bool = False
) -> np.ndarray:
    """int64 [m, top]: indices of the ``top`` corpus rows closest (cosine) to each prediction.

    exclude: optional int [m] corpus index to leave out for each prediction (its own caption when
    the corpus holds the dataset's captions), or -1 for none.
    centred: subtract the corpus mean from the corpus and the predictions before the cosine. Ridge
    predictions shrink towards the mean, so uncentred retrieval keeps returning the few captions
    nearest the mean ("hubs"); centring compares directions away from it instead.
    """
    if centred:
        mean = np.asarray(corpus, np.float64).mean(axis=0, keepdims=True)
        predicted, corpus = np.asarray(predicted, np.float64) - mean, np.asarray(corpus, np.float64) - mean
    sims = cosine_similarity(predicted, corpus)
    if exclude is not None:
        rows = np.flatnonzero(np.asarray(exclude) >= 0)
        sims[rows, np.asarray(exclude)[rows]] = -np.inf
    top = min(top, sims.shape[1])
    best = np.argpartition(-sims, top - 1, axis=1)[:, :top]
    order = np.take_along_axis(-sims, best, axis=1).argsort(axis=1, kind="stable")
    return np.take_along_axis(best, order, axis=1).astype(np.int64)


def identification(predicted: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """How well predictions single out their own stimulus among all m candidates.

    predicted, true: [m, d], row i of each belongs to stimulus i. Similarity is cosine
    (:func:`cosine_similarity`: 0 with an all-zero row, so a zero prediction identifies nothing
    and a zero target is beaten by every prediction with positive similarity to its own).
    top1:    fraction of predictions most similar to their own target (chance 1/m)
    two_way: fraction of (i, j != i) pairs where prediction i is more similar to target i than to
             target j (chance 0.5); ties fail
    rank:    mean rank of the own target, 1 = best (chance (m + 1) / 2)
    """
    sims = cosine_similarity(predicted, true)
    beats = (np.diag(sims)[:, None] > sims).sum(axis=1)  # other targets the own target beats
    return {
        "top1": top1_identification(predicted, true, metric="cosine"),
        "two_way": two_way_identification(predicted, true, metric="cosine"),
        "rank": float(np.mean(len(sims) - beats)),
    }
