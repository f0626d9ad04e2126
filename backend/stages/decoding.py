"""Stage: captions decoded from the brain for the test stimuli.

A ridge maps responses to the text embedding of a caption source (trained on the training
stimuli); each test stimulus's predicted embedding retrieves the nearest training caption (the
held-out corpus, so a test caption is never its own answer), by cosine after removing the corpus
mean (which keeps a few captions near the mean from being retrieved for everything). Stored as JSON by the content of
everything it depends on.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np

from backend.analysis.decoding import cosine_similarity, identification, retrieve
from backend.analysis.ridge import fit_ridge_cv
from backend.cache import Store, entry_key
from backend.data.schema import Dataset
from backend.stages.embeddings import embed_texts_cached
from backend.stages.encoding import _complete_captions, dataset_fingerprint

STAGE = "decode"


#: How captions are retrieved; part of the cache key, so a change of method is never read stale.
RETRIEVAL = "centred-cosine"


def decoding_key(ds: Dataset, captions: list[str], embedder: str) -> str:
    return entry_key(stage=STAGE, dataset=dataset_fingerprint(ds), captions=captions, embedder=embedder, retrieval=RETRIEVAL)


def cached_decoding(ds: Dataset, source: str, embedder: str, store: Store) -> dict | None:
    """{"stimuli": {row: {"caption", "similarity"}}, "identification": {...}} or None if not run."""
    text = store.get_text(decoding_key(ds, _complete_captions(ds, source, store), embedder))
    return None if text is None else json.loads(text)


def decode_captions(
    ds: Dataset,
    source: str,
    embedder: str,
    *,
    store: Store,
    pool,
    report: Callable[[int, int, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> dict:
    """Decode a caption for every test stimulus (cached); see :func:`cached_decoding`."""
    captions = _complete_captions(ds, source, store)
    key = decoding_key(ds, captions, embedder)
    cached = store.get_text(key)
    if cached is not None:
        return json.loads(cached)
    embeddings = embed_texts_cached(captions, embedder, store=store, pool=pool, cancel=cancel)
    train, test = ds.stimuli.indices("train"), ds.stimuli.indices("test")
    if report:
        report(0, 1, f"fitting the decoder on {len(train)} stimuli")
    decoder = fit_ridge_cv(np.asarray(ds.responses[train], np.float32), embeddings[train])
    predicted = decoder.predict(np.asarray(ds.responses[test], np.float32))
    nearest = retrieve(predicted, embeddings[train], top=1, centred=True)[:, 0]
    similarity = np.diag(cosine_similarity(embeddings[train][nearest], embeddings[test]))
    result = {
        "source": source,
        "embedder": embedder,
        "identification": identification(predicted, embeddings[test]),
        "stimuli": {
            str(int(row)): {"caption": captions[int(train[j])], "similarity": round(float(sim), 4)}
            for row, j, sim in zip(test, nearest, similarity, strict=True)
        },
    }
    store.put(key, "json", json.dumps(result).encode())
    store.record_run(ds.id, STAGE, embedder, {"source": source}, len(test), len(test))
    if report:
        report(1, 1, "decoded")
    return result
