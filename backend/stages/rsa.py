"""Stage: representational similarity between brain regions (or mouse areas) and caption models.

Each region's response patterns and each caption source's text embeddings give a dissimilarity
matrix over the same stimuli; they are compared by Spearman correlation over repeated random
subsets of stimuli, so every value comes with a spread.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from scipy.cluster.hierarchy import leaves_list, linkage

from backend.analysis.rsa import compare_rdms, rdm, rsa_over_subsets, upper
from backend.cache import Store, entry_key
from backend.data.schema import Dataset
from backend.stages.embeddings import embed_texts_cached
from backend.stages.encoding import _complete_captions, dataset_fingerprint, unit_regions

STAGE = "rsa"


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
    """One row per (region, source): mean and sd of the RDM correlation over the subsets (cached
    by the content of everything it depends on, so a second request reads it from disk)."""
    captions = {s: _complete_captions(ds, s, store) for s in sources}
    key = entry_key(
        stage=STAGE, dataset=dataset_fingerprint(ds), embedder=embedder, n_subsets=n_subsets, subset_size=subset_size,
        captions={s: hashlib.sha256(json.dumps(c).encode()).hexdigest() for s, c in captions.items()},
    )
    cached = store.get_text(key)
    if cached is not None:
        return json.loads(cached)
    models = {s: embed_texts_cached(captions[s], embedder, store=store, pool=pool) for s in sources}
    rows = region_rsa(ds, models, n_subsets=n_subsets, subset_size=subset_size, report=report)
    store.put(key, "json", json.dumps(rows).encode())
    return rows


def region_rsa(
    ds: Dataset, models: dict[str, np.ndarray], *, stimuli=None, n_subsets: int = 20, subset_size: int = 100, report=None
) -> list[dict]:
    """One row {"region", "source", "mean", "sd"} per (region, model): the RDM correlation of each
    model's vectors (name -> [n_stimuli, d], e.g. caption embeddings or a network's features) with
    each region's responses over random subsets of ``stimuli`` (rows; default all), uncached."""
    labels, names = unit_regions(ds)
    rows_used = np.arange(ds.n_stimuli) if stimuli is None else np.asarray(stimuli, np.int64)
    models = {name: np.asarray(m)[rows_used] for name, m in models.items()}
    regions = [(code, str(name)) for code, name in enumerate(names) if code > 0 and (labels == code).sum() >= 2]
    rows = []
    for k, (code, name) in enumerate(regions):
        if report:
            report(k, len(regions), f"RDMs of {name}")
        patterns = np.asarray(ds.responses[:, np.flatnonzero(labels == code)], np.float32)[rows_used]
        scores = rsa_over_subsets(patterns, models, n_subsets=n_subsets, subset_size=subset_size)
        rows += [
            {"region": name, "source": source, "mean": round(float(v.mean()), 4), "sd": round(float(v.std(ddof=1)), 4)}
            for source, v in scores.items()
        ]
    if report:
        report(len(regions), len(regions), "done")
    return rows


#: At most this many stimuli in a displayed RDM (a 200 x 200 matrix is still readable).
MAX_SHOWN = 200


def rdm_pair(ds: Dataset, region: str, source: str, embedder: str, *, store: Store, pool, n: int = 100) -> dict:
    """The RDMs of one region and of one caption source's embeddings over the same stimuli, to look at.

    Stimuli: the first ``n`` test stimuli (their responses are means of repeats, the least noisy),
    or the first ``n`` of all stimuli when there is no test split; ordered by average-linkage
    clustering of the brain RDM so that its structure shows, the model RDM in the same order.
    Returns {"stimuli": int [n], "brain": float64 [n, n], "model": float64 [n, n], "spearman": float}.
    Raises LookupError for an unknown region or an incomplete caption source.
    """
    labels, names = unit_regions(ds)
    names = [str(name) for name in names]
    if region not in names[1:] or not (labels == names.index(region)).any():
        raise LookupError(f"no region {region!r}; this dataset has {[x for x in names[1:]]}")
    if not 3 <= n <= MAX_SHOWN:
        raise ValueError(f"n must be between 3 and {MAX_SHOWN}, not {n}")
    pool_rows = ds.stimuli.indices("test")
    if len(pool_rows) < 3:
        pool_rows = np.arange(ds.n_stimuli)
    rows = pool_rows[:n]
    embeddings = embed_texts_cached([_complete_captions(ds, source, store)[i] for i in rows], embedder, store=store, pool=pool)
    brain = rdm(np.asarray(ds.responses[rows][:, labels == names.index(region)], np.float32))
    model = rdm(embeddings)
    order = leaves_list(linkage(np.clip(upper(brain), 0, None), method="average"))
    return {
        "stimuli": rows[order],
        "brain": brain[np.ix_(order, order)],
        "model": model[np.ix_(order, order)],
        "spearman": compare_rdms(brain, model),
    }
