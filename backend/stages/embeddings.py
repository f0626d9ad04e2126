"""Stages: text embeddings of captions and image embeddings of stimuli, cached per item."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from backend.cache import Store, array_from_npy, array_to_npy, entry_key
from backend.data.schema import Dataset
from backend.models.device import Cancelled
from backend.models.registry import get_model
from backend.models.weights import fingerprint
from backend.stages.inputs import image_hashes, load_images, text_hash

TEXT_STAGE = "embed-text"
IMAGE_STAGE = "embed-image"
CHUNK = 256

Report = Callable[[int, int, str], None]


def text_keys(texts: Sequence[str], spec) -> list[str]:
    """The store key of each text's embedding by the text embedder ``spec`` (one per text)."""
    revision = fingerprint(spec)
    return [entry_key(stage=TEXT_STAGE, model=spec.id, revision=revision, text=text_hash(t)) for t in texts]


def embed_texts_cached(
    texts: Sequence[str],
    model_id: str,
    *,
    store: Store,
    pool,
    batch_size: int = 64,
    report: Report | None = None,
    cancel: Callable[[], bool] | None = None,
) -> np.ndarray:
    """float32 [n, d]: the text embedder's (L2-normalised) vector for each text, cached per text."""
    spec = get_model(model_id)
    if spec.kind != "text_embedder":
        raise ValueError(f"{model_id} is a {spec.kind.replace('_', ' ')}, not a text embedder")
    keys = text_keys(texts, spec)

    def compute(indices: list[int]) -> np.ndarray:
        return pool.get(spec.id).embed([texts[i] for i in indices], batch_size=batch_size, cancel=cancel)

    return _cached_vectors(keys, compute, store, report, cancel, "embedded")


def embed_images_cached(
    ds: Dataset,
    model_id: str,
    *,
    store: Store,
    pool,
    batch_size: int = 32,
    report: Report | None = None,
    cancel: Callable[[], bool] | None = None,
) -> np.ndarray:
    """float32 [n_stimuli, d]: the image embedder's vector for every stimulus, cached per image."""
    vectors = embed_image_hashes_cached(
        image_hashes(ds), lambda indices: load_images(ds, indices), model_id,
        store=store, pool=pool, batch_size=batch_size, report=report, cancel=cancel,
    )
    store.record_run(ds.id, IMAGE_STAGE, model_id, {}, len(vectors), len(vectors))
    return vectors


def embed_image_hashes_cached(
    hashes: list[str],
    load: Callable[[list[int]], list],
    model_id: str,
    *,
    store: Store,
    pool,
    batch_size: int = 32,
    report: Report | None = None,
    cancel: Callable[[], bool] | None = None,
) -> np.ndarray:
    """float32 [n, d]: the image embedder's vector for each image, given each image's content hash
    (SHA-256 of its file bytes) and ``load(rows)`` -> the PIL images at those rows. Cached per
    image content, so a stimulus or a generated image is embedded once for every stage; an image
    that appears twice is embedded once."""
    spec = get_model(model_id)
    if spec.kind != "image_embedder":
        raise ValueError(f"{model_id} is a {spec.kind.replace('_', ' ')}, not an image embedder")
    revision = fingerprint(spec)
    keys = [entry_key(stage=IMAGE_STAGE, model=spec.id, revision=revision, image=h) for h in hashes]
    first = {key: row for row, key in reversed(list(enumerate(keys)))}  # the first row of each image
    unique = list(first)

    def compute(indices: list[int]) -> np.ndarray:
        return pool.get(spec.id).embed(load([first[unique[i]] for i in indices]), batch_size=batch_size, cancel=cancel)

    vectors = _cached_vectors(unique, compute, store, report, cancel, "embedded images")
    position = {key: i for i, key in enumerate(unique)}
    return vectors[[position[key] for key in keys]] if keys else vectors


def _cached_vectors(keys, compute, store: Store, report, cancel, verb: str) -> np.ndarray:
    found = store.get_many(keys)
    vectors: list[np.ndarray | None] = [array_from_npy(found[k][1]) if k in found else None for k in keys]
    missing = [i for i, v in enumerate(vectors) if v is None]
    total, done = len(keys), len(keys) - len(missing)
    if report:
        report(done, total, f"{done} of {total} cached")
    for start in range(0, len(missing), CHUNK):
        if cancel and cancel():
            break
        chunk = missing[start : start + CHUNK]
        computed = np.asarray(compute(chunk), dtype=np.float32)
        store.put_many({keys[i]: ("npy", array_to_npy(row)) for i, row in zip(chunk, computed, strict=True)})
        for i, row in zip(chunk, computed, strict=True):
            vectors[i] = row
        done += len(chunk)
        if report:
            report(done, total, f"{verb} {done} of {total}")
    if any(v is None for v in vectors):
        raise Cancelled()
    return np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, 0), np.float32)
