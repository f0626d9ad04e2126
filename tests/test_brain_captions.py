"""The brain-captions stage and its API on the small demo world, with the tiny random-weight Llama
as the frozen LM (tests/models_tiny.py): caching of the ridge predictions, the decoder and each
caption; cancel; the job with progress; the reads. What the captions say is the slow truth tests'
business (a tiny random LM writes noise)."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from backend.cache import Store
from backend.models.brain_qformer import QFormerConfig
from backend.models.device import Cancelled
from backend.models.prefix_decoder import PrefixConfig
from backend.stages.brain_captions import brain_captions, cached_brain_captions
from backend.stages.brain_qformer import cached_qformer_captions, qformer_captions
from backend.stages.brain_qformer import model_key as qformer_model_key
from tests.models_tiny import register_tiny, tiny_id

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
LM = tiny_id("causal-lm")
TINY = PrefixConfig(width=32, steps=3, batch_size=8, lr=1e-2, noise=0.1, seed=0, max_tokens=12, align_steps=10)
GEN = dict(max_new_tokens=4)


@pytest.fixture(scope="module")
def tiny_pool():
    """A CPU pool over the suite's cache, where the tiny Llama is a user model by local path (the
    running test backend reads the same registry)."""
    from backend.models.pool import ModelPool

    register_tiny("causal-lm")
    return ModelPool(budget_gb=4, device="cpu")


def test_brain_captions_trains_once_and_reads_back_from_the_store(human, tiny_pool, tmp_path):
    store = Store(tmp_path / "store.sqlite")
    steps: list[str] = []
    result = brain_captions(human, "reference", MINILM, store=store, pool=tiny_pool, language_model=LM, config=TINY,
                            report=lambda done, total, message: steps.append(message), **GEN)
    test = [int(i) for i in human.stimuli.indices("test")]
    assert sorted(int(k) for k in result["stimuli"]) == test
    assert any("training step 13 of 13, loss" in m for m in steps)
    assert result["training"]["cached"] is False and len(result["training"]["loss"]) == 13
    for part in ("brain", "ceiling"):
        m = result["metrics"][part]
        assert set(m) >= {"bleu1", "bleu4", "meteor", "rouge_l", "cider", "similarity"}
        assert all(np.isfinite(v) for k, v in m.items() if k != "identification")
    assert 0.0 <= result["metrics"]["ceiling"]["exact_match"] <= 1.0
    assert result["metrics"]["brain"]["identification"]["two_way"] >= 0
    loads = tiny_pool.loads[LM]
    # The whole result is cached: nothing loads, the same answer comes back.
    again = brain_captions(human, "reference", MINILM, store=store, pool=None, language_model=LM, config=TINY, **GEN)
    assert again == result and tiny_pool.loads[LM] == loads
    assert cached_brain_captions(human, "reference", MINILM, store, language_model=LM, config=TINY, **GEN) == result
    # Other generation settings reuse the trained decoder (no training) and write new captions.
    more = brain_captions(human, "reference", MINILM, store=store, pool=tiny_pool, language_model=LM, config=TINY,
                          max_new_tokens=5)
    assert more["training"]["cached"] is True and more["training"]["loss"] == result["training"]["loss"]
    assert cached_brain_captions(human, "reference", MINILM, store, language_model=LM, config=TINY, max_new_tokens=7) is None


def test_captions_alone_and_with_brain_predictions_are_different_decoders(human, tiny_pool, tmp_path):
    store = Store(tmp_path / "store.sqlite")
    alone = brain_captions(human, "reference", MINILM, store=store, pool=tiny_pool, language_model=LM, config=TINY,
                           inputs="captions", **GEN)
    both = brain_captions(human, "reference", MINILM, store=store, pool=tiny_pool, language_model=LM, config=TINY, **GEN)
    assert alone["inputs"] == "captions" and both["inputs"] == "captions+brain"
    assert both["training"]["cached"] is False  # not the captions-only decoder read back
    with pytest.raises(ValueError, match="inputs must be one of"):
        brain_captions(human, "reference", MINILM, store=store, pool=tiny_pool, language_model=LM, config=TINY, inputs="brain")


def test_a_model_of_another_kind_is_refused(human, tiny_pool, tmp_path):
    with pytest.raises(ValueError, match="is a text embedder, not a language model"):
        brain_captions(human, "reference", MINILM, store=Store(tmp_path / "s.sqlite"), pool=tiny_pool, language_model=MINILM)


def test_cancel_stops_training_and_stores_no_decoder(human, tiny_pool, tmp_path):
    store = Store(tmp_path / "store.sqlite")
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        brain_captions(human, "reference", MINILM, store=store, pool=tiny_pool, language_model=LM,
                       config=PrefixConfig(**{**TINY.to_dict(), "steps": 50}), cancel=cancel, **GEN)
    assert cached_brain_captions(human, "reference", MINILM, store, language_model=LM,
                                 config=PrefixConfig(**{**TINY.to_dict(), "steps": 50}), **GEN) is None


# -------------------------------------------------------------------------------------- API


def test_job_progress_result_and_reads(client, backend_services, tiny_pool):
    with pytest.raises(Exception, match="not a language model"):
        client.brain_captions_job("demo-human", language_model=MINILM)
    with pytest.raises(Exception, match="no brain captions"):
        client.brain_captions("demo-human", language_model=LM, steps=2, align_steps=10)
    job = client.brain_captions_job("demo-human", language_model=LM, steps=2, align_steps=10, max_new_tokens=4)
    deadline = time.monotonic() + 300
    while job["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
        job = client.job(job["id"])
    assert job["state"] == "done", job
    assert job["result"]["trained"] is True and "similarity" in job["result"]
    table = client.brain_captions("demo-human", language_model=LM, steps=2, align_steps=10, max_new_tokens=4)
    assert {"brain", "ceiling"} <= set(table["metrics"]) and "loss" not in table["training"]
    rows = client.brain_caption_rows("demo-human", language_model=LM, steps=2, align_steps=10, max_new_tokens=4, limit=5)
    assert len(rows) == 5 and all({"reference", "generated", "ceiling", "similarity"} <= set(r) for r in rows)
    one = client.brain_caption("demo-human", rows[0]["index"], language_model=LM, steps=2, align_steps=10, max_new_tokens=4)
    assert one["generated"] == rows[0]["generated"]
    brainhub = client.brain_captions_brainhub("demo-human", language_model=LM, steps=2, align_steps=10, max_new_tokens=4)
    test_rows = [int(i) for i in backend_services.dataset("demo-human").stimuli.indices("test")]
    assert list(brainhub) == [str(k) for k in range(len(test_rows))]
    assert brainhub[str(test_rows.index(rows[0]["index"]))] == rows[0]["generated"]
    train_row = int(backend_services.dataset("demo-human").stimuli.indices("train")[0])
    with pytest.raises(Exception, match="training stimulus"):
        client.brain_caption("demo-human", train_row, language_model=LM, steps=2, align_steps=10, max_new_tokens=4)


# ------------------------------------------------------------------------- the Brain Q-Former

QTINY = QFormerConfig(queries=2, dim=16, layers=1, heads=2, patch=4096, steps=3, batch_size=8, lr=1e-2, seed=0, max_tokens=12)


def test_qformer_trains_once_caches_and_cancel_leaves_nothing(human, tiny_pool, tmp_path):
    store = Store(tmp_path / "store.sqlite")
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        qformer_captions(human, "reference", MINILM, store=store, pool=tiny_pool, language_model=LM,
                         config=replace(QTINY, steps=50), cancel=cancel, **GEN)
    # Nothing half-written: no model, no result under the cancelled configuration.
    assert store.get(qformer_model_key(human, list(human.stimuli.captions), MINILM, LM, replace(QTINY, steps=50))) is None
    assert cached_qformer_captions(human, "reference", MINILM, store, language_model=LM, config=replace(QTINY, steps=50), **GEN) is None

    steps: list[str] = []
    result = qformer_captions(human, "reference", MINILM, store=store, pool=tiny_pool, language_model=LM, config=QTINY,
                              report=lambda done, total, message: steps.append(message), **GEN)
    test = [int(i) for i in human.stimuli.indices("test")]
    assert sorted(int(k) for k in result["stimuli"]) == test
    assert any("training step 3 of 3, loss" in m for m in steps)
    assert result["training"]["cached"] is False and result["training"]["brain_tokens"] >= 2
    m = result["metrics"]["qformer"]
    assert set(m) >= {"bleu1", "bleu4", "meteor", "rouge_l", "cider", "similarity"} and 0 <= m["identification"]["two_way"] <= 1
    assert cached_qformer_captions(human, "reference", MINILM, store, language_model=LM, config=QTINY, **GEN) == result
    # (the key checked after the cancel above is the one a finished training writes)
    assert store.get(qformer_model_key(human, list(human.stimuli.captions), MINILM, LM, QTINY)) is not None
    # Other generation settings: the trained model is read back (no training), captions are new.
    more = qformer_captions(human, "reference", MINILM, store=store, pool=tiny_pool, language_model=LM, config=QTINY,
                            max_new_tokens=5)
    assert more["training"]["cached"] is True and more["training"]["loss"] == result["training"]["loss"]


def test_qformer_job_and_read(client, tiny_pool):
    with pytest.raises(Exception, match="no Q-Former captions"):
        client.brain_qformer("demo-human", language_model=LM, steps=2)
    with pytest.raises(Exception, match="not a language model"):
        client.brain_qformer_job("demo-human", language_model=MINILM)
    job = client.brain_qformer_job("demo-human", language_model=LM, steps=2, max_new_tokens=4)
    deadline = time.monotonic() + 300
    while job["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
        job = client.job(job["id"])
    assert job["state"] == "done", job
    assert job["result"]["trained"] is True and 0 <= job["result"]["two_way"] <= 1
    table = client.brain_qformer("demo-human", language_model=LM, steps=2, max_new_tokens=4)
    assert "qformer" in table["metrics"] and "loss" not in table["training"] and len(table["stimuli"]) > 0


def test_reconstructions_list_the_image_of_the_generated_caption(client, backend_services, monkeypatch):
    """Once a brain-captions job with the default settings has a result, the stimulus's
    reconstructions listing (which the switch read reuses) has one more entry: the caption generated
    from the brain. The stage's read is replaced here by one result (nothing written to the shared
    store; training the real SmolLM2 decoder is the truth tests' business)."""
    import backend.stages.brain_captions as stage

    ds = backend_services.dataset("demo-human")
    test_row, train_row = int(ds.stimuli.indices("test")[0]), int(ds.stimuli.indices("train")[0])
    asked = []

    def cached(ds_, source, embedder, store, **settings):
        asked.append((source, embedder, settings))
        return {"stimuli": {str(test_row): {"generated": "a small dog on a beach"}}}

    monkeypatch.setattr(stage, "cached_brain_captions", cached)
    listing = {r["source"]: r for r in client.reconstructions("demo-human", test_row, "sim-scene-renderer")}
    assert asked[0][:2] == ("reference", MINILM) and asked[0][2] == {}  # the default settings
    assert listing["generated from the brain"]["caption"] == "a small dog on a beach"
    assert listing["generated from the brain"]["key"] not in {r["key"] for s, r in listing.items() if s != "generated from the brain"}
    assert "generated from the brain" not in {r["source"] for r in client.reconstructions("demo-human", train_row, "sim-scene-renderer")}


def test_clip_scores_join_the_metrics_where_a_clip_pair_is_present(human, tmp_path):
    """With a CLIP pair's weights here (the tiny one, as the only pair of a fresh model cache), the
    stage's brain and ceiling rows carry CLIP-S / RefCLIP-S equal to the CLIP stage's on the same
    captions; without one, they carry none and say so (clip_model None)."""
    from backend.models.pool import ModelPool
    from backend.stages.clip_scores import caption_clip_scores

    store = Store(tmp_path / "store.sqlite")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CORTEXTUAL_CACHE", str(tmp_path / "bare-cache"))
        register_tiny("causal-lm")
        pool = ModelPool(budget_gb=4, device="cpu")
        without = brain_captions(human, "reference", MINILM, store=store, pool=pool, language_model=LM, config=TINY, **GEN)
        assert without["clip_model"] is None and "clip_s" not in without["metrics"]["brain"]
        register_tiny("clip-text")
        register_tiny("clip-vision")
        result = brain_captions(human, "reference", MINILM, store=store, pool=pool, language_model=LM, config=TINY,
                                max_new_tokens=5)
        assert result["clip_model"] == tiny_id("clip-text")
        rows = sorted(int(r) for r in result["stimuli"])
        expected = caption_clip_scores(human, rows, {k: [result["stimuli"][str(r)][k] for r in rows] for k in ("generated", "ceiling")},
                                       store=store, pool=pool)
        for part, name in (("brain", "generated"), ("ceiling", "ceiling")):
            assert result["metrics"][part]["clip_s"] == pytest.approx(expected[name]["clip_s"], abs=1e-9)
            assert result["metrics"][part]["refclip_s"] == pytest.approx(expected[name]["refclip_s"], abs=1e-9)
