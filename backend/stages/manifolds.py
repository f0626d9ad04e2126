"""Stage: where each stimulus sits in the brain's and the captions' geometry (2-D UMAP maps).

For one (dataset, caption source, text embedder, region): the brain responses of the stimuli (the
units of one region, or every unit with explainable variance) are z-scored per unit, reduced to
their leading principal components and laid out on a plane by UMAP; the caption embeddings are laid
out the same way (cosine metric); the text map is then rotated (or reflected) and shifted onto the
brain map (Procrustes) and given the brain map's spread, so one stimulus can be followed from one
to the other. Each map comes with its trustworthiness (does it keep the neighbours of the space it
came from), and the two spaces with the share of neighbours they agree on.

Datasets with more than :data:`MAX_STIMULI` stimuli are mapped on a deterministic subset of that
size: every test stimulus (up to the cap), then training stimuli drawn by a fixed seed; the result
says which rows it holds (``indices``). Results are stored by the content of everything they depend
on (dataset, captions, embedder and its revision, region, parameters), so a second request reads
them from disk; the first UMAP in a process compiles numba kernels (15-60 s, cached on disk).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from backend.analysis.manifolds import align, trustworthiness, umap_embedding
from backend.cache import Store, array_from_npy, array_to_npy, entry_key
from backend.config import cache_dir
from backend.data.schema import Dataset
from backend.models.device import Cancelled
from backend.models.registry import get_model
from backend.models.weights import fingerprint
from backend.stages.comparison import signal_units
from backend.stages.embeddings import embed_texts_cached
from backend.stages.encoding import _complete_captions, dataset_fingerprint, unit_regions

STAGE = "manifolds"
#: At most this many stimuli per map (UMAP and trustworthiness stay within a minute or two).
MAX_STIMULI = 5000
#: The brain responses are reduced to this many principal components before UMAP.
N_COMPONENTS = 50
#: Units read at a time (a 327,684-vertex surface never sits in memory whole).
UNIT_CHUNK = 8192
#: Responses held in memory for the PCA up to this many bytes; beyond, chunks are re-read.
MAX_IN_MEMORY = 1 << 30
#: Exact PCA when stimuli or units number at most this many.
EXACT_PCA = 1000
PARAMS = {"n_neighbors": 15, "min_dist": 0.1, "seed": 0, "pca": N_COMPONENTS, "max_stimuli": MAX_STIMULI, "version": 2}
NEIGHBOURS = 10  # for trustworthiness and the shared-neighbour score
_PARTS = ("coords", "indices", "meta")

Report = Callable[[int, int, str], None]


def manifold_rows(ds: Dataset, cap: int = MAX_STIMULI) -> np.ndarray:
    """int64, sorted: the stimuli the maps hold — all of them, or for a larger dataset every test
    stimulus (up to ``cap``) and then training stimuli drawn with a fixed seed."""
    n = ds.n_stimuli
    if n <= cap:
        return np.arange(n, dtype=np.int64)
    test = np.asarray(ds.stimuli.indices("test"), np.int64)[:cap]
    rest = np.setdiff1d(np.arange(n, dtype=np.int64), test)
    extra = np.random.default_rng(0).choice(rest, cap - len(test), replace=False) if cap > len(test) else rest[:0]
    return np.sort(np.concatenate([test, extra])).astype(np.int64)


def region_units(ds: Dataset, region: str | None) -> np.ndarray:
    """int64: the units of ``region`` (a ROI or area name), or every unit with signal when None.

    ValueError (one line, naming the choices) for a region the dataset does not have.
    """
    if region:
        labels, names = unit_regions(ds)
        names = [str(n) for n in names]
        if region not in names[1:]:
            raise ValueError(f"dataset {ds.id!r} has no region {region!r}; choose one of {', '.join(names[1:])}")
        units = np.flatnonzero(labels == names.index(region))
        if len(units) < 2:
            raise ValueError(f"region {region!r} of {ds.id!r} has {len(units)} units; a map needs at least 2")
        return units.astype(np.int64)
    units = np.flatnonzero(signal_units(ds))
    return (units if len(units) >= 2 else np.arange(ds.n_units)).astype(np.int64)


def manifold_keys(ds: Dataset, captions: list[str], embedder: str, region: str | None) -> dict[str, str]:
    spec = get_model(embedder)
    base = dict(
        stage=STAGE,
        dataset=dataset_fingerprint(ds),
        captions=hashlib.sha256(json.dumps(captions).encode()).hexdigest(),
        embedder=spec.id,
        revision=fingerprint(spec),
        region=region or None,
        params=PARAMS,
    )
    return {part: entry_key(part=part, **base) for part in _PARTS}


def stimulus_manifolds(
    ds: Dataset,
    source: str,
    embedder: str,
    *,
    region: str | None = None,
    store: Store,
    pool,
    report: Report | None = None,
    cancel: Callable[[], bool] | None = None,
) -> dict:
    """Compute (or read from the store) the brain and text maps of the stimuli.

    Returns {"dataset", "source", "embedder", "region", "n_units", "indices" int64 [n],
    "brain" float32 [n, 2], "text" float32 [n, 2] (aligned onto "brain"), "categories" [n] (str or
    None), "groups" [n] or None (coarser categories where the dataset's manifest has them),
    "trustworthiness" {"brain", "text"}, "shared_neighbours" (share of each stimulus's 10 nearest
    neighbours that the brain and text spaces agree on), "chance" (that share by chance),
    "params", "cached" (whether it was read from the store)}.
    LookupError when the source has not captioned every stimulus; ValueError for an unknown region.
    """
    say = report or (lambda done, total, message: None)
    captions = _complete_captions(ds, source, store)
    units = region_units(ds, region)
    keys = manifold_keys(ds, captions, embedder, region)
    with store.compute_once(keys["meta"]):
        found = _read(ds, keys, store)
        if found is not None:
            say(1, 1, "read from the cache")
            return {**found, "source": source, "embedder": embedder, "region": region or None, "cached": True}
        steps = 5

        def check() -> None:
            if cancel and cancel():
                raise Cancelled()

        rows = manifold_rows(ds)
        say(0, steps, f"embedding {len(rows):,} captions")
        texts = [captions[i] for i in rows]
        embeddings = embed_texts_cached(texts, embedder, store=store, pool=pool, cancel=cancel)
        check()
        say(1, steps, f"principal components of {len(units):,} units")
        features = brain_components(ds, rows, units)
        check()
        say(2, steps, "UMAP of the brain responses (the first run in a process compiles for up to a minute)")
        umap_args = dict(n_neighbors=PARAMS["n_neighbors"], min_dist=PARAMS["min_dist"], seed=PARAMS["seed"], cache_dir=cache_dir())
        brain = umap_embedding(features, **umap_args)
        check()
        say(3, steps, "UMAP of the caption embeddings")
        text = aligned_to(brain, umap_embedding(embeddings, metric="cosine", **umap_args))
        check()
        say(4, steps, "trustworthiness and shared neighbours")
        k = max(1, min(NEIGHBOURS, (len(rows) - 1) // 2 - 1))
        meta = {
            "n_units": int(len(units)),
            "trustworthiness": {
                "brain": round(trustworthiness(features, brain, n_neighbors=k), 4),
                "text": round(trustworthiness(embeddings, text, n_neighbors=k), 4),
            },
            "shared_neighbours": round(shared_neighbours(features, embeddings, k), 4),
            "chance": round(k / max(1, len(rows) - 1), 4),
            "params": PARAMS,
        }
        store.put_many(
            {
                keys["coords"]: ("npy", array_to_npy(np.concatenate([brain, text], axis=1).astype(np.float32))),
                keys["indices"]: ("npy", array_to_npy(rows)),
                keys["meta"]: ("json", json.dumps(meta).encode()),
            }
        )
        store.record_run(ds.id, STAGE, embedder, {"source": source, "region": region or None}, len(rows), len(rows))
        say(steps, steps, f"mapped {len(rows):,} stimuli")
        found = _assemble(ds, rows, brain, text, meta)
        return {**found, "source": source, "embedder": embedder, "region": region or None, "cached": False}


def cached_manifolds(ds: Dataset, source: str, embedder: str, *, region: str | None = None, store: Store) -> dict | None:
    """The stored maps for these inputs, or None if they were never computed (never computes)."""
    captions = _complete_captions(ds, source, store)
    region_units(ds, region)  # an unknown region is a ValueError here too
    found = _read(ds, manifold_keys(ds, captions, embedder, region), store)
    return None if found is None else {**found, "source": source, "embedder": embedder, "region": region or None, "cached": True}


def brain_components(ds: Dataset, rows: np.ndarray, units: np.ndarray, n_components: int = N_COMPONENTS) -> np.ndarray:
    """float32 [len(rows), k]: principal-component scores of the responses of ``units`` to the
    stimuli ``rows``, each unit z-scored over those stimuli (k = min(n_components, rows - 1, units)).

    Exact (an eigendecomposition of the smaller Gram matrix) when rows or units number at most
    :data:`EXACT_PCA`; otherwise randomised (Halko et al.: oversampled by 20, three power
    iterations, fixed seed), reading the units in chunks that are kept in memory up to
    :data:`MAX_IN_MEMORY` bytes and re-read from the (memory-mapped) responses beyond that, so a
    surface with hundreds of thousands of vertices is never held whole.
    """
    n, p = len(rows), len(units)
    k = max(1, min(n_components, n - 1, p))
    chunks = [units[s : s + UNIT_CHUNK] for s in range(0, p, UNIT_CHUNK)]
    if n * p * 4 <= MAX_IN_MEMORY:
        blocks = [_standardised(ds, rows, c) for c in chunks]
        read = blocks.__getitem__
    else:
        read = lambda j: _standardised(ds, rows, chunks[j])  # noqa: E731
    if min(n, p) <= EXACT_PCA and n * p * 4 <= MAX_IN_MEMORY:
        x = np.concatenate(blocks, axis=1).astype(np.float64)
        if n <= p:
            values, vectors = np.linalg.eigh(x @ x.T)
            top = np.argsort(values)[::-1][:k]
            scores = vectors[:, top] * np.sqrt(np.clip(values[top], 0, None))
        else:
            values, vectors = np.linalg.eigh(x.T @ x)
            scores = x @ vectors[:, np.argsort(values)[::-1][:k]]
        return scores.astype(np.float32)
    width = min(p, n, k + 20)
    rng = np.random.default_rng(0)
    y = sum(read(j) @ rng.standard_normal((len(c), width)).astype(np.float32) for j, c in enumerate(chunks))
    for _ in range(3):
        q, _ = np.linalg.qr(y)
        y = sum(x @ (x.T @ q) for x in map(read, range(len(chunks))))  # X X^T Q, chunk by chunk
    q, _ = np.linalg.qr(y)
    b = np.concatenate([q.T @ read(j) for j in range(len(chunks))], axis=1)  # Q^T X
    ub, s, _ = np.linalg.svd(b, full_matrices=False)
    return ((q @ ub)[:, :k] * s[:k]).astype(np.float32)


def aligned_to(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """float32 [n, 2]: ``other`` rotated (or reflected) and shifted onto ``reference`` by Procrustes,
    then scaled to the same spread (root-mean-square distance from the centre) as ``reference``.

    The least-squares scale shrinks a map that agrees poorly with the reference towards a point,
    which hides its own structure; for following stimuli across two plots equal spreads read better.
    """
    moved = align(reference, other).astype(np.float64)
    ref = np.asarray(reference, np.float64)
    centre = ref.mean(axis=0)
    spread_ref = np.sqrt(((ref - centre) ** 2).sum(axis=1).mean())
    spread = np.sqrt(((moved - centre) ** 2).sum(axis=1).mean())
    if spread == 0.0:
        return moved.astype(np.float32)
    return ((moved - centre) * (spread_ref / spread) + centre).astype(np.float32)


def shared_neighbours(a: np.ndarray, b: np.ndarray, k: int = NEIGHBOURS) -> float:
    """Mean share of each row's ``k`` nearest neighbours in ``a`` that are also among its ``k``
    nearest in ``b`` (Euclidean; rows are the same stimuli). Chance is k / (n - 1)."""
    from sklearn.neighbors import NearestNeighbors  # noqa: PLC0415

    def neighbours(x: np.ndarray) -> np.ndarray:
        idx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x, return_distance=False)
        return idx[:, 1:]

    na, nb = neighbours(np.asarray(a, np.float32)), neighbours(np.asarray(b, np.float32))
    return float(np.mean([len(np.intersect1d(r, s, assume_unique=True)) / k for r, s in zip(na, nb, strict=True)]))


def stimulus_groups(ds: Dataset) -> tuple[str | None, ...] | None:
    """Coarse categories (the demo world's "animals", "food", ...) from the manifest's "group"
    field of each stimulus, or None when the dataset has none."""
    path = ds.root / "manifest.json"
    try:
        groups = _manifest_groups(str(path), path.stat().st_mtime_ns)
    except OSError:
        return None
    return groups if groups is not None and len(groups) == ds.n_stimuli else None


@functools.lru_cache(maxsize=8)
def _manifest_groups(path: str, mtime_ns: int) -> tuple[str | None, ...] | None:
    try:
        entries = json.loads(Path(path).read_text()).get("stimuli")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(entries, list):
        return None
    groups = tuple(e.get("group") if isinstance(e, dict) else None for e in entries)
    return groups if any(g for g in groups) else None


def _standardised(ds: Dataset, rows: np.ndarray, units: np.ndarray) -> np.ndarray:
    x = np.asarray(ds.responses[np.ix_(rows, units)], np.float32)  # reads only these cells of a memmap
    x = x - x.mean(axis=0)
    sd = x.std(axis=0)
    x /= np.where(sd > 0, sd, 1.0)
    return np.nan_to_num(x, copy=False)


def _read(ds: Dataset, keys: dict[str, str], store: Store) -> dict | None:
    found = store.get_many(list(keys.values()))
    if not all(k in found for k in keys.values()):
        return None
    coords = array_from_npy(found[keys["coords"]][1]).astype(np.float32)
    rows = array_from_npy(found[keys["indices"]][1]).astype(np.int64)
    meta = json.loads(found[keys["meta"]][1])
    return _assemble(ds, rows, coords[:, :2], coords[:, 2:], meta)


def _assemble(ds: Dataset, rows: np.ndarray, brain: np.ndarray, text: np.ndarray, meta: dict) -> dict:
    categories = ds.stimuli.categories
    groups = stimulus_groups(ds)
    return {
        "dataset": ds.id,
        "indices": rows,
        "brain": np.ascontiguousarray(brain, np.float32),
        "text": np.ascontiguousarray(text, np.float32),
        "categories": [categories[i] if categories else None for i in rows],
        "groups": [groups[i] for i in rows] if groups else None,
        **meta,
    }
