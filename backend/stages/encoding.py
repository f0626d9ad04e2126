"""Stage: encoding models from caption embeddings to every unit, scored on the test split.

For one (dataset, caption source, text embedder): the captions are embedded (cached per text), a
ridge with per-unit regularisation is fitted on the training stimuli, and each unit is scored on
the test stimuli by Pearson r and by r^2 as a fraction of its noise ceiling. Results are stored
by the content of everything they depend on, so a second request reads them from disk.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from backend.analysis.ridge import DEFAULT_ALPHAS, fit_ridge_cv
from backend.analysis.scores import fraction_of_ceiling, pearson_r
from backend.cache import Store, array_from_npy, array_to_npy, entry_key
from backend.data.schema import Dataset, NeuronSpace
from backend.stages.captions import source_captions
from backend.stages.embeddings import embed_texts_cached

STAGE = "encoding"
PARTS = ("r", "fraction_of_ceiling", "alpha", "cv_score", "coef", "intercept")
#: Bumped when the ridge solver's results change, so fits cached by an older one are not reused
#: (2: stable residuals and centring in the input precision).
SOLVER_VERSION = 2
MAPS = PARTS[:4]

Report = Callable[[int, int, str], None]


@dataclass(frozen=True)
class EncodingResult:
    """Per-unit scores of one encoding model. Arrays are float32 [n_units].

    r:                   Pearson r between predicted and measured test responses
    fraction_of_ceiling: r^2 / (noise ceiling / 100); NaN where the dataset has no ceiling or it is 0
    alpha:               the regularisation chosen for the unit
    cv_score:            cross-validated R^2 on the training stimuli
    coef, intercept:     the fitted model, float32 [d, n_units] and float64 [n_units] (responses with
                         a large offset keep their precision), for predictions
    """

    r: np.ndarray
    fraction_of_ceiling: np.ndarray
    alpha: np.ndarray
    cv_score: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        """float32 [n, n_units]: predicted responses for text embeddings [n, d]."""
        return (np.asarray(embeddings, np.float64) @ self.coef.astype(np.float64) + self.intercept).astype(np.float32)


def dataset_fingerprint(ds: Dataset) -> str:
    """What identifies a dataset's contents cheaply: its manifest and its responses' size and time."""
    digest = hashlib.sha256((ds.root / "manifest.json").read_bytes())
    for name in ("responses.npy",):
        path = ds.root / name
        if path.exists():
            stat = path.stat()
            digest.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def encoding_keys(ds: Dataset, captions: list[str], embedder: str, method: str, alphas) -> dict[str, str]:
    base = dict(
        stage=STAGE,
        version=SOLVER_VERSION,
        dataset=dataset_fingerprint(ds),
        captions=hashlib.sha256(json.dumps(captions).encode()).hexdigest(),
        embedder=embedder,
        method=method,
        alphas=[float(a) for a in alphas],
    )
    return {part: entry_key(part=part, **base) for part in PARTS}


def fit_encoding(
    ds: Dataset,
    source: str,
    embedder: str,
    *,
    store: Store,
    pool,
    method: str = "gcv",
    alphas=DEFAULT_ALPHAS,
    report: Report | None = None,
    cancel: Callable[[], bool] | None = None,
) -> EncodingResult:
    """Fit (or read from the store) the encoding model of ``source`` captions embedded by ``embedder``."""
    captions = _complete_captions(ds, source, store)
    cached = cached_encoding(ds, source, embedder, store=store, method=method, alphas=alphas)
    if cached is not None:
        return cached
    keys = encoding_keys(ds, captions, embedder, method, alphas)

    def step(done: int, total: int, message: str) -> None:
        if report:
            report(done, total, message)

    embeddings = embed_texts_cached(captions, embedder, store=store, pool=pool, cancel=cancel)
    result = encode_features(ds, embeddings, method=method, alphas=alphas, report=step)
    store.put_many({keys[part]: ("npy", array_to_npy(getattr(result, part))) for part in PARTS})
    store.record_run(ds.id, STAGE, embedder, {"source": source, "method": method}, ds.n_units, ds.n_units)
    return result


def feature_encoding_keys(ds: Dataset, feature_set: str, method: str, alphas) -> dict[str, str]:
    """Store keys of the encoding model of a named feature set (``feature_set`` must identify the
    features' content, e.g. a trained network's weights key and layer)."""
    base = dict(stage=STAGE, version=SOLVER_VERSION, dataset=dataset_fingerprint(ds), features=feature_set,
                method=method, alphas=[float(a) for a in alphas])
    return {part: entry_key(part=part, **base) for part in PARTS}


def fit_feature_encoding(
    ds: Dataset, feature_set: str, features: np.ndarray, *, store: Store, method: str = "gcv", alphas=DEFAULT_ALPHAS,
    report: Report | None = None,
) -> EncodingResult:
    """:func:`encode_features` for features that are not caption embeddings ([n_stimuli, d], e.g. a
    visual encoder's layer), cached under the feature set's id."""
    cached = cached_feature_encoding(ds, feature_set, store=store, method=method, alphas=alphas)
    if cached is not None:
        return cached
    result = encode_features(ds, features, method=method, alphas=alphas, report=report)
    keys = feature_encoding_keys(ds, feature_set, method, alphas)
    store.put_many({keys[part]: ("npy", array_to_npy(getattr(result, part))) for part in PARTS})
    return result


def cached_feature_encoding(ds: Dataset, feature_set: str, *, store: Store, method: str = "gcv", alphas=DEFAULT_ALPHAS) -> EncodingResult | None:
    """The stored encoding model of a named feature set, or None (never fits anything)."""
    keys = feature_encoding_keys(ds, feature_set, method, alphas)
    found = store.get_many(list(keys.values()))
    if not all(k in found for k in keys.values()):
        return None
    return EncodingResult(**{part: array_from_npy(found[k][1]) for part, k in keys.items()})


def encode_features(
    ds: Dataset, features: np.ndarray, *, method: str = "gcv", alphas=DEFAULT_ALPHAS, report: Report | None = None
) -> EncodingResult:
    """Fit a ridge from ``features`` [n_stimuli, d] to every unit on the training stimuli and score
    it on the test stimuli (no caching: callers key the result by what the features are)."""
    train, test = ds.stimuli.indices("train"), ds.stimuli.indices("test")
    if len(test) < 3:
        raise ValueError(f"dataset {ds.id!r} has {len(test)} test stimuli; scoring needs at least 3")
    say = report or (lambda done, total, message: None)
    say(0, ds.n_units, f"fitting ridge on {len(train)} stimuli")
    fit = fit_ridge_cv(
        features[train],
        ds.responses,  # memory-mapped: read chunk by chunk, never copied whole
        alphas,
        y_rows=train,
        method=method,
        progress=lambda done, total: say(done, total, f"fitted {done:,} of {total:,} units"),
    )
    r = pearson_r(np.asarray(ds.responses[test], np.float32), fit.predict(features[test])).astype(np.float32)
    ceiling = (
        fraction_of_ceiling(r, ds.noise_ceiling).astype(np.float32) if ds.noise_ceiling is not None else np.full_like(r, np.nan)
    )
    return EncodingResult(
        r=r,
        fraction_of_ceiling=ceiling,
        alpha=fit.alpha.astype(np.float32),
        cv_score=fit.cv_score.astype(np.float32),
        coef=fit.coef.astype(np.float32),
        intercept=np.asarray(fit.intercept, np.float64),
    )


def cached_encoding(ds: Dataset, source: str, embedder: str, *, store: Store, method: str = "gcv", alphas=DEFAULT_ALPHAS) -> EncodingResult | None:
    """The stored result for these inputs, or None if it was never fitted (never fits anything)."""
    keys = encoding_keys(ds, _complete_captions(ds, source, store), embedder, method, alphas)
    found = store.get_many(list(keys.values()))
    if not all(k in found for k in keys.values()):
        return None
    return EncodingResult(**{part: array_from_npy(found[k][1]) for part, k in keys.items()})


def _complete_captions(ds: Dataset, source: str, store: Store) -> list[str]:
    captions = source_captions(ds, source, store)
    if any(c is None for c in captions):
        raise LookupError(f"{source!r} has not captioned every stimulus of {ds.id!r} yet")
    return captions


def unit_regions(ds: Dataset) -> tuple[np.ndarray, tuple[str, ...]]:
    """(labels [n_units], names): ROIs of a surface dataset, or areas of a neuron dataset (label
    0 = no region)."""
    if isinstance(ds.space, NeuronSpace):
        return ds.space.area.astype(np.int64) + 1, ("none", *ds.space.areas)
    return ds.space.roi_labels, ds.space.roi_names


def region_summary(values: np.ndarray, labels: np.ndarray, names) -> dict[str, float]:
    """Mean of ``values`` [n_units] per region (label index into ``names``; 0 = none is skipped)."""
    out = {}
    for code, name in enumerate(names):
        if code == 0 and name in ("none", "unknown", "Unknown"):
            continue
        mask = labels == code
        if mask.any():
            out[str(name)] = float(np.nanmean(values[mask]))
    return out
