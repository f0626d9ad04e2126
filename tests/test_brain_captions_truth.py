"""Truth on the demo world (issue 9, item 7), with the real SmolLM2-135M-Instruct and MiniLM.

What the app's default prefix decoder reaches here (seed 0; 1,000 training / 60 test stimuli; the
same figures at load 1 and load 12, 2 BLAS threads; module 6 min wall at load 1: retrieval 5 s,
prefix decoder 203 s of which 159 s training):
- fed the TRUE caption embeddings of held-out stimuli (its ceiling): sentence similarity 0.806,
  exact match 21.7%, CIDEr-D 5.22, BLEU-4 0.503;
- fed brain predictions: sentence similarity 0.450 (retrieval 0.493), CIDEr-D 1.012 (retrieval
  0.902), 2-way identification 0.866.
Issue 9 asks for 0.85 (a) and for at least retrieval's similarity and CIDEr-D (b): neither is met
yet (0.806; similarity 0.91 of retrieval's). The tests below hold the decoder to what it does reach,
with room for other machines, and fail on a regression; the issue stays open for the rest. The
Brain Q-Former (60 steps: similarity 0.285, 2-way 0.574, 126 s) is not asserted here: 2-way that
close to chance is within the spread of 60 stimuli; its unit tests are in test_brain_captions_qformer.py.
"""

from __future__ import annotations

import time

import pytest

from backend.cache import Store
from backend.models.prefix_decoder import PrefixConfig
from backend.stages.brain_captions import brain_captions, caption_scores
from backend.stages.decoding import decode_captions

pytestmark = pytest.mark.slow

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
SMOLLM = "HuggingFaceTB/SmolLM2-135M-Instruct"
PREFIX = PrefixConfig()  # the app's default: what users get


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(dataset, {"retrieval", "prefix"} results); prints the seconds of each."""
    from backend.data.demo.world import ensure_demo_world
    from backend.data.folder import load_folder
    from backend.models.pool import ModelPool

    folders = ensure_demo_world(n_train=1000, n_test=60)
    ds = load_folder(folders["demo-human"], "demo-human")
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
    assert ceiling["similarity"] >= 0.75, ceiling  # 0.806 measured; issue 9 asks 0.85 (not met)
    assert ceiling["exact_match"] >= 0.1, ceiling  # 0.217 measured


def test_b_captions_from_the_brain_near_retrieval(world):
    ds, results = world
    brain = results["prefix"]["metrics"]["brain"]
    retrieval = _retrieval_scores(ds, results)
    print("brain", {k: v for k, v in brain.items()}, "retrieval", retrieval)
    # measured: similarity 0.450 vs 0.493 (issue 9 asks >=: not met), CIDEr-D 1.012 vs 0.902
    assert brain["similarity"] >= 0.85 * retrieval["similarity"], (brain, retrieval)
    assert brain["cider"] >= 0.9 * retrieval["cider"], (brain, retrieval)
    assert brain["identification"]["two_way"] >= 0.75, brain  # 0.866 measured; chance 0.5
