"""The embedding-prefix decoder (ClipCap-style): a text-embedding vector -> k soft-prefix vectors
of a frozen language model, which then writes the caption.

    vector [d] --centre, unit length--> MLP d -> width -> k*hidden --RMS norm, learned gain-->
    prefix [k, hidden] -> frozen LM -> caption tokens

Trained with the LM's teacher-forced loss on (vector, caption) pairs; only the MLP learns. Each
input is centred on the training inputs' mean and scaled to unit length before the MLP, so a
ridge prediction of an embedding (shrunk toward the mean, so much shorter than a true embedding)
and the true embedding it estimates land in the same range; Gaussian noise on the unit vector
during training (``noise``: the expected length of the noise vector) makes the decoder tolerant
of the error left in a prediction's direction.

Two mappers (``PrefixConfig.mapper``):

- ``"mlp"`` (ClipCap): the MLP above, k free prefix vectors, trained with the LM loss only.
- ``"soft-tokens"`` (default): the prefix is a prompt the LM already knows how to follow,

      "Repeat:" + [k soft tokens] + "\nRepeat:"     (fixed words as learnable vectors)

  where each slot holds one of the LM's own input embeddings of the tokens that occur in the
  training captions (k = the longest training caption in tokens): its most likely one, with the
  gradient of the softmax-weighted mean in training (straight-through). An MLP reads
  the (centred, unit, noisy) vector and gives each of the k slots its logits over those tokens.
  Training has two phases: (1) *alignment*, ``align_steps`` steps of cross-entropy between the
  slot logits and the caption's tokens in order (padded with newlines) -- no LM pass, so it costs
  milliseconds a step; (2) ``steps`` steps of the LM's teacher-forced loss through the whole
  prefix (plus the alignment loss), so the frozen LM learns nothing but is asked, in its own
  vocabulary, to write the caption that the soft tokens spell, and to end it. Measured on the
  demo world, this reaches in minutes what the free MLP prefix does not reach in an hour of CPU:
  the costly LM passes are spent on ending and polishing, not on discovering the LM's input space.

Arrays in, modules out: this file knows nothing of datasets or ridge fits (those are the stage's,
backend/stages/brain_captions.py).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from backend.models.device import Cancelled, run_batched
from backend.models.language_models import LanguageModel

#: Bumped whenever training or the network changes, so cached decoders are never read stale.
VERSION = 2

StepReport = Callable[[int, int, float], None]  # (step, steps, loss in nats per token)
MAPPERS = ("soft-tokens", "mlp")


@dataclass(frozen=True)
class PrefixConfig:
    """How a prefix decoder is built and trained (every field is part of its cache key)."""

    prefix_length: int = 8  # k soft-prefix vectors ("mlp"; "soft-tokens" uses the longest caption)
    width: int = 1024  # the MLP's hidden width
    steps: int = 40  # steps through the LM
    batch_size: int = 16
    lr: float = 1e-3  # AdamW, cosine decay to a tenth, 10 warm-up steps
    noise: float = 0.3  # expected length of the Gaussian noise added to each unit input vector
    seed: int = 0
    max_tokens: int = 40  # caption tokens taught (the rest is cut)
    mapper: str = "soft-tokens"  # or "mlp"
    align_steps: int = 600  # "soft-tokens": alignment steps (no LM pass)
    align_batch_size: int = 64
    align_lr: float = 3e-3

    def to_dict(self) -> dict:
        return asdict(self)


class PrefixMapper(nn.Module):
    """vector float ``[b, d]`` -> prefix float ``[b, k, hidden]`` (see the module docstring)."""

    def __init__(self, in_dim: int, hidden: int, prefix_length: int, width: int, scale: float):
        super().__init__()
        self.in_dim, self.hidden, self.prefix_length, self.width = in_dim, hidden, prefix_length, width
        self.register_buffer("centre", torch.zeros(in_dim))
        self.net = nn.Sequential(nn.Linear(in_dim, width), nn.GELU(), nn.Linear(width, prefix_length * hidden))
        # Start at the scale of the LM's own token embeddings: a prefix far off that scale
        # dominates (or vanishes in) the first layer's residual stream.
        self.gain = nn.Parameter(torch.full((hidden,), float(scale)))

    def unit_inputs(self, vectors: torch.Tensor) -> torch.Tensor:
        """Centred and scaled to unit length, float ``[b, d]``."""
        x = vectors.float() - self.centre
        return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-8)

    def forward(self, vectors: torch.Tensor, noise: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
        x = self.unit_inputs(vectors)
        if noise > 0:
            x = x + torch.randn(x.shape, generator=generator, device=x.device) * (noise / math.sqrt(x.shape[-1]))
        raw = self.net(x).view(-1, self.prefix_length, self.hidden)
        return nn.functional.rms_norm(raw, (self.hidden,)) * self.gain

    def describe(self) -> dict:
        return {"in_dim": self.in_dim, "hidden": self.hidden, "prefix_length": self.prefix_length, "width": self.width}


class SoftTokenMapper(nn.Module):
    """vector float ``[b, d]`` -> prefix float ``[b, a + k + c, hidden]``: ``a`` fixed-word vectors,
    k soft tokens (each a softmax-weighted mean of ``vocab_embeddings`` rows), ``c`` fixed-word
    vectors (see the module docstring). :meth:`logits` gives the slots' logits ``[b, k, V]``."""

    RANK = 256  # the slots' width before the projection into the LM's embedding space

    def __init__(self, in_dim: int, vocab: Sequence[int], vocab_embeddings: torch.Tensor, before: torch.Tensor,
                 after: torch.Tensor, slots: int, width: int):
        super().__init__()
        self.in_dim, self.slots, self.width = in_dim, slots, width
        self.vocab = [int(v) for v in vocab]
        self.hidden = int(vocab_embeddings.shape[1])
        self.register_buffer("centre", torch.zeros(in_dim))
        self.register_buffer("vocab_embeddings", vocab_embeddings.detach().float().clone())
        self.net = nn.Sequential(nn.Linear(in_dim, width), nn.GELU(), nn.Linear(width, slots * self.RANK))
        self.up = nn.Linear(self.RANK, self.hidden)
        self.scale = nn.Parameter(torch.tensor(10.0))  # inverse temperature of the cosine logits
        self.before = nn.Parameter(before.detach().float().clone())
        self.after = nn.Parameter(after.detach().float().clone())

    def unit_inputs(self, vectors: torch.Tensor) -> torch.Tensor:
        x = vectors.float() - self.centre
        return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-8)

    def logits(self, vectors: torch.Tensor, noise: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """float ``[b, k, V]``: each slot's cosine logits over the caption vocabulary."""
        x = self.unit_inputs(vectors)
        if noise > 0:
            x = x + torch.randn(x.shape, generator=generator, device=x.device) * (noise / math.sqrt(x.shape[-1]))
        h = nn.functional.normalize(self.up(self.net(x).view(-1, self.slots, self.RANK)), dim=-1)
        return self.scale * h @ nn.functional.normalize(self.vocab_embeddings, dim=-1).T

    def prefix(self, logits: torch.Tensor) -> torch.Tensor:
        """The prompt around the slots' tokens. Each slot is its most likely token's embedding
        (the LM reads real words: blends of embeddings make it loop); in training the gradient
        flows through the softmax-weighted mean instead (straight-through)."""
        b = len(logits)
        weights = logits.softmax(-1)
        hard = nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(weights.dtype)
        if torch.is_grad_enabled() and logits.requires_grad:
            hard = hard + weights - weights.detach()
        tokens = hard @ self.vocab_embeddings
        return torch.cat([self.before.expand(b, -1, -1), tokens, self.after.expand(b, -1, -1)], dim=1)

    def forward(self, vectors: torch.Tensor, noise: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.prefix(self.logits(vectors, noise, generator))

    def draft(self, vectors: torch.Tensor, decode: Callable[[list[int]], str]) -> list[str]:
        """The words the soft tokens spell (each slot's most likely token), for inspection."""
        with torch.inference_mode():
            best = self.logits(vectors).argmax(-1).tolist()
        return [" ".join(decode([self.vocab[i] for i in row]).split()) for row in best]

    def describe(self) -> dict:
        return {"kind": "soft-tokens", "in_dim": self.in_dim, "slots": self.slots, "width": self.width,
                "vocab": self.vocab, "hidden": self.hidden, "before": int(self.before.shape[0]), "after": int(self.after.shape[0])}


#: The prompt around the soft tokens: the LM repeats what follows "Repeat:" (it does, frozen).
PROMPT_BEFORE, PROMPT_AFTER = "Repeat:", "\nRepeat:"


def _soft_token_targets(lm: LanguageModel, texts: Sequence[str], max_tokens: int) -> tuple[list[int], torch.Tensor, int]:
    """(vocabulary token ids, targets int64 ``[n, k]`` as positions in that vocabulary, newline id):
    each caption's tokens as they read after "Repeat:" (with a leading space), padded with newlines."""
    tok = lm.tokenizer
    newline = tok("\n", add_special_tokens=False).input_ids[-1]
    rows = [tok(" " + t.strip(), add_special_tokens=False).input_ids[: max_tokens - 1] for t in texts]
    vocab = sorted({t for r in rows for t in r} | {newline})
    where = {t: i for i, t in enumerate(vocab)}
    slots = max(len(r) for r in rows)
    targets = torch.full((len(rows), slots), where[newline], dtype=torch.long)
    for i, r in enumerate(rows):
        targets[i, : len(r)] = torch.tensor([where[t] for t in r], dtype=torch.long)
    return vocab, targets, newline


def _build_soft_token_mapper(lm: LanguageModel, in_dim: int, texts: Sequence[str], config: "PrefixConfig") -> tuple[SoftTokenMapper, torch.Tensor]:
    vocab, targets, _ = _soft_token_targets(lm, texts, config.max_tokens)
    table = lm.model.get_input_embeddings().weight.detach().float().cpu()
    words = lambda text: table[lm.tokenizer(text, add_special_tokens=False).input_ids]  # noqa: E731
    mapper = SoftTokenMapper(in_dim, vocab, table[vocab], words(PROMPT_BEFORE), words(PROMPT_AFTER), targets.shape[1], config.width)
    return mapper, targets


def train_prefix_decoder(
    lm: LanguageModel,
    vectors: np.ndarray,
    texts: Sequence[str],
    config: PrefixConfig = PrefixConfig(),
    *,
    report: StepReport | None = None,
    cancel: Callable[[], bool] | None = None,
) -> tuple[PrefixMapper | SoftTokenMapper, dict]:
    """Train a mapper (``config.mapper``) so that ``lm`` writes ``texts[i]`` from ``vectors[i]``.

    vectors: float ``[n, d]`` (text embeddings, or predictions of them); texts: n captions.
    Batches of ``config.batch_size`` pairs drawn without replacement (an epoch at a time) from a
    generator seeded with ``config.seed``; the same inputs and config give the same weights on
    the same machine. "soft-tokens" first runs ``config.align_steps`` alignment steps (random
    batches of ``align_batch_size``, no LM pass), then ``config.steps`` through the LM.
    ``report(step, steps, loss)`` after every LM step and every 10th alignment step (loss: running
    mean over the last 10 steps, nats per token); ``cancel()`` is checked before each step (raises
    Cancelled). Returns (mapper on CPU in eval mode, history {"loss": [...] per step, "seconds",
    "align_seconds", "step_seconds": seconds per LM step}).
    """
    vectors = np.asarray(vectors, np.float32)
    if vectors.ndim != 2 or len(vectors) != len(texts) or len(texts) < 2:
        raise ValueError(f"expected vectors [n, d] and n >= 2 texts, got {vectors.shape} and {len(texts)} texts")
    if config.mapper not in MAPPERS:
        raise ValueError(f"mapper must be one of {MAPPERS}, got {config.mapper!r}")
    torch.manual_seed(config.seed)  # the mapper's initial weights
    gen = torch.Generator().manual_seed(config.seed)  # batch order and noise
    soft = config.mapper == "soft-tokens"
    targets = None
    if soft:
        mapper, targets = _build_soft_token_mapper(lm, vectors.shape[1], texts, config)
    else:
        mapper = PrefixMapper(vectors.shape[1], lm.hidden_size, config.prefix_length, config.width, lm.embedding_rms)
    mapper.centre.copy_(torch.from_numpy(vectors.mean(0)))
    mapper.to(lm.device).train()
    ids, mask = lm.tokenize(list(texts), config.max_tokens)
    x_all = torch.from_numpy(vectors)
    noise_gen = gen if lm.device == "cpu" else None
    align_steps = config.align_steps if soft else 0
    total = align_steps + config.steps
    losses: list[float] = []
    t0 = time.perf_counter()

    def check(step: int) -> None:
        if cancel is not None and cancel():
            raise Cancelled(f"cancelled at step {step} of {total}")

    # Phase 1 ("soft-tokens" only): the slots learn to spell the caption; no pass through the LM.
    if align_steps:
        optimiser = torch.optim.AdamW(mapper.parameters(), lr=config.align_lr, weight_decay=0.01)
        for step in range(align_steps):
            check(step)
            batch = torch.randint(len(texts), (min(config.align_batch_size, len(texts)),), generator=gen)
            for group in optimiser.param_groups:
                group["lr"] = config.align_lr * _lr_factor(step, align_steps)
            logits = mapper.logits(x_all[batch].to(lm.device), noise=config.noise, generator=noise_gen)
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), targets[batch].flatten().to(lm.device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
            if report is not None and (step + 1) % 10 == 0:
                report(step + 1, total, float(np.mean(losses[-10:])))
    align_seconds = time.perf_counter() - t0

    # Phase 2: the LM's teacher-forced loss through the whole prefix.
    optimiser = torch.optim.AdamW(mapper.parameters(), lr=config.lr, weight_decay=0.01)
    order = torch.empty(0, dtype=torch.long)
    t1 = time.perf_counter()
    for step in range(config.steps):
        check(align_steps + step)
        if len(order) < config.batch_size:
            order = torch.cat([order, torch.randperm(len(texts), generator=gen)])
        batch, order = order[: config.batch_size], order[config.batch_size:]
        for group in optimiser.param_groups:
            group["lr"] = config.lr * _lr_factor(step, config.steps)
        x = x_all[batch].to(lm.device)
        width = int(mask[batch].sum(1).max())  # drop columns that are padding for the whole batch
        if soft:
            logits = mapper.logits(x, noise=config.noise, generator=noise_gen)
            loss = lm.prefix_loss(mapper.prefix(logits), ids[batch, :width], mask[batch, :width])
            loss = loss + nn.functional.cross_entropy(logits.flatten(0, 1), targets[batch].flatten().to(lm.device))
        else:
            prefix = mapper(x, noise=config.noise, generator=noise_gen)
            loss = lm.prefix_loss(prefix, ids[batch, :width], mask[batch, :width])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(mapper.parameters(), 1.0)
        optimiser.step()
        losses.append(float(loss.detach()))
        if report is not None:
            report(align_steps + step + 1, total, float(np.mean(losses[-10:])))
    lm_seconds = time.perf_counter() - t1
    seconds = time.perf_counter() - t0
    mapper.eval().cpu()
    return mapper, {"loss": losses, "seconds": seconds, "align_seconds": align_seconds,
                    "step_seconds": lm_seconds / max(1, config.steps)}


def _lr_factor(step: int, steps: int) -> float:
    """Linear warm-up over min(10, steps/10) steps, then cosine from 1 down to 0.1."""
    warm = min(10, max(1, steps // 10))
    if step < warm:
        return (step + 1) / warm
    t = (step - warm) / max(1, steps - warm)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))


def generate_captions(
    lm: LanguageModel,
    mapper: PrefixMapper | SoftTokenMapper,
    vectors: np.ndarray,
    *,
    max_new_tokens: int = 30,
    num_beams: int = 1,
    seed: int = 0,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> list[str]:
    """One caption per row of ``vectors`` (float ``[n, d]``), ``batch_size`` at a time (fewer on
    a GPU out of memory); deterministic (greedy or beam search, no sampling)."""
    vectors = np.asarray(vectors, np.float32)
    mapper = mapper.to(lm.device).eval()

    def batch(rows: list[int]) -> list[str]:
        with torch.inference_mode():
            prefix = mapper(torch.from_numpy(vectors[rows]).to(lm.device))
        return lm.generate(prefix, max_new_tokens=max_new_tokens, num_beams=num_beams, seed=seed, stop_ids=stop)

    # A soft-token prompt ends its line with "\nRepeat:": a caption is one line, so a newline ends it.
    stop = [lm.tokenizer("\n", add_special_tokens=False).input_ids[-1]] if isinstance(mapper, SoftTokenMapper) else []
    return run_batched(batch, list(range(len(vectors))), batch_size, progress, cancel)


# ------------------------------------------------------------------------------ serialisation


def mapper_to_bytes(mapper: PrefixMapper | SoftTokenMapper, extra: dict | None = None) -> bytes:
    """safetensors bytes of the mapper, its shape in the metadata (plus ``extra``, JSON)."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in mapper.state_dict().items()}
    meta = {"mapper": json.dumps(mapper.describe()), "version": str(VERSION), "extra": json.dumps(extra or {})}
    return save(tensors, metadata=meta)


def mapper_from_bytes(data: bytes) -> tuple[PrefixMapper | SoftTokenMapper, dict]:
    """(mapper in eval mode on CPU, extra) from :func:`mapper_to_bytes`."""
    from safetensors.torch import load

    tensors = load(data)
    # The header: 8 bytes of little-endian length, then JSON holding "__metadata__".
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    meta = header.get("__metadata__", {})
    shape = json.loads(meta["mapper"])
    if shape.get("kind") == "soft-tokens":
        mapper = SoftTokenMapper(shape["in_dim"], shape["vocab"], tensors["vocab_embeddings"], tensors["before"],
                                 tensors["after"], shape["slots"], shape["width"])
    else:
        mapper = PrefixMapper(shape["in_dim"], shape["hidden"], shape["prefix_length"], shape["width"], 1.0)
    mapper.load_state_dict(tensors)
    return mapper.eval(), json.loads(meta.get("extra", "{}"))
