"""Representational similarity analysis: dissimilarity matrices and their comparison.

An RDM holds, for every pair of stimuli, how differently a system (a brain region, a model's
embedding) responds to them: 1 - Pearson r between the two response patterns. Two systems are
compared by the Spearman correlation of their RDMs' upper triangles, over repeated random subsets
of stimuli so the comparison comes with a spread.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

# Dissimilarities that are equal mathematically (integer-valued or repeated patterns) come out of
# floating point differing in the last bits (~1e-16), and plain ranks would order them: Spearman
# was off by up to 7e-3 on integer patterns. Values this close (relative to the largest) tie.
TIE_RTOL = 1e-10


def rdm(patterns: np.ndarray) -> np.ndarray:
    """float64 [n, n]: 1 - Pearson correlation between the rows of ``patterns`` [n, p].

    Rows with no variance have no defined correlation; they get dissimilarity 1 to everything
    (0 to themselves).
    """
    x = np.asarray(patterns, np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    z = np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)
    out = 1.0 - z @ z.T
    np.fill_diagonal(out, 0.0)
    return out


def upper(matrix: np.ndarray) -> np.ndarray:
    """The strict upper triangle of a square matrix, as a vector."""
    i, j = np.triu_indices(matrix.shape[0], k=1)
    return matrix[i, j]


def tolerant_ranks(x: np.ndarray, rtol: float = TIE_RTOL) -> np.ndarray:
    """float64 [m]: average ranks (1 = smallest) of ``x`` [m], where sorted neighbours closer than
    ``rtol`` times the largest |x| count as equal (a run of such neighbours is one tie group).

    Dissimilarities that differ by less than 1e-10 of their range carry no information, while
    rounding error between equal ones is ~1e-16: this ranks those as ties, as exact arithmetic
    would, without the grid boundaries that rounding the values would introduce.
    """
    x = np.asarray(x, np.float64).ravel()
    if x.size == 0:
        return x
    order = np.argsort(x, kind="stable")
    xs = x[order]
    tol = rtol * np.abs(xs).max()
    group = np.concatenate([[0], np.cumsum(np.diff(xs) > tol)])  # tie-group id in sorted order
    ranks = np.empty_like(x)
    ranks[order] = rankdata(group)  # average rank within each group
    return ranks


def compare_rdms(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation between two RDMs [n, n] over their upper triangles (values equal to
    within ``TIE_RTOL`` of the largest rank as ties, see :func:`tolerant_ranks`)."""
    ra, rb = tolerant_ranks(upper(a)), tolerant_ranks(upper(b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else 0.0


def rsa_over_subsets(
    reference: np.ndarray,
    candidates: dict[str, np.ndarray],
    *,
    n_subsets: int = 20,
    subset_size: int = 100,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Spearman RDM correlation of each candidate with the reference, per random stimulus subset.

    reference: [n, p] patterns (e.g. one brain region's responses); candidates: name -> [n, q]
    (e.g. each model's embeddings of the same n stimuli). Every candidate sees the same subsets.
    Returns name -> float64 [n_subsets].
    """
    n = len(reference)
    if any(len(c) != n for c in candidates.values()):
        raise ValueError(f"every candidate needs the reference's {n} stimuli")
    size = min(subset_size, n)
    rng = np.random.default_rng(seed)
    subsets = [np.sort(rng.choice(n, size, replace=False)) for _ in range(n_subsets)]
    out = {name: np.empty(n_subsets) for name in candidates}
    for k, rows in enumerate(subsets):
        ref = rdm(reference[rows])
        for name, patterns in candidates.items():
            out[name][k] = compare_rdms(ref, rdm(patterns[rows]))
    return out
