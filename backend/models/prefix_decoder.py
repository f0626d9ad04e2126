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
  training captions (k = the longest training caption in tokens). A small GRU conditioned on the
  (centred, unit, noisy) vector writes the slots left to right: each slot's logits over those
  tokens, its most likely one taken. Training has two phases: (1) *alignment*, ``align_steps`` steps of
  teacher-forced cross-entropy between the slot logits and the caption's tokens (padded with
  newlines) -- no LM pass, so it costs milliseconds a step; (2) ``steps`` steps of the LM's
  teacher-forced loss with the caption's own tokens in the slots, which train only the prompt's
  fixed-word vectors: the frozen LM learns nothing but is asked, in its own vocabulary, to write
  the caption that the soft tokens spell, and to end it. Measured on the demo world, this reaches in minutes what the free MLP prefix
  does not reach in an hour of CPU: the costly LM passes are spent on ending and polishing, not
  on discovering the LM's input space.

  Generation can propose several slot sequences (beam search over the GRU) and keep the one
  whose words embed closest to the input vector (:func:`generate_captions`, ``candidates``):
  the decoder's own check that what it is about to say means what it was given. From ridge
  predictions of the brain this is what lifts the captions past retrieval (demo world, 60 test
  stimuli, sentence similarity: the most likely sequence's words 0.494, the best of 8 0.547, the
  LM's captions from the best of 8 through the stage 0.541; retrieval 0.493).

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
VERSION = 3

StepReport = Callable[[int, int, float], None]  # (step, steps, loss in nats per token)
MAPPERS = ("soft-tokens", "mlp")


@dataclass(frozen=True)
class PrefixConfig:
    """How a prefix decoder is built and trained (every field is part of its cache key)."""

    prefix_length: int = 8  # k soft-prefix vectors ("mlp"; "soft-tokens" uses the longest caption)
    width: int = 512  # the MLP's hidden width; the soft-token GRU's state
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
    k slots, ``c`` fixed-word vectors (see the module docstring). Each slot holds the LM's input
    embedding of one caption-vocabulary token, written left to right by a small GRU conditioned on
    the vector (the previous slot's token in, the next slot's cosine logits over the vocabulary out).

    A GRU rather than one MLP output per slot position: caption words move with what precedes
    them ("a fire truck" is one token longer than "a car"), so a per-position read-out has to learn
    every shift from examples; measured on the demo world (1,000 training captions, true embeddings
    of 60 held-out ones), per-position MLP 0.806 sentence similarity and 21.7% exact captions after
    600 alignment steps, this GRU 0.861 and 33%.
    """

    RANK = 256  # width of the token vectors inside the GRU before the projection into the LM's space

    def __init__(self, in_dim: int, vocab: Sequence[int], vocab_embeddings: torch.Tensor, before: torch.Tensor,
                 after: torch.Tensor, slots: int, width: int, newline: int):
        super().__init__()
        self.in_dim, self.slots, self.width = in_dim, slots, width
        self.vocab = [int(v) for v in vocab]
        self.newline = self.vocab.index(int(newline))  # its position in the vocabulary: ends a caption
        self.hidden = int(vocab_embeddings.shape[1])
        self.register_buffer("centre", torch.zeros(in_dim))
        self.register_buffer("vocab_embeddings", vocab_embeddings.detach().float().clone())
        self.condition = nn.Linear(in_dim, width)
        self.token_in = nn.Embedding(len(self.vocab) + 1, self.RANK)  # the last row: "start"
        self.rnn = nn.GRU(self.RANK + width, width, batch_first=True)
        self.out = nn.Linear(width, self.RANK)
        self.up = nn.Linear(self.RANK, self.hidden)
        self.scale = nn.Parameter(torch.tensor(10.0))  # inverse temperature of the cosine logits
        self.before = nn.Parameter(before.detach().float().clone())
        self.after = nn.Parameter(after.detach().float().clone())

    def unit_inputs(self, vectors: torch.Tensor) -> torch.Tensor:
        x = vectors.float() - self.centre
        return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-8)

    def _context(self, vectors: torch.Tensor, noise: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
        x = self.unit_inputs(vectors)
        if noise > 0:
            x = x + torch.randn(x.shape, generator=generator, device=x.device) * (noise / math.sqrt(x.shape[-1]))
        return torch.tanh(self.condition(x))

    def _step(self, tokens: torch.Tensor, context: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One slot for each row: (logits ``[b, V]``, new state) from the previous tokens ``[b]``."""
        out, state = self.rnn(torch.cat([self.token_in(tokens), context], -1)[:, None], state)
        return self._read(out[:, 0]), state

    def _read(self, h: torch.Tensor) -> torch.Tensor:
        z = nn.functional.normalize(self.up(self.out(h)), dim=-1)
        return self.scale * z @ nn.functional.normalize(self.vocab_embeddings, dim=-1).T

    def logits(self, vectors: torch.Tensor, targets: torch.Tensor | None = None, noise: float = 0.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """float ``[b, k, V]``: each slot's logits over the caption vocabulary, given the slots
        before it: ``targets`` (int ``[b, k]`` vocabulary positions; teacher forcing) or, when
        None, the most likely token of each earlier slot (greedy)."""
        context = self._context(vectors, noise, generator)
        start = torch.full((len(context), 1), len(self.vocab), dtype=torch.long, device=context.device)
        if targets is not None:
            previous = torch.cat([start, targets[:, :-1].to(context.device)], 1)
            steps = torch.cat([self.token_in(previous), context[:, None].expand(-1, previous.shape[1], -1)], -1)
            out, _ = self.rnn(steps, context[None].contiguous())
            return self._read(out)
        state, tokens, rows = context[None].contiguous(), start[:, 0], []
        for _ in range(self.slots):
            step, state = self._step(tokens, context, state)
            tokens = step.argmax(-1)
            rows.append(step)
        return torch.stack(rows, 1)

    @torch.inference_mode()
    def candidates(self, vectors: torch.Tensor, width: int) -> torch.Tensor:
        """int64 ``[b, w, k]``: the ``w = min(width, V)`` most likely slot sequences of each row
        (beam search over the GRU, best first; a sequence ends at its first newline and is padded
        with newlines). ``width=1`` is greedy decoding."""
        context = self._context(vectors)
        b, v = len(context), len(self.vocab)
        width = max(1, min(int(width), v))
        tokens = torch.full((b, 1), v, dtype=torch.long, device=context.device)  # [b, n] last token of each beam
        state = context[None].contiguous()  # [1, b*n, width]
        seqs = torch.zeros((b, 1, 0), dtype=torch.long, device=context.device)
        scores = torch.zeros((b, 1), device=context.device)
        for _ in range(self.slots):
            n = tokens.shape[1]
            step, state = self._step(tokens.flatten(), context.repeat_interleave(n, 0), state)
            logp = step.log_softmax(-1).view(b, n, v)
            done = (seqs[..., -1] == self.newline) if seqs.shape[-1] else torch.zeros((b, n), dtype=torch.bool, device=context.device)
            # A finished beam can only go on with newlines, at no cost.
            ended = torch.full((v,), -math.inf, device=context.device)
            ended[self.newline] = 0.0
            logp = torch.where(done[..., None], ended, logp)
            top = (scores[..., None] + logp).view(b, n * v).topk(min(width, n * v), dim=-1)
            beam, token = top.indices // v, top.indices % v
            seqs = torch.cat([seqs.gather(1, beam[..., None].expand(-1, -1, seqs.shape[-1])), token[..., None]], -1)
            scores, tokens = top.values, token
            rows = (torch.arange(b, device=context.device)[:, None] * n + beam).flatten()
            state = state[:, rows]
        return seqs

    def prefix_from_slots(self, slots: torch.Tensor) -> torch.Tensor:
        """The prompt around slot tokens (int ``[b, k]`` vocabulary positions): each slot is its
        token's embedding, never a blend (blends of embeddings make the LM loop)."""
        tokens = self.vocab_embeddings[slots]
        b = len(tokens)
        return torch.cat([self.before.expand(b, -1, -1), tokens, self.after.expand(b, -1, -1)], dim=1)

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        """The prompt around the most likely slot sequence (greedy)."""
        return self.prefix_from_slots(self.candidates(vectors, 1)[:, 0])

    def spell(self, slots: torch.Tensor, decode: Callable[[list[int]], str]) -> list[str]:
        """The words that slot tokens (int ``[b, k]``) spell, up to the first newline."""
        out = []
        for row in slots.tolist():
            row = row[: row.index(self.newline)] if self.newline in row else row
            out.append(" ".join(decode([self.vocab[i] for i in row]).split()))
        return out

    def draft(self, vectors: torch.Tensor, decode: Callable[[list[int]], str]) -> list[str]:
        """The words the slots spell when each is its most likely token, for inspection."""
        return self.spell(self.candidates(vectors, 1)[:, 0], decode)

    def describe(self) -> dict:
        return {"kind": "soft-tokens", "in_dim": self.in_dim, "slots": self.slots, "width": self.width,
                "vocab": self.vocab, "newline": self.vocab[self.newline], "hidden": self.hidden,
                "before": int(self.before.shape[0]), "after": int(self.after.shape[0])}


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
    vocab, targets, newline = _soft_token_targets(lm, texts, config.max_tokens)
    table = lm.model.get_input_embeddings().weight.detach().float().cpu()
    words = lambda text: table[lm.tokenizer(text, add_special_tokens=False).input_ids]  # noqa: E731
    mapper = SoftTokenMapper(in_dim, vocab, table[vocab], words(PROMPT_BEFORE), words(PROMPT_AFTER), targets.shape[1],
                             config.width, newline)
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
            logits = mapper.logits(x_all[batch].to(lm.device), targets[batch], noise=config.noise, generator=noise_gen)
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), targets[batch].flatten().to(lm.device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
            if report is not None and (step + 1) % 10 == 0:
                report(step + 1, total, float(np.mean(losses[-10:])))
    align_seconds = time.perf_counter() - t0

    # Phase 2: the LM's teacher-forced loss. For soft tokens only the prompt around the slots learns,
    # around the caption's own tokens: the LM's gradient through straight-through slots undid
    # what alignment taught the GRU (tiny-model test: slot accuracy 1.0 -> 0.63 in 6 steps).
    learning = [mapper.before, mapper.after] if soft else list(mapper.parameters())
    optimiser = torch.optim.AdamW(learning, lr=config.lr, weight_decay=0.01)
    order = torch.empty(0, dtype=torch.long)
    t1 = time.perf_counter()
    for step in range(config.steps):
        check(align_steps + step)
        if len(order) < config.batch_size:
            order = torch.cat([order, torch.randperm(len(texts), generator=gen)])
        batch, order = order[: config.batch_size], order[config.batch_size:]
        for group in optimiser.param_groups:
            group["lr"] = config.lr * _lr_factor(step, config.steps)
        width = int(mask[batch].sum(1).max())  # drop columns that are padding for the whole batch
        if soft:
            loss = lm.prefix_loss(mapper.prefix_from_slots(targets[batch].to(lm.device)), ids[batch, :width], mask[batch, :width])
        else:
            prefix = mapper(x_all[batch].to(lm.device), noise=config.noise, generator=noise_gen)
            loss = lm.prefix_loss(prefix, ids[batch, :width], mask[batch, :width])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(learning, 1.0)
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
    candidates: int = 1,
    embed: Callable[[list[str]], np.ndarray] | None = None,
    seed: int = 0,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> list[str]:
    """One caption per row of ``vectors`` (float ``[n, d]``), ``batch_size`` at a time (fewer on
    a GPU out of memory); deterministic (greedy or beam search, no sampling).

    Soft-token mappers only: with ``candidates`` > 1 and ``embed`` (texts -> float ``[m, d]``, the
    embedder whose space ``vectors`` live in), the GRU proposes that many slot sequences (beam
    search) and the one whose embedding is closest to the input vector -- cosine, both centred on
    the training inputs' mean, as retrieval compares a ridge prediction with a corpus -- is the
    prompt the LM reads. The LM writes once per row either way.
    """
    vectors = np.asarray(vectors, np.float32)
    mapper = mapper.to(lm.device).eval()
    soft = isinstance(mapper, SoftTokenMapper)
    if candidates < 1:
        raise ValueError(f"candidates must be >= 1, got {candidates}")

    def batch(rows: list[int]) -> list[str]:
        x = torch.from_numpy(vectors[rows]).to(lm.device)
        with torch.inference_mode():
            prefix = mapper.prefix_from_slots(_chosen_slots(mapper, x, candidates, embed, lm)) if soft else mapper(x)
        return lm.generate(prefix, max_new_tokens=max_new_tokens, num_beams=num_beams, seed=seed, stop_ids=stop)

    # A soft-token prompt ends its line with "\nRepeat:": a caption is one line, so a newline ends it.
    stop = [lm.tokenizer("\n", add_special_tokens=False).input_ids[-1]] if soft else []
    return run_batched(batch, list(range(len(vectors))), batch_size, progress, cancel)


def _chosen_slots(mapper: SoftTokenMapper, vectors: torch.Tensor, candidates: int,
                  embed: Callable[[list[str]], np.ndarray] | None, lm: LanguageModel) -> torch.Tensor:
    """int ``[b, k]``: each row's slot sequence, the best of ``candidates`` by similarity of its
    words' embedding to the row's vector (the most likely one without ``embed``)."""
    proposed = mapper.candidates(vectors, candidates if embed is not None else 1)  # [b, w, k]
    b, w, k = proposed.shape
    if w == 1:
        return proposed[:, 0]
    texts = mapper.spell(proposed.flatten(0, 1), lm.tokenizer.decode)
    centre = mapper.centre.cpu().numpy().astype(np.float64)
    found = np.asarray(embed(texts), np.float64).reshape(b, w, -1) - centre
    target = vectors.cpu().numpy().astype(np.float64) - centre
    norms = np.linalg.norm(found, axis=-1) * np.linalg.norm(target, axis=-1)[:, None]
    sims = np.einsum("bwd,bd->bw", found, target) / np.maximum(norms, 1e-12)
    best = torch.from_numpy(np.argmax(sims, axis=1)).to(proposed.device)  # ties: the likelier sequence
    return proposed[torch.arange(b, device=proposed.device), best]


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
                                 tensors["after"], shape["slots"], shape["width"], shape["newline"])
    else:
        mapper = PrefixMapper(shape["in_dim"], shape["hidden"], shape["prefix_length"], shape["width"], 1.0)
    mapper.load_state_dict(tensors)
    return mapper.eval(), json.loads(meta.get("extra", "{}"))
