"""Stage: images generated from texts by a text-to-image model, cached per (prompt, seed)."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

from backend.cache import Store, entry_key
from backend.models.device import Cancelled
from backend.models.registry import get_model
from backend.models.weights import fingerprint
from backend.stages.inputs import text_hash

STAGE = "generate-image"
CHUNK = 8

Report = Callable[[int, int, str], None]


def image_keys(prompts: Sequence[str], model_id: str, *, seed: int = 0, size: int | None = None, steps: int | None = None) -> list[str]:
    """Store keys of the images for ``prompts``. Every prompt uses the same ``seed``, so an image
    depends on its prompt only, never on its position in a request."""
    spec = get_model(model_id)
    if spec.kind != "text_to_image":
        raise ValueError(f"{model_id} is a {spec.kind.replace('_', ' ')}, not a text-to-image model")
    params = {**spec.defaults, **{k: v for k, v in {"size": size, "steps": steps}.items() if v is not None}}
    revision = fingerprint(spec)
    return [entry_key(stage=STAGE, model=spec.id, revision=revision, params=params, seed=seed, prompt=text_hash(p)) for p in prompts]


def generate_cached(
    prompts: Sequence[str],
    model_id: str,
    *,
    store: Store,
    pool,
    seed: int = 0,
    size: int | None = None,
    steps: int | None = None,
    batch_size: int = 4,
    report: Report | None = None,
    cancel: Callable[[], bool] | None = None,
) -> list[str]:
    """Store keys of PNG images, one per prompt; only the missing ones are generated."""
    keys = image_keys(prompts, model_id, seed=seed, size=size, steps=steps)
    unique = {}
    for i, key in enumerate(keys):
        if key not in store and key not in unique:
            unique[key] = prompts[i]
    todo = list(unique.items())
    total, done = len(todo), 0
    if report:
        report(0, total, f"{len(keys) - total} of {len(keys)} cached")
    for start in range(0, len(todo), CHUNK):
        if cancel and cancel():
            raise Cancelled()
        chunk = todo[start : start + CHUNK]
        images = pool.get(model_id).generate(
            [p for _, p in chunk], seeds=[seed] * len(chunk), size=size, steps=steps, batch_size=batch_size, cancel=cancel
        )
        store.put_many({key: ("png", _png(image)) for (key, _), image in zip(chunk, images, strict=True)})
        done += len(chunk)
        if report:
            report(done, total, f"generated {done} of {total}")
    return keys


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
