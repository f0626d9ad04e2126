"""Truth on the demo world (issue 9, item 7), with the real SmolLM2-135M-Instruct and MiniLM.

What the app's default prefix decoder reaches here (seed 0; 1,000 training / 60 test stimuli; GRU
soft-token mapper, 600 alignment + 40 LM steps, best of 8 wordings by similarity to the input):
- fed the TRUE caption embeddings of held-out stimuli (its ceiling): sentence similarity 0.933,
  exact match 46.7%, CIDEr-D 6.87, BLEU-4 0.660 (issue 9 asks >= 0.85);
- fed brain predictions: sentence similarity 0.541 (retrieval 0.493), CIDEr-D 1.758 (retrieval
  0.902), BLEU-4 0.281 (0.214), 2-way identification 0.905 (issue 9 asks >= retrieval's
  similarity and CIDEr-D).
Without choosing among wordings (the GRU's most likely one) brain similarity was 0.494, level with
retrieval; the per-position MLP before the GRU reached 0.806 / 0.450. Seed spread: see README.
Module time under load 5-6 from other training on 2 cores: 1,346 s, of which training 1,116 s;
idle it is a few minutes. The Brain Q-Former has its own truth module (test_brain_qformer_truth.py).
"""

from __future__ import annotations

import time

import pytest

from backend.cache import Store
from backend.models.prefix_decoder import PrefixConfig
from backend.stages.brain_captions import brain_captions, caption_scores
from backend.stages.decoding import decode_captions
from tests.demo_worlds import truth_human

pytestmark = pytest.mark.slow

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
SMOLLM = "HuggingFaceTB/SmolLM2-135M-Instruct"
PREFIX = PrefixConfig()  # the app's default: what users get


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(dataset, {"retrieval", "prefix"} results); prints the seconds of each."""
    from backend.models.pool import ModelPool

    ds = truth_human(n_test=60)
    store = Store(tmp_path_factory.mktemp("truth") / "store.sqlite")
    pool = ModelPool(budget_gb=4, device="cpu")
    seconds, results = {}, {}
    for name, run in (
        ("retrieval", lambda: decode_captions(ds, "reference", MINILM, store=store, pool=pool)),
        ("prefix", lambda: brain_captions(ds, "reference", MINILM, store=store, pool=pool, language_model=SMOLLM, config=PREFIX)),
    ):
        t0 = time.perf_counter()
        results[name] = run()
        seconds[name] = round(time.perf_counter() - t0, 1)
    print("seconds", seconds)
    return ds, results


def _retrieval_scores(ds, results) -> dict:
    rows = sorted(int(r) for r in results["prefix"]["stimuli"])
    texts = [results["retrieval"]["stimuli"][str(r)]["caption"] for r in rows]
    sims = [results["retrieval"]["stimuli"][str(r)]["similarity"] for r in rows]
    return {**caption_scores(texts, [[ds.stimuli.captions[r]] for r in rows]), "similarity": sum(sims) / len(sims)}


def test_a_the_decoder_fed_true_embeddings_writes_the_caption(world):
    _, results = world
    ceiling = results["prefix"]["metrics"]["ceiling"]
    print("ceiling", {k: round(v, 3) for k, v in ceiling.items()}, "training", results["prefix"]["training"].get("seconds"))
    assert ceiling["similarity"] >= 0.85, ceiling  # issue 9's figure; 0.933 measured
    assert ceiling["exact_match"] >= 0.25, ceiling  # 0.467 measured


def test_b_captions_from_the_brain_match_or_beat_retrieval(world):
    ds, results = world
    brain = results["prefix"]["metrics"]["brain"]
    retrieval = _retrieval_scores(ds, results)
    print("brain", {k: v for k, v in brain.items()}, "retrieval", retrieval)
    # issue 9's claim, as it stands: measured similarity 0.541 vs 0.493, CIDEr-D 1.758 vs 0.902
    assert brain["similarity"] >= retrieval["similarity"], (brain, retrieval)
    assert brain["cider"] >= retrieval["cider"], (brain, retrieval)
    assert brain["identification"]["two_way"] >= 0.8, brain  # 0.905 measured; chance 0.5
