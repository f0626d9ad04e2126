"""Stage: captions decoded from the brain for the test stimuli.

A ridge maps responses to the text embedding of a caption source (trained on the training
stimuli); each test stimulus's predicted embedding retrieves the nearest training caption (the
held-out corpus, so a test caption is never its own answer) or the nearest caption of a corpus the
user supplies (a text file, one caption per line), by cosine after removing the corpus mean (which
keeps a few captions near the mean from being retrieved for everything). Stored as JSON by the
content of everything it depends on.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
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


#: Bounds of a user-supplied caption corpus: entries, characters per caption, bytes of a file.
MAX_CORPUS = 200_000
MAX_CORPUS_CAPTION = 1_000
MAX_CORPUS_BYTES = 50_000_000


def corpus_id(corpus: list[str]) -> str:
    """The content hash that names a user corpus (in cache keys and in requests for its decodings)."""
    return hashlib.sha256(json.dumps(corpus).encode()).hexdigest()


def check_corpus(corpus: list[str]) -> list[str]:
    """The corpus with blank lines dropped and whitespace trimmed; ValueError in one line when it
    has fewer than 2 captions, more than MAX_CORPUS, or a caption over MAX_CORPUS_CAPTION chars."""
    texts = [" ".join(str(line).split()) for line in corpus]
    texts = [line for line in texts if line]
    if len(texts) < 2:
        raise ValueError(f"a caption corpus needs at least 2 captions, got {len(texts)}")
    if len(texts) > MAX_CORPUS:
        raise ValueError(f"a caption corpus holds at most {MAX_CORPUS:,} captions, got {len(texts):,}")
    longest = max(range(len(texts)), key=lambda i: len(texts[i]))
    if len(texts[longest]) > MAX_CORPUS_CAPTION:
        raise ValueError(f"caption {longest + 1} of the corpus has {len(texts[longest]):,} characters; at most {MAX_CORPUS_CAPTION:,}")
    return texts


def read_corpus(path: str | Path) -> list[str]:
    """A caption corpus from a UTF-8 text file, one caption per line (see :func:`check_corpus`)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such caption corpus file")
    if path.stat().st_size > MAX_CORPUS_BYTES:
        raise ValueError(f"{path}: {path.stat().st_size:,} bytes; a caption corpus may have at most {MAX_CORPUS_BYTES:,}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start}); expected one caption per line") from None
    if "\x00" in text:
        raise ValueError(f"{path}: binary data; expected one caption per line")
    return check_corpus(text.splitlines())


def decoding_key(ds: Dataset, captions: list[str], embedder: str, corpus: str | None = None) -> str:
    """corpus: None for the training captions, else a user corpus's :func:`corpus_id`."""
    extra = {} if corpus is None else {"corpus": corpus}
    return entry_key(stage=STAGE, dataset=dataset_fingerprint(ds), captions=captions, embedder=embedder, retrieval=RETRIEVAL, **extra)


def cached_decoding(ds: Dataset, source: str, embedder: str, store: Store, corpus: str | None = None) -> dict | None:
    """{"stimuli": {row: {"caption", "similarity"}}, "identification": {...}, "corpus": {...}} or
    None if not run; ``corpus`` is None (training captions) or a user corpus's id."""
    text = store.get_text(decoding_key(ds, _complete_captions(ds, source, store), embedder, corpus))
    return None if text is None else json.loads(text)


def decode_captions(
    ds: Dataset,
    source: str,
    embedder: str,
    *,
    store: Store,
    pool,
    corpus: list[str] | None = None,
    report: Callable[[int, int, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> dict:
    """Decode a caption for every test stimulus (cached); see :func:`cached_decoding`.

    corpus: the captions to retrieve from (checked by :func:`check_corpus`); default: the
    source's captions of the training stimuli.
    """
    captions = _complete_captions(ds, source, store)
    texts = check_corpus(corpus) if corpus is not None else None
    key = decoding_key(ds, captions, embedder, corpus_id(texts) if texts is not None else None)
    cached = store.get_text(key)
    if cached is not None:
        return json.loads(cached)
    embeddings = embed_texts_cached(captions, embedder, store=store, pool=pool, cancel=cancel)
    train, test = ds.stimuli.indices("train"), ds.stimuli.indices("test")
    if texts is None:
        texts, candidates = [captions[int(i)] for i in train], embeddings[train]
        about = {"kind": "training captions", "n": len(texts), "id": None}
    else:
        if report:
            report(0, 2, f"embedding the corpus of {len(texts):,} captions")
        candidates = embed_texts_cached(texts, embedder, store=store, pool=pool, cancel=cancel)
        about = {"kind": "user corpus", "n": len(texts), "id": corpus_id(texts)}
    if report:
        report(1, 2, f"fitting the decoder on {len(train)} stimuli")
    decoder = fit_ridge_cv(np.asarray(ds.responses[train], np.float32), embeddings[train])
    predicted = decoder.predict(np.asarray(ds.responses[test], np.float32))
    nearest = retrieve(predicted, candidates, top=1, centred=True)[:, 0]
    similarity = np.diag(cosine_similarity(candidates[nearest], embeddings[test]))
    result = {
        "source": source,
        "embedder": embedder,
        "corpus": about,
        "identification": identification(predicted, embeddings[test]),
        "stimuli": {
            str(int(row)): {"caption": texts[int(j)], "similarity": round(float(sim), 4)}
            for row, j, sim in zip(test, nearest, similarity, strict=True)
        },
    }
    store.put(key, "json", json.dumps(result).encode())
    store.record_run(ds.id, STAGE, embedder, {"source": source}, len(test), len(test))
    if report:
        report(2, 2, "decoded")
    return result
