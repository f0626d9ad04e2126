"""Stage: caption every stimulus of a dataset with one captioner, cached per image."""

from __future__ import annotations

from collections.abc import Callable

from backend.cache import Store, entry_key
from backend.data.schema import Dataset
from backend.models.captioners import CLASSES
from backend.models.registry import ModelSpec, get_model
from backend.models.weights import fingerprint
from backend.stages.inputs import image_hashes, load_images

STAGE = "caption"
REFERENCE = "reference"
#: Images per store write: a cancelled job keeps everything finished before it.
CHUNK = 32

Report = Callable[[int, int, str], None]


def caption_params(spec: ModelSpec, overrides: dict | None = None) -> dict:
    """The parameters a caption depends on: the spec's defaults with ``overrides``, only the names
    the captioner accepts (unknown names are a one-line ValueError)."""
    accepted = CLASSES[spec.architecture].param_names
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = set(overrides) - set(accepted)
    if unknown:
        raise ValueError(f"{spec.id} does not take {sorted(unknown)}; it takes {list(accepted)}")
    merged = {**spec.defaults, **overrides}
    return {k: merged[k] for k in sorted(merged) if k in accepted}


def caption_keys(ds: Dataset, spec: ModelSpec, params: dict) -> list[str]:
    """One store key per stimulus. Simulated captioners read the reference caption, so it is part
    of their key; real ones read only the pixels."""
    revision = fingerprint(spec)
    keys = []
    for i, digest in enumerate(image_hashes(ds)):
        reference = ds.stimuli.captions[i] if spec.simulated else None
        keys.append(entry_key(stage=STAGE, model=spec.id, revision=revision, params=params, image=digest, reference=reference))
    return keys


def cached_captions(ds: Dataset, model_id: str, store: Store, params: dict | None = None) -> list[str | None]:
    """What the store holds for each stimulus (None where not captioned yet); never loads a model."""
    spec = get_model(model_id)
    keys = caption_keys(ds, spec, caption_params(spec, params))
    found = store.get_many(keys)
    return [found[k][1].decode("utf-8") if k in found else None for k in keys]


def caption_dataset(
    ds: Dataset,
    model_id: str,
    *,
    store: Store,
    pool,
    params: dict | None = None,
    batch_size: int = 8,
    report: Report | None = None,
    cancel: Callable[[], bool] | None = None,
) -> list[str]:
    """A caption for every stimulus: cached ones from the store, the rest computed and stored.

    The model is loaded (through ``pool``) only if something is missing. Progress goes to
    ``report(done, total, message)``; ``cancel()`` returning True stops between chunks.
    """
    spec = get_model(model_id)
    if spec.kind != "captioner":
        raise ValueError(f"{model_id} is a {spec.kind.replace('_', ' ')}, not a captioner")
    settings = caption_params(spec, params)
    keys = caption_keys(ds, spec, settings)
    total = len(keys)
    with store.compute_once(entry_key(stage=STAGE, model=spec.id, params=settings, dataset=str(ds.root))):
        found = store.get_many(keys)
        captions: list[str | None] = [found[k][1].decode("utf-8") if k in found else None for k in keys]
        missing = [i for i, c in enumerate(captions) if c is None]
        done = total - len(missing)
        _report(report, done, total, f"{done} of {total} cached")
        if missing:
            captioner = pool.get(spec.id)
            for start in range(0, len(missing), CHUNK):
                if cancel and cancel():
                    break
                chunk = missing[start : start + CHUNK]
                texts = captioner.caption(
                    load_images(ds, chunk),
                    references=[ds.stimuli.captions[i] for i in chunk],
                    batch_size=batch_size,
                    cancel=cancel,
                    **settings,
                )
                store.put_many({keys[i]: ("text", text.encode("utf-8")) for i, text in zip(chunk, texts, strict=True)})
                for i, text in zip(chunk, texts, strict=True):
                    captions[i] = text
                done += len(chunk)
                _report(report, done, total, f"captioned {done} of {total}")
        store.record_run(ds.id, STAGE, spec.id, settings, done, total)
    return captions


def _report(report: Report | None, done: int, total: int, message: str) -> None:
    if report:
        report(done, total, message)


def caption_sources(ds: Dataset, store: Store) -> list[str]:
    """Every caption source of a dataset: the reference, captions shipped with it, then the
    captioners that have run on it (oldest first)."""
    names = [REFERENCE, *ds.captions]
    names += [r["model"] for r in store.runs(ds.id, STAGE) if r["model"] not in names]
    return names


def source_captions(ds: Dataset, source: str, store: Store) -> list[str | None]:
    """Captions of every stimulus from ``source`` (None where a captioner has not reached it).

    LookupError (one line) when the source is neither the reference, shipped, nor a captioner
    that has run on this dataset.
    """
    if source == REFERENCE:
        return list(ds.stimuli.captions)
    if source in ds.captions:
        return list(ds.captions[source])
    runs = [r for r in store.runs(ds.id, STAGE) if r["model"] == source]
    if not runs:
        raise LookupError(f"{source!r} has not captioned dataset {ds.id!r} yet; run a caption job first")
    return cached_captions(ds, source, store, runs[-1]["params"])
