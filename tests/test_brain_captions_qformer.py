"""The Brain Q-Former (backend/models/brain_qformer.py) with the tiny random-weight Llama as the
frozen LM: brain tokens, shapes, determinism, the loss falls, masked-unit pretraining, cancel and
serialisation. The stage (cache, job) is tested in tests/test_brain_captions.py; what its captions
say on the demo world, in tests/test_brain_captions_truth.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.models.brain_qformer import (
    BrainQFormer, QFormerConfig, brain_groups, contrastive_loss, generate_qformer_captions, pretrain_encoder,
    qformer_from_bytes, qformer_to_bytes, train_qformer,
)
from backend.models.device import Cancelled
from tests.models_tiny import tiny_id, tiny_pool  # noqa: F401  (fixture)

TINY = QFormerConfig(queries=2, dim=16, layers=1, heads=2, patch=8, steps=30, batch_size=8, lr=1e-2, dropout=0.0, seed=0,
                     max_tokens=12)


@pytest.fixture(scope="module")
def tiny_lm(tiny_pool):
    return tiny_pool.get(tiny_id("causal-lm"))


def _pairs(n: int = 24, units: int = 20, seed: int = 0):
    """(responses [n, U], groups [U], captions, caption embeddings [n, 6]): 4 captions, each with
    its own response pattern plus noise."""
    rng = np.random.default_rng(seed)
    captions = ["a dog on the beach", "a red car in the street", "a small tree", "the cat under the sky"]
    labels = np.arange(n) % 4
    patterns = rng.normal(size=(4, units)).astype(np.float32)
    responses = patterns[labels] + 0.1 * rng.normal(size=(n, units)).astype(np.float32)
    embeddings = rng.normal(size=(4, 6)).astype(np.float32)[labels]
    groups = brain_groups(np.repeat([0, 1], units // 2), patch=8)
    return responses, groups, [captions[k] for k in labels], embeddings


def test_brain_groups_split_regions_into_patches():
    labels = np.array([2, 2, 2, 0, 0, 2, 2, 1])
    groups = brain_groups(labels, patch=2)
    # label 0: one token of 2 units; label 1: one token; label 2 (5 units): three patches of <= 2
    assert groups.tolist() == [2, 2, 3, 0, 0, 3, 4, 1]
    assert np.bincount(groups).max() <= 2
    with pytest.raises(ValueError, match="patch >= 1"):
        brain_groups(labels, patch=0)


def test_shapes_and_pooled_unit_length(tiny_lm):
    responses, groups, _, embeddings = _pairs()
    model = BrainQFormer(groups, tiny_lm.hidden_size, embeddings.shape[1], TINY, tiny_lm.embedding_rms).eval()
    assert model.n_tokens == 4  # two regions of 10 units, patches of at most 8
    prefix, pooled = model(torch.from_numpy(responses[:5]))
    assert prefix.shape == (5, TINY.queries, tiny_lm.hidden_size) and pooled.shape == (5, 6)
    torch.testing.assert_close(pooled.norm(dim=-1), torch.ones(5))
    assert model.tokens(torch.from_numpy(responses[:3])).shape == (3, 4, TINY.dim)


def test_contrastive_loss_prefers_matching_pairs():
    e = torch.nn.functional.normalize(torch.randn(6, 5), dim=-1)
    assert contrastive_loss(e, e, 0.1) < contrastive_loss(e, e.roll(1, 0), 0.1)


def test_training_lowers_the_loss_and_is_deterministic(tiny_lm):
    responses, groups, texts, embeddings = _pairs()
    steps = []
    model, history = train_qformer(tiny_lm, responses, groups, texts, embeddings, TINY, report=lambda *a: steps.append(a))
    assert len(history["loss"]) == TINY.steps and steps[-1][:2] == (TINY.steps, TINY.steps)
    assert np.mean(history["lm_loss"][-5:]) < np.mean(history["lm_loss"][:5]) - 0.5, history["lm_loss"]
    assert np.mean(history["contrastive_loss"][-5:]) < np.mean(history["contrastive_loss"][:5]), history["contrastive_loss"]
    again, history2 = train_qformer(tiny_lm, responses, groups, texts, embeddings, TINY)
    assert history2["loss"] == history["loss"]
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    out = generate_qformer_captions(tiny_lm, model, responses[:4], max_new_tokens=5)
    assert len(out) == 4 and out == generate_qformer_captions(tiny_lm, again, responses[:4], max_new_tokens=5, batch_size=1)


def test_masked_unit_pretraining_lowers_the_reconstruction_error(tiny_lm):
    responses, groups, texts, embeddings = _pairs(n=64)
    model = BrainQFormer(groups, tiny_lm.hidden_size, embeddings.shape[1], TINY, 1.0)
    model.mean.copy_(torch.from_numpy(responses.mean(0)))
    model.std.copy_(torch.from_numpy(responses.std(0)))
    losses = pretrain_encoder(model, responses, 60, batch_size=16, lr=1e-2, mask_ratio=0.3)
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10]), losses
    # Through train_qformer: the pretraining runs first and its losses are reported.
    config = QFormerConfig(**{**TINY.to_dict(), "steps": 2, "pretrain_steps": 5})
    _, history = train_qformer(tiny_lm, responses, groups, texts, embeddings, config)
    assert len(history["pretrain_loss"]) == 5 and len(history["loss"]) == 2


def test_cancel_and_bad_inputs(tiny_lm):
    responses, groups, texts, embeddings = _pairs()
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Cancelled, match="step 3 of 30"):
        train_qformer(tiny_lm, responses, groups, texts, embeddings, TINY, cancel=cancel)
    with pytest.raises(ValueError, match="expected responses"):
        train_qformer(tiny_lm, responses[:3], groups, texts, embeddings, TINY)
    with pytest.raises(ValueError, match="one brain token per unit"):
        train_qformer(tiny_lm, responses, groups[:5], texts, embeddings, TINY)


def test_serialisation_round_trip(tiny_lm):
    responses, groups, texts, embeddings = _pairs()
    model, _ = train_qformer(tiny_lm, responses, groups, texts, embeddings, QFormerConfig(**{**TINY.to_dict(), "steps": 3}))
    back, extra = qformer_from_bytes(qformer_to_bytes(model, {"seconds": 1.5}))
    assert extra == {"seconds": 1.5} and back.config == model.config
    x = torch.from_numpy(responses[:3])
    with torch.inference_mode():
        for a, b in zip(model(x), back(x), strict=True):
            torch.testing.assert_close(a, b)
