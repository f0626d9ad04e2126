"""Stage: representational similarity between brain regions (or mouse areas) and caption models.

Each region's response patterns and each caption source's text embeddings give a dissimilarity
matrix over the same stimuli; they are compared by Spearman correlation over repeated random
subsets of stimuli, so every value comes with a spread.
"""

from __future__ import annotations

import numpy as np

from backend.analysis.rsa import rsa_over_subsets
from backend.cache import Store
from backend.data.schema import Dataset
from backend.stages.embeddings import embed_texts_cached
from backend.stages.encoding import _complete_captions, unit_regions


def rsa_table(
    ds: Dataset,
    sources: list[str],
    embedder: str,
    *,
    store: Store,
    pool,
    n_subsets: int = 20,
    subset_size: int = 100,
    report=None,
) -> list[dict]:
    """One row per (region, source): mean and sd of the RDM correlation over the subsets."""
    models = {s: embed_texts_cached(_complete_captions(ds, s, store), embedder, store=store, pool=pool) for s in sources}
    labels, names = unit_regions(ds)
    regions = [(code, str(name)) for code, name in enumerate(names) if code > 0 and (labels == code).sum() >= 2]
    rows = []
    for k, (code, name) in enumerate(regions):
        if report:
            report(k, len(regions), f"RDMs of {name}")
        patterns = np.asarray(ds.responses[:, np.flatnonzero(labels == code)], np.float32)
        scores = rsa_over_subsets(patterns, models, n_subsets=n_subsets, subset_size=subset_size)
        rows += [
            {"region": name, "source": source, "mean": round(float(v.mean()), 4), "sd": round(float(v.std(ddof=1)), 4)}
            for source, v in scores.items()
        ]
    if report:
        report(len(regions), len(regions), "done")
    return rows
