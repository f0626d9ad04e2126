"""The Brain Q-Former (backend/models/brain_qformer.py) with the tiny random-weight Llama as the
frozen LM: brain tokens, shapes, determinism, the loss falls, the soft-token alignment phase spells
the captions, masked-unit pretraining, cancel and serialisation (both prefixes). The stage (cache,
job) is tested in tests/test_brain_captions.py; what its captions say on the demo world, in
tests/test_brain_qformer_truth.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.models.brain_qformer import (
    BrainQFormer, QFormerConfig, alignment_steps, brain_groups, build_qformer, caption_slots, contrastive_loss, generate_qformer_captions,
    pretrain_encoder, qformer_from_bytes, qformer_to_bytes, train_qformer,
)
from backend.models.device import Cancelled
from tests.models_tiny import tiny_id, tiny_pool  # noqa: F401  (fixture)

TINY = QFormerConfig(queries=2, dim=16, layers=1, heads=2, patch=8, steps=30, batch_size=8, lr=1e-2, dropout=0.0, seed=0,
                     max_tokens=12, align_epochs=50, align_batch_size=8, align_lr=1e-2)
FREE = QFormerConfig(**{**TINY.to_dict(), "prefix": "free"})


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
    responses, groups, texts, embeddings = _pairs()
    # Free prefix: the queries themselves.
    model = BrainQFormer(groups, tiny_lm.hidden_size, embeddings.shape[1], FREE, tiny_lm.embedding_rms).eval()
    assert model.n_tokens == 4  # two regions of 10 units, patches of at most 8
    prefix, pooled = model(torch.from_numpy(responses[:5]))
    assert prefix.shape == (5, FREE.queries, tiny_lm.hidden_size) and pooled.shape == (5, 6)
    torch.testing.assert_close(pooled.norm(dim=-1), torch.ones(5))
    assert model.tokens(torch.from_numpy(responses[:3])).shape == (3, 4, TINY.dim)
    # Soft tokens: one query per word slot of the longest caption, inside the "Repeat:" prompt,
    # each slot exactly one of the LM's own embeddings of a caption token.
    model, targets = build_qformer(tiny_lm, groups, embeddings.shape[1], texts, TINY)
    model.eval()
    vocab, again = caption_slots(tiny_lm, texts, TINY.max_tokens)
    assert torch.equal(targets, again) and model.vocab == vocab and targets.shape == (len(texts), model.queries.shape[0])
    logits, pooled = model.logits(torch.from_numpy(responses[:5]))
    assert logits.shape == (5, targets.shape[1], len(vocab)) and pooled.shape == (5, 6)
    prefix, _ = model(torch.from_numpy(responses[:5]))
    extra = len(model.before) + len(model.after)
    assert prefix.shape == (5, targets.shape[1] + extra, tiny_lm.hidden_size)
    table = tiny_lm.model.get_input_embeddings().weight.detach().float()
    slots = prefix[:, len(model.before): len(model.before) + targets.shape[1]]
    torch.testing.assert_close(slots, table[torch.tensor(vocab)[logits.argmax(-1)]])
    with pytest.raises(ValueError, match="prefix must be one of"):
        build_qformer(tiny_lm, groups, 6, texts, QFormerConfig(prefix="words"))


def test_contrastive_loss_prefers_matching_pairs():
    e = torch.nn.functional.normalize(torch.randn(6, 5), dim=-1)
    assert contrastive_loss(e, e, 0.1) < contrastive_loss(e, e.roll(1, 0), 0.1)


def test_alignment_phase_spells_the_captions_without_the_lm(tiny_lm):
    """The soft-token alignment (cross-entropy of the slots against the caption's tokens plus the
    contrastive loss, no LM pass) alone makes the slots spell each response's caption."""
    responses, groups, texts, embeddings = _pairs()
    reports = []
    config = QFormerConfig(**{**TINY.to_dict(), "steps": 0})
    model, history = train_qformer(tiny_lm, responses, groups, texts, embeddings, config,
                                   report=lambda *a: reports.append(a))
    assert len(history["align_loss"]) == alignment_steps(TINY, len(texts)) == 150 and history["loss"] == []  # 50 x 24 / 8
    assert [r[:3] for r in reports if r[0] == "align"][-1] == ("align", 150, 150)
    assert np.mean(history["align_loss"][-5:]) < 0.3 * np.mean(history["align_loss"][:5]), history["align_loss"]
    decode = tiny_lm.tokenizer.decode
    drafts = model.draft(torch.from_numpy(responses[:8]), decode)
    vocab, targets = caption_slots(tiny_lm, texts, TINY.max_tokens)  # (captions cut at max_tokens)
    assert drafts == [" ".join(decode([vocab[i] for i in row]).split()) for row in targets[:8].tolist()]
    assert drafts[:2] == ["a dog on the beach", "a red car in the stree"]
    # A free prefix has no alignment phase.
    _, history = train_qformer(tiny_lm, responses, groups, texts, embeddings, QFormerConfig(**{**FREE.to_dict(), "steps": 1}))
    assert history["align_loss"] == [] and len(history["loss"]) == 1


@pytest.mark.parametrize("config", [TINY, FREE], ids=["soft-tokens", "free"])
def test_training_lowers_the_loss_and_is_deterministic(tiny_lm, config):
    responses, groups, texts, embeddings = _pairs()
    steps = []
    model, history = train_qformer(tiny_lm, responses, groups, texts, embeddings, config, report=lambda *a: steps.append(a))
    assert len(history["loss"]) == config.steps and steps[-1][:3] == ("lm", config.steps, config.steps)
    assert np.mean(history["lm_loss"][-5:]) < np.mean(history["lm_loss"][:5]) - 0.5, history["lm_loss"]
    if config.prefix == "free":  # (soft tokens: the contrastive loss is already low after alignment)
        assert np.mean(history["contrastive_loss"][-5:]) < np.mean(history["contrastive_loss"][:5]), history["contrastive_loss"]
    again, history2 = train_qformer(tiny_lm, responses, groups, texts, embeddings, config)
    assert history2["loss"] == history["loss"] and history2["align_loss"] == history["align_loss"]
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    out = generate_qformer_captions(tiny_lm, model, responses[:4], max_new_tokens=5)
    assert len(out) == 4 and out == generate_qformer_captions(tiny_lm, again, responses[:4], max_new_tokens=5, batch_size=1)


def test_masked_unit_pretraining_lowers_the_reconstruction_error(tiny_lm):
    responses, groups, texts, embeddings = _pairs(n=64)
    model = BrainQFormer(groups, tiny_lm.hidden_size, embeddings.shape[1], FREE, 1.0)
    model.mean.copy_(torch.from_numpy(responses.mean(0)))
    model.std.copy_(torch.from_numpy(responses.std(0)))
    losses = pretrain_encoder(model, responses, 60, batch_size=16, lr=1e-2, mask_ratio=0.3)
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10]), losses
    # Through train_qformer: the pretraining runs first and its losses are reported.
    config = QFormerConfig(**{**TINY.to_dict(), "steps": 2, "pretrain_steps": 5, "align_epochs": 1})
    reports = []
    _, history = train_qformer(tiny_lm, responses, groups, texts, embeddings, config, report=lambda *a: reports.append(a))
    assert len(history["pretrain_loss"]) == 5 and len(history["align_loss"]) == 8 and len(history["loss"]) == 2  # 64 / 8
    assert [r[0] for r in reports] == ["pretrain"] * 5 + ["lm"] * 2  # alignment reports every 10th step


def test_cancel_and_bad_inputs(tiny_lm):
    responses, groups, texts, embeddings = _pairs()
    for config, where in ((TINY, "alignment step 3 of 150"), (FREE, "at step 3 of 30")):
        calls = []

        def cancel() -> bool:
            calls.append(1)
            return len(calls) > 3

        with pytest.raises(Cancelled, match=where):
            train_qformer(tiny_lm, responses, groups, texts, embeddings, config, cancel=cancel)
    with pytest.raises(ValueError, match="expected responses"):
        train_qformer(tiny_lm, responses[:3], groups, texts, embeddings, TINY)
    with pytest.raises(ValueError, match="one brain token per unit"):
        train_qformer(tiny_lm, responses, groups[:5], texts, embeddings, TINY)


@pytest.mark.parametrize("config", [TINY, FREE], ids=["soft-tokens", "free"])
def test_serialisation_round_trip(tiny_lm, config):
    responses, groups, texts, embeddings = _pairs()
    model, _ = train_qformer(tiny_lm, responses, groups, texts, embeddings,
                             QFormerConfig(**{**config.to_dict(), "steps": 3, "align_epochs": 2}))
    back, extra = qformer_from_bytes(qformer_to_bytes(model, {"seconds": 1.5}))
    assert extra == {"seconds": 1.5} and back.config == model.config and back.vocab == model.vocab
    x = torch.from_numpy(responses[:3])
    with torch.inference_mode():
        for a, b in zip(model(x), back(x), strict=True):
            torch.testing.assert_close(a, b)
    assert generate_qformer_captions(tiny_lm, back, responses[:2], max_new_tokens=4) == \
        generate_qformer_captions(tiny_lm, model, responses[:2], max_new_tokens=4)
