"""The Ray driver of ``launch.py batch``: dataset-wide captioning, embedding, generation and
encoding fits on a Ray cluster, written into the backend's own content-addressed store.

For each dataset, in order (each step reads what the one before wrote):

1. captions: every stimulus by every captioner (a Ray Data ``map_batches`` actor pool per model);
2. text embeddings: every caption source (reference, shipped captions, each captioner that has
   run) by every embedder, each distinct text once;
3. reconstructions: each source's captions of the test stimuli, by the text-to-image model;
4. encoding fits: one Ray task per (source, embedder), the responses put in the object store once
   per dataset and shared by every fit.

Work is planned from the store: only keys that are missing are sent to the cluster, so a second
run computes nothing and an interrupted run resumes. Results stream back to the driver, which
writes each shard (one block of Ray Data output) in one transaction under the same keys the
backend's stages use, so the viewer reads them like any other cached result; a key is written
once. Ray restarts a lost actor and resubmits its shard (``max_task_retries``), and retries a
lost encoding task (``max_retries``).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from backend.analysis.ridge import DEFAULT_ALPHAS
from backend.cache import Store, array_from_npy, array_to_npy
from backend.data.schema import Dataset
from backend.models.registry import DEFAULTS, get_model
from backend.stages import captions as caption_stage
from backend.stages import embeddings as embedding_stage
from backend.stages import encoding as encoding_stage
from backend.stages import images as image_stage

Say = Callable[[str], None]
#: The steps, in the order they run (each reads what the one before wrote).
STEPS = ("caption", "embed", "generate", "encode")
#: Environment variables the cluster's workers need to find the same caches and stay offline.
WORKER_ENV = ("CORTEXTUAL_CACHE", "CORTEXTUAL_DEVICE", "CORTEXTUAL_DTYPE", "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "NILEARN_DATA")


@dataclass
class BatchSettings:
    """How the work is spread. ``workers``: actors per model pool; ``gpus_per_worker``: GPUs per
    actor (default: 1 where the cluster has GPUs, else 0); ``batch_size``: work items per actor
    call; ``shard_size``: items per Ray Data block, i.e. per store transaction (what an
    interruption can lose at most, per worker); ``inner_batch`` / ``embed_batch``: the model's own
    batch size for captioning and generation / for text embedding (the stages' defaults)."""

    workers: int = 2
    gpus_per_worker: float | None = None
    batch_size: int = 16
    shard_size: int = 32
    inner_batch: int = 8
    embed_batch: int = 64
    method: str = "gcv"
    seed: int = 0
    die_once: str | None = None  # fault injection for tests and drills (see workers.ModelActor)


@dataclass
class BatchSummary:
    """What a run did: items computed and written per step, and the time it took (s)."""

    computed: dict[str, int] = field(default_factory=dict)
    cached: dict[str, int] = field(default_factory=dict)
    shards: int = 0
    seconds: float = 0.0

    def add(self, step: str, computed: int, cached: int) -> None:
        self.computed[step] = self.computed.get(step, 0) + computed
        self.cached[step] = self.cached.get(step, 0) + cached


def connect(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the Ray cluster at ``address`` ("auto", "ray://host:10001", "host:6379"), or start a
    local one. Workers get this process's cache and offline settings (runtime_env)."""
    try:
        import ray
    except ImportError:
        raise SystemExit("error: Ray is not installed; pip install -e '.[ray]'") from None
    if ray.is_initialized():
        return
    env = {name: os.environ[name] for name in WORKER_ENV if name in os.environ}
    kwargs = {"address": address} if address else {"num_cpus": num_cpus, "include_dashboard": False}
    ray.init(**kwargs, runtime_env={"env_vars": env}, log_to_driver=False, logging_level="WARNING")
    import logging

    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False  # the driver prints its own progress
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # not Ray Data's per-dataset INFO lines


def run_batch(
    datasets: list[Dataset],
    captioners: list[str],
    embedders: list[str],
    text_to_image: str | None,
    *,
    store: Store,
    settings: BatchSettings | None = None,
    steps: tuple[str, ...] = STEPS,
    say: Say = print,
) -> BatchSummary:
    """Run ``steps`` (default all of :data:`STEPS`) for every dataset on the connected cluster
    (see :func:`connect`)."""
    settings = settings or BatchSettings()
    unknown = set(steps) - set(STEPS)
    if unknown:
        raise ValueError(f"unknown steps {sorted(unknown)}; expected some of {list(STEPS)}")
    summary = BatchSummary()
    started = time.perf_counter()
    specs = {m: get_model(m) for m in [*captioners, *embedders, *([text_to_image] if text_to_image else [])]}
    for model_id, kind in [*((c, "captioner") for c in captioners), *((e, "text_embedder") for e in embedders)]:
        if specs[model_id].kind != kind:
            raise ValueError(f"{model_id} is a {specs[model_id].kind.replace('_', ' ')}, not a {kind.replace('_', ' ')}")
    for ds in datasets:
        for captioner in captioners if "caption" in steps else ():
            _captions(ds, captioner, store, settings, summary, say)
        sources = _complete_sources(ds, store)
        for embedder in embedders if "embed" in steps else ():
            _embeddings(ds, sources, embedder, store, settings, summary, say)
        if text_to_image and "generate" in steps:
            _reconstructions(ds, sources, text_to_image, store, settings, summary, say)
        if embedders and "encode" in steps:
            _encodings(ds, sources, embedders, store, settings, summary, say)
    summary.seconds = time.perf_counter() - started
    return summary


# ------------------------------------------------------------------------------------ the steps


def _captions(ds: Dataset, model_id: str, store: Store, settings: BatchSettings, summary: BatchSummary, say: Say) -> None:
    spec = get_model(model_id)
    params = caption_stage.caption_params(spec)
    keys = caption_stage.caption_keys(ds, spec, params)
    missing = _missing(store, {key: i for i, key in enumerate(keys)})
    label = f"{ds.id}: captions by {model_id}"
    if missing:
        items = [{"key": key, "row": row} for key, row in missing.items()]
        actor = dict(task="caption", model_id=model_id, params=params, dataset_root=str(ds.root), dataset_id=ds.id)
        _map(items, actor, spec, store, settings, summary, say, label)
    else:
        say(f"[batch] {label}: all {len(keys)} cached")
    summary.add("caption", len(missing), len(keys) - len(missing))
    store.record_run(ds.id, caption_stage.STAGE, spec.id, params, len(keys), len(keys))  # as caption_dataset does


def _embeddings(ds: Dataset, sources: dict[str, list[str]], model_id: str, store: Store, settings: BatchSettings, summary: BatchSummary, say: Say) -> None:
    spec = get_model(model_id)
    wanted = {}
    for texts in sources.values():
        for key, text in zip(embedding_stage.text_keys(texts, spec), texts, strict=True):
            wanted.setdefault(key, text)
    missing = _missing(store, wanted)
    label = f"{ds.id}: text embeddings by {model_id} ({len(sources)} caption sources)"
    if missing:
        items = [{"key": key, "text": text} for key, text in missing.items()]
        _map(items, dict(task="embed", model_id=model_id, inner_batch=settings.embed_batch), spec, store, settings, summary, say, label)
    else:
        say(f"[batch] {label}: all {len(wanted)} cached")
    summary.add("embed", len(missing), len(wanted) - len(missing))
    for source, texts in sources.items():  # as the embed-captions job records it
        store.record_run(ds.id, embedding_stage.TEXT_STAGE, spec.id, {"source": source}, len(texts), len(texts))


def _reconstructions(ds: Dataset, sources: dict[str, list[str]], model_id: str, store: Store, settings: BatchSettings, summary: BatchSummary, say: Say) -> None:
    spec = get_model(model_id)
    test = ds.stimuli.indices("test")
    prompts = [texts[i] for texts in sources.values() for i in test]
    keys = image_stage.image_keys(prompts, model_id, seed=settings.seed)
    missing = _missing(store, dict(zip(keys, prompts, strict=True)))
    label = f"{ds.id}: reconstructions by {model_id} from {len(sources)} caption sources"
    if missing:
        items = [{"key": key, "text": prompt} for key, prompt in missing.items()]
        _map(items, dict(task="generate", model_id=model_id, seed=settings.seed), spec, store, settings, summary, say, label)
    else:
        say(f"[batch] {label}: all {len(set(keys))} cached")
    summary.add("generate", len(missing), len(set(keys)) - len(missing))


def _encodings(ds: Dataset, sources: dict[str, list[str]], embedders: list[str], store: Store, settings: BatchSettings, summary: BatchSummary, say: Say) -> None:
    import ray

    from backend.cluster.workers import fit_encoding_task

    todo, planned, twins = [], set(), []
    for embedder in embedders:
        spec = get_model(embedder)
        for source, texts in sources.items():
            keys = encoding_stage.encoding_keys(ds, texts, embedder, settings.method, DEFAULT_ALPHAS)
            if len(store.get_many(list(keys.values()))) == len(keys):
                summary.add("encoding", 0, 1)
                continue
            if keys["r"] in planned:  # a source with the very same captions (e.g. a simulated reference): one fit serves both
                twins.append((source, embedder))
                continue
            planned.add(keys["r"])
            vector_keys = embedding_stage.text_keys(texts, spec)
            found = store.get_many(vector_keys)
            features = np.stack([array_from_npy(found[k][1]) for k in vector_keys]).astype(np.float32)
            todo.append((source, embedder, keys, features))
    label = f"{ds.id}: encoding fits"
    if not todo:
        say(f"[batch] {label}: all cached")
        return
    say(f"[batch] {label}: {len(todo)} fits as Ray tasks, responses {ds.responses.shape} shared through the object store")
    # Once per dataset; every task reads the same copy (zero-copy on its node).
    responses = ray.put(np.asarray(ds.responses, dtype=np.float32))
    ceiling = ray.put(None if ds.noise_ceiling is None else np.asarray(ds.noise_ceiling, np.float32))
    train, test = ds.stimuli.indices("train"), ds.stimuli.indices("test")
    remote = ray.remote(max_retries=3)(fit_encoding_task)
    pending = {
        remote.remote(features, responses, train, test, ceiling, settings.method, DEFAULT_ALPHAS): (source, embedder, keys)
        for source, embedder, keys, features in todo
    }
    done = 0
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        source, embedder, keys = pending.pop(ready[0])
        parts = ray.get(ready[0])
        store.put_many({keys[part]: ("npy", array_to_npy(parts[part])) for part in encoding_stage.PARTS})
        store.record_run(ds.id, encoding_stage.STAGE, embedder, {"source": source, "method": settings.method}, ds.n_units, ds.n_units)
        done += 1
        summary.shards += 1
        say(f"[batch] {label}: {done}/{len(todo)} ({source} x {embedder}, mean r {float(np.nanmean(parts['r'])):.3f})")
    for source, embedder in twins:
        store.record_run(ds.id, encoding_stage.STAGE, embedder, {"source": source, "method": settings.method}, ds.n_units, ds.n_units)
    summary.add("encoding", len(todo), len(twins))


# ---------------------------------------------------------------------------------- plumbing


def _missing(store: Store, wanted: dict[str, object]) -> dict[str, object]:
    """The entries of ``wanted`` (key -> input) whose key the store does not hold, in order."""
    found = store.get_many(list(wanted))
    return {key: value for key, value in wanted.items() if key not in found}


def _complete_sources(ds: Dataset, store: Store) -> dict[str, list[str]]:
    """Caption source -> its captions, for every source with a caption for every stimulus."""
    out = {}
    for source in caption_stage.caption_sources(ds, store):
        texts = caption_stage.source_captions(ds, source, store)
        if all(t is not None for t in texts):
            out[source] = texts
    return out


def _map(items: list[dict], actor: dict, spec, store: Store, settings: BatchSettings, summary: BatchSummary, say: Say, label: str) -> None:
    """``items`` through a pool of ModelActors; each output block is written as it arrives."""
    import ray
    import ray.data

    from backend.cluster.workers import ModelActor

    gpus = settings.gpus_per_worker
    if gpus is None:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 and not spec.simulated else 0
    n = len(items)
    blocks = max(1, math.ceil(n / settings.shard_size))
    say(f"[batch] {label}: {n} to compute in {blocks} shards on {settings.workers} workers" + (f" ({gpus} GPU each)" if gpus else ""))
    data = ray.data.from_items(items, override_num_blocks=blocks)
    out = data.map_batches(
        ModelActor,
        fn_constructor_kwargs={"inner_batch": settings.inner_batch, **actor, "die_once": settings.die_once},
        compute=ray.data.ActorPoolStrategy(size=settings.workers),
        batch_size=settings.batch_size,
        batch_format="numpy",
        num_gpus=gpus or None,
        num_cpus=1,
    )
    done, started = 0, time.perf_counter()
    for batch in out.iter_batches(batch_size=None, batch_format="numpy"):
        media = {"caption": "text", "embed": "npy", "generate": "png"}[actor["task"]]
        store.put_many({str(key): (media, bytes(value)) for key, value in zip(batch["key"], batch["data"], strict=True)})
        done += len(batch["key"])
        summary.shards += 1
        say(f"[batch] {label}: {done}/{n} ({done / max(time.perf_counter() - started, 1e-9):.1f}/s)")
    if done != n:
        raise RuntimeError(f"{label}: {done} of {n} results came back")


def default_text_to_image(ds: Dataset) -> str:
    """The demo world's scene renderer on simulated datasets (its captions are scenes it can
    draw), else the registry's default text-to-image model."""
    return "sim-scene-renderer" if ds.simulated else DEFAULTS["text_to_image"]
