"""The Ray path (launch.py batch) on a local 2-CPU cluster, against the backend's own stages."""

from __future__ import annotations

import sqlite3
from collections import Counter

import numpy as np
import pytest

from backend.cache import Store
from tests.models_tiny import register_tiny

pytestmark = pytest.mark.slow


class CountingStore(Store):
    """A Store that counts how often each key is written."""

    def __init__(self, path) -> None:
        super().__init__(path)
        self.writes: Counter[str] = Counter()

    def put_many(self, items) -> None:
        self.writes.update(list(items))  # the keys (a mapping would add its values)
        super().put_many(items)


def entries(store: Store) -> dict[str, tuple[str, bytes]]:
    with sqlite3.connect(store.path) as db:
        return {key: (media, bytes(data)) for key, media, data in db.execute("SELECT key, media, data FROM entries")}


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster (2 CPUs, ~5 s to start) for the whole session."""
    import ray

    from backend.cluster.batch import connect

    connect(num_cpus=2)
    yield ray
    ray.shutdown()


def test_batch_equals_the_backend_stages_byte_for_byte_and_a_second_run_computes_nothing(ray_cluster, mouse, tmp_path):
    from backend.cluster.batch import BatchSettings, run_batch
    from backend.models.pool import ModelPool
    from backend.models.registry import get_model
    from backend.stages.captions import caption_dataset, caption_keys, caption_params, caption_sources, source_captions
    from backend.stages.embeddings import embed_texts_cached
    from backend.stages.encoding import fit_encoding
    from backend.stages.images import generate_cached

    blip, embedder = register_tiny("blip").id, register_tiny("clip-text").id
    # The demo world ships its simulated captioners' captions (sources too); the tiny BLIP captions here.
    captioners, renderer = [blip], "sim-scene-renderer"
    on_ray = CountingStore(tmp_path / "ray.sqlite")
    lines = []
    # Models see batches of the same shapes on both paths: captions 8 consecutive stimuli (the
    # stage's default), texts one at a time (embed_batch=1 here, batch_size=1 below) -- a text
    # embedder's float32 rounding depends on the shape of the batch a text is padded into (~1e-7,
    # on either path). With the same shapes the two paths must agree to the byte.
    settings = BatchSettings(workers=2, batch_size=32, shard_size=64, inner_batch=8, embed_batch=1)
    summary = run_batch([mouse], captioners, [embedder], renderer, store=on_ray, settings=settings, say=lines.append)
    assert max(on_ray.writes.values()) == 1, "every key is written once"
    assert summary.computed["caption"] == mouse.n_stimuli and summary.computed["encoding"] >= 4
    assert f"[batch] demo-mouse: captions by {blip}: {mouse.n_stimuli}/{mouse.n_stimuli}" in "\n".join(lines), "progress is reported"

    # The same work through the stages the backend's job queue runs.
    queue = Store(tmp_path / "queue.sqlite")
    pool = ModelPool(device="cpu")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a Ray worker with one CPU (OMP_NUM_THREADS=1): float32 sums in the same order
    for captioner in captioners:
        caption_dataset(mouse, captioner, store=queue, pool=pool)
    test = mouse.stimuli.indices("test")
    for source in caption_sources(mouse, queue):
        texts = source_captions(mouse, source, queue)
        embed_texts_cached(texts, embedder, store=queue, pool=pool, batch_size=1)
        generate_cached([texts[i] for i in test], renderer, store=queue, pool=pool)
        fit_encoding(mouse, source, embedder, store=queue, pool=pool)
    torch.set_num_threads(threads)
    ray_entries, queue_entries = entries(on_ray), entries(queue)
    assert ray_entries.keys() == queue_entries.keys()
    different = [key for key in ray_entries if ray_entries[key] != queue_entries[key]]
    assert not different, f"{len(different)} of {len(ray_entries)} entries differ"
    assert {r["model"] for r in on_ray.runs(mouse.id, "caption")} == set(captioners), "the viewer lists the captioner"

    on_ray.writes.clear()
    again = run_batch([mouse], captioners, [embedder], renderer, store=on_ray, say=lines.append)
    assert sum(again.computed.values()) == 0 and not on_ray.writes, "a second run computes and writes nothing"
    assert again.seconds < 5

    # An interrupted run: drop a third of the captions; the next run computes just those.
    spec = get_model(blip)
    lost = caption_keys(mouse, spec, caption_params(spec))[::3]
    with sqlite3.connect(on_ray.path) as db:
        db.executemany("DELETE FROM entries WHERE key = ?", [(k,) for k in lost])
    resumed = run_batch([mouse], [blip], [], None, store=on_ray, say=lines.append)
    assert resumed.computed["caption"] == len(lost) and set(on_ray.writes) == set(lost)
    assert entries(on_ray) == ray_entries


def test_a_killed_worker_s_shard_is_retried(ray_cluster, mouse, tmp_path):
    from backend.cluster.batch import BatchSettings, run_batch
    from backend.stages.captions import cached_captions

    marker = tmp_path / "killed"
    store = CountingStore(tmp_path / "store.sqlite")
    settings = BatchSettings(workers=2, batch_size=16, shard_size=16, die_once=str(marker))
    summary = run_batch([mouse], ["sim-one-object"], [], None, store=store, settings=settings, say=lambda line: None)
    assert marker.read_text().startswith("killed actor process"), "a worker died mid-run"
    assert summary.computed["caption"] == mouse.n_stimuli
    assert max(store.writes.values()) == 1
    assert cached_captions(mouse, "sim-one-object", store) == list(mouse.captions["sim-one-object"])


def test_encoding_fits_share_the_responses_and_match_the_stage(ray_cluster, mouse):
    """The task the fits run, called through Ray with the responses from the object store."""
    from backend.cluster.workers import fit_encoding_task
    from backend.stages.encoding import encode_features

    features = np.random.default_rng(0).standard_normal((mouse.n_stimuli, 16)).astype(np.float32)
    shared = ray_cluster.put(np.asarray(mouse.responses, np.float32))
    ceiling = ray_cluster.put(mouse.noise_ceiling)
    remote = ray_cluster.remote(fit_encoding_task)
    parts = ray_cluster.get(remote.remote(features, shared, mouse.stimuli.indices("train"), mouse.stimuli.indices("test"), ceiling, "gcv", (1.0, 10.0, 100.0)))
    expected = encode_features(mouse, features, alphas=(1.0, 10.0, 100.0))
    for part in ("r", "alpha", "coef", "intercept"):
        np.testing.assert_array_equal(parts[part], getattr(expected, part))
    assert parts["r"].shape == (mouse.n_units,) and np.nanmean(parts["r"]) < 0.2, "random features predict little"
