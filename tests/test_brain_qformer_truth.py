"""Truth on the demo world (issue 9, item 7c), with the real SmolLM2-135M-Instruct and MiniLM: the
Brain Q-Former's captions identify the test stimulus well above chance.

The app's default Q-Former (QFormerConfig(): soft-token prefix, alignment without the LM, then a
few LM steps), trained on 1,000 demo-world stimuli and scored on the 60 test stimuli through
qformer_captions, as a user gets it. 2-way identification: for each pair of test stimuli, is the
MiniLM embedding of the caption generated from stimulus i closer to the reference caption of i than
to that of j (chance 0.5)?

Measured with the default configuration (400 alignment steps without the LM, then 10 LM steps;
2 CPU cores shared with other work at load ~6, so times are inflated ~3x against an idle machine):

| seed | 2-way | top-1 | similarity | BLEU-4 | CIDEr-D | METEOR | ROUGE-L | training |
|---|---|---|---|---|---|---|---|---|
| 0 (default) | 0.759 | 0.133 | 0.413 | 0.150 | 0.605 | 0.182 | 0.482 | 370 s |
| 1 | 0.745 | 0.150 | 0.402 | 0.145 | 0.500 | 0.183 | 0.478 | 371 s |

This module itself (seed 0 again, at load ~5): 2-way 0.769, top-1 0.133, similarity 0.410, BLEU-4
0.148, CIDEr-D 0.590 (the alignment's losses are identical, the LM steps' differ a little from run
to run); 397 s wall, of which training 175 s (alignment 89 s) and ~90 s making/loading the world
and converting the GGUF; on an idle machine about half that. Seed 0 with 1 LM step: 2-way 0.766;
with 20 alignment epochs (625 steps): 0.738 (similarity 0.432, CIDEr-D 0.781). The free 8-vector
prefix this replaced: 2-way 0.574, similarity 0.285.
Issue 9 asks for "well above chance"; the brief's aim was 0.75, which the default meets on seed 0
and misses by 0.005 on seed 1. The threshold below sits ~3 standard errors of a 60-stimulus 2-way
under the lowest figure measured (0.738), so it fails on a regression, not on the spread.
"""

from __future__ import annotations

import time

import pytest

from backend.cache import Store
from backend.models.brain_qformer import QFormerConfig
from backend.stages.brain_qformer import qformer_captions
from tests.demo_worlds import truth_human

pytestmark = pytest.mark.slow

THRESHOLD = 0.68  # 2-way; measured 0.738-0.769 (chance 0.5)
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
SMOLLM = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    from backend.models.pool import ModelPool

    ds = truth_human(n_test=60)
    store = Store(tmp_path_factory.mktemp("qformer-truth") / "store.sqlite")
    pool = ModelPool(budget_gb=4, device="cpu")
    t0 = time.perf_counter()
    out = qformer_captions(ds, "reference", MINILM, store=store, pool=pool, language_model=SMOLLM, config=QFormerConfig())
    print("seconds", round(time.perf_counter() - t0, 1), "training",
          {k: v for k, v in out["training"].items() if k != "loss"})
    return out


def test_qformer_captions_identify_the_test_stimuli(result):
    m = result["metrics"]["qformer"]
    print("qformer", {k: (round(v, 3) if isinstance(v, float) else v) for k, v in m.items()})
    for row, s in list(result["stimuli"].items())[:5]:
        print(row, s)
    assert len(result["stimuli"]) == 60
    assert m["identification"]["two_way"] >= THRESHOLD, m  # chance 0.5
    assert m["similarity"] >= 0.35, m  # measured 0.40-0.43
    assert not result["training"]["cached"] and result["training"]["prefix"] == "soft-tokens"
