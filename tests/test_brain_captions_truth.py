"""Truth on the demo world (issue 9, item 7), with the real SmolLM2-135M-Instruct and MiniLM:

(a) the prefix decoder fed the TRUE caption embeddings of held-out test stimuli writes captions
    with mean sentence similarity >= 0.85 to the reference (exact-match rate printed);
(b) captions generated from the brain reach at least retrieval's sentence similarity and CIDEr-D
    on the same test stimuli;
(c) the Brain Q-Former's captions identify the test stimuli well above chance (2-way, through the
    embedding of the generated caption against the reference captions' embeddings).

One demo world (1,000 training stimuli, as the default world; 60 test stimuli to keep generation
short), one store and one training of each decoder for the whole module. Slow: minutes on 2 cores.
"""

from __future__ import annotations

import time

import pytest

from backend.cache import Store
from backend.models.brain_qformer import QFormerConfig
from backend.models.prefix_decoder import PrefixConfig
from backend.stages.brain_captions import brain_captions, caption_scores
from backend.stages.brain_qformer import qformer_captions
from backend.stages.decoding import decode_captions

pytestmark = pytest.mark.slow

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
SMOLLM = "HuggingFaceTB/SmolLM2-135M-Instruct"
PREFIX = PrefixConfig()  # the app's default: what users get
QFORMER = QFormerConfig(steps=60)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(dataset, store, pool, {"retrieval", "prefix", "qformer"} results, seconds of each)."""
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
        ("qformer", lambda: qformer_captions(ds, "reference", MINILM, store=store, pool=pool, language_model=SMOLLM, config=QFORMER)),
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
    assert ceiling["similarity"] >= 0.85, ceiling


def test_b_captions_from_the_brain_reach_retrieval(world):
    ds, results = world
    brain = results["prefix"]["metrics"]["brain"]
    retrieval = _retrieval_scores(ds, results)
    print("brain", {k: v for k, v in brain.items()}, "retrieval", retrieval)
    assert brain["similarity"] >= retrieval["similarity"], (brain, retrieval)
    assert brain["cider"] >= retrieval["cider"], (brain, retrieval)


def test_c_qformer_captions_identify_the_stimuli(world):
    _, results = world
    q = results["qformer"]["metrics"]["qformer"]
    print("qformer", q, "training", results["qformer"]["training"].get("seconds"))
    assert q["identification"]["two_way"] > 0.6, q
