"""The Brain Q-Former (MindSemantix): brain responses -> query tokens -> soft prefix of a frozen LM.

    responses [b, U] --z-score per unit--> units grouped into G brain tokens (one learned linear
    projection per group: a region's vertices, a patch of at most ``patch`` of them, or a neuron
    area) [b, G, D] + group embedding --encoder layer--> brain tokens [b, G, D]
    learned queries [Q, D] --``layers`` x (self-attention, cross-attention to the brain tokens, MLP)-->
    [b, Q, D] --> prefix of the frozen LM -> caption

Two ways the queries become the prefix (``QFormerConfig.prefix``):

- ``"soft-tokens"`` (default): one query per word slot, Q = the longest training caption in
  tokens. Each query's output is projected into the LM's embedding space and compared (cosine,
  learned inverse temperature) with the LM's own input embeddings of the tokens that occur in the
  training captions; the slot holds its most likely token's embedding (straight-through: the
  gradient flows through the softmax-weighted mean). The prefix is a prompt the frozen LM already
  follows, ``"Repeat:" + [Q slots] + "\nRepeat:"`` (the same prompt as the prefix decoder's
  soft-token mapper, backend/models/prefix_decoder.py), so the LM writes in its own vocabulary
  what the slots spell and ends the caption at a newline.
- ``"free"``: ``queries`` free vectors (linear, RMS norm, learned gain), the original MindSemantix
  form; the LM's input space has to be discovered through LM passes alone.

Training (``train_qformer``):

1. optional masked-unit pretraining of the brain encoder (``pretrain_steps`` > 0): a fraction
   ``mask_ratio`` of the units is zeroed and a linear read-out per group reconstructs them from the
   encoded tokens (mean squared error on the masked units), as MindSemantix pretrains on every
   response of a unit space; off by default;
2. ``"soft-tokens"`` only: *alignment*, ``align_epochs`` passes over the pairs without the LM (milliseconds of LM
   cost: none): cross-entropy between the slots' logits and the caption's tokens in order (padded
   with newlines) plus ``contrastive`` x a symmetric InfoNCE loss between the mean of the queries
   (projected to the caption-embedding width) and the caption's embedding, over the batch;
3. ``steps`` steps through the frozen LM: its teacher-forced loss on the caption, plus the
   contrastive loss (and, for soft tokens, the alignment loss).

Why (measured on the demo world, 1,000 training / 60 test stimuli, seed 0, 2 busy CPU cores):
the free 8-vector prefix trained 60 LM steps (126 s) wrote captions that identify the test
stimulus in 2-way comparisons through their MiniLM embeddings 0.574 of the time (chance 0.5);
each LM step costs 1-17 s here, so the free prefix never gets the thousands of steps it would need
to find the LM's input space from 1,000 pairs. The soft-token Q-Former learns the words in the
cheap alignment phase (0.13-0.5 s a step at width 128, batch 32, on those cores) and is then
asked, in the LM's own vocabulary, for a caption the LM already knows how to repeat: 2-way
0.745-0.759 over two seeds (``QFormerConfig`` gives the defaults and every figure).

Arrays in, modules out (no datasets, no store): the stage is backend/stages/brain_qformer.py.
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

#: Bumped whenever training or the network changes, so cached Q-Formers are never read stale.
#: 2: soft-token prefix and the alignment phase (the default), width 128.
VERSION = 2

#: (phase, step, steps, loss): phase "pretrain", "align" or "lm"; loss a running mean of 10 steps.
StepReport = Callable[[str, int, int, float], None]
PREFIXES = ("soft-tokens", "free")

#: The prompt around the soft tokens: the frozen LM repeats what follows "Repeat:" (as for the
#: prefix decoder's soft-token mapper; kept here so the two decoders can change independently).
PROMPT_BEFORE, PROMPT_AFTER = "Repeat:", "\nRepeat:"


@dataclass(frozen=True)
class QFormerConfig:
    """How a Brain Q-Former is built and trained (every field is part of its cache key).

    The defaults, measured through the stage on the demo world (1,000 training / 60 test stimuli,
    real SmolLM2-135M-Instruct and MiniLM; 2 CPU cores shared with other work at load ~6):

    | seed | 2-way | top-1 | similarity | BLEU-4 | CIDEr-D | training |
    |---|---|---|---|---|---|---|
    | 0 | 0.759 | 0.133 | 0.413 | 0.150 | 0.605 | 370 s (alignment 195 s, 10 LM steps of 17 s) |
    | 1 | 0.745 | 0.150 | 0.402 | 0.145 | 0.500 | 371 s |

    (chance 0.5 / 0.017; the free 8-vector prefix before, 60 LM steps: 2-way 0.574, similarity
    0.285, CIDEr-D 0.073.) With 1 LM step instead of 10 (seed 0): 2-way 0.766, similarity 0.404,
    CIDEr-D 0.555, training 189 s: the LM steps polish (ends, fewer loops), the alignment does the work.
    Explored on the same world (the words the slots spell after 400 alignment steps, scored the same
    way on the 60 test stimuli and on 200 held-out training stimuli): width 128 and 2 query layers
    (2-way 0.81 / 0.73 held out); width 64 or 1 layer spell worse (0.72-0.76 / 0.69-0.71); width
    256 is no better and 4x slower per step; without the contrastive term 0.77 / 0.70; unit
    dropout 0.3, weight decay 0.5, label smoothing 0.1, weight averaging or patches of 2,048
    vertices change the held-out figure by less than 0.015; frozen per-region PCA projections
    (whitened, 64 components) lower it. The pooled queries alone identify the stimulus far better
    (2-way 0.92-0.96 against the caption embeddings): what is lost is in spelling it out in words.
    """

    prefix: str = "soft-tokens"  # or "free" (``queries`` free prefix vectors)
    queries: int = 8  # "free": query tokens = soft-prefix vectors ("soft-tokens": one per word slot)
    dim: int = 128  # width of brain tokens and queries
    layers: int = 2  # query layers (self-attention + cross-attention + MLP)
    heads: int = 4
    patch: int = 512  # at most this many units per brain token (regions are split into patches)
    steps: int = 10  # steps through the LM
    batch_size: int = 16
    lr: float = 1e-4  # AdamW for the LM steps, linear warm-up then cosine to a tenth
    align_epochs: float = 12.8  # "soft-tokens": alignment without the LM, in passes over the training pairs
    align_batch_size: int = 32
    align_lr: float = 1e-3
    contrastive: float = 1.0  # weight of the InfoNCE term
    temperature: float = 0.07
    dropout: float = 0.1
    pretrain_steps: int = 0  # masked-unit pretraining of the brain encoder (0: none)
    mask_ratio: float = 0.5
    seed: int = 0
    max_tokens: int = 40

    def to_dict(self) -> dict:
        return asdict(self)


def brain_groups(labels: np.ndarray, patch: int) -> np.ndarray:
    """int64 ``[U]``: the brain token of each unit. Units of one label (region, area) form one
    token, split in index order into patches of at most ``patch`` units (nearby vertices share
    nearby indices on an icosahedral mesh); tokens numbered 0..G-1 by label, then patch."""
    labels = np.asarray(labels).astype(np.int64).ravel()
    if labels.size == 0 or patch < 1:
        raise ValueError(f"need at least one unit and patch >= 1, got {labels.size} units and patch {patch}")
    out = np.empty(labels.size, np.int64)
    token = 0
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        pieces = math.ceil(len(rows) / patch)
        for chunk in np.array_split(rows, pieces):
            out[chunk] = token
            token += 1
    return out


def caption_slots(lm: LanguageModel, texts: Sequence[str], max_tokens: int) -> tuple[list[int], torch.Tensor]:
    """(vocabulary: sorted token ids of the captions plus the newline, targets int64 ``[n, k]``:
    each caption's tokens as they read after "Repeat:" (with a leading space) as positions in that
    vocabulary, padded with the newline; k = the longest caption, at most ``max_tokens - 1``)."""
    tok = lm.tokenizer
    newline = tok("\n", add_special_tokens=False).input_ids[-1]
    rows = [tok(" " + t.strip(), add_special_tokens=False).input_ids[: max_tokens - 1] for t in texts]
    vocab = sorted({t for r in rows for t in r} | {newline})
    where = {t: i for i, t in enumerate(vocab)}
    slots = max(1, max(len(r) for r in rows))
    targets = torch.full((len(rows), slots), where[newline], dtype=torch.long)
    for i, r in enumerate(rows):
        targets[i, : len(r)] = torch.tensor([where[t] for t in r], dtype=torch.long)
    return vocab, targets


class BrainQFormer(nn.Module):
    """responses float ``[b, U]`` -> prefix float ``[b, P, hidden]`` and pooled query ``[b, emb]``.

    ``"free"``: P = ``config.queries``. ``"soft-tokens"`` (``vocab`` given): P = len(before) + slots +
    len(after); :meth:`logits` gives the slots' logits over the caption vocabulary."""

    RANK = 256  # soft tokens: the slots' width before the projection into the LM's embedding space

    def __init__(self, groups: np.ndarray, hidden: int, emb_dim: int, config: QFormerConfig, scale: float, *,
                 vocab: Sequence[int] | None = None, vocab_embeddings: torch.Tensor | None = None,
                 before: torch.Tensor | None = None, after: torch.Tensor | None = None, slots: int = 0):
        super().__init__()
        groups = torch.as_tensor(np.asarray(groups, np.int64))
        self.n_tokens = int(groups.max()) + 1
        self.hidden, self.emb_dim, self.config = hidden, emb_dim, config
        self.soft = vocab is not None
        d = config.dim
        self.register_buffer("groups", groups)
        self.register_buffer("mean", torch.zeros(len(groups)))
        self.register_buffer("std", torch.ones(len(groups)))
        # Units sorted by token, so each token's units are one contiguous slice.
        order = torch.argsort(groups, stable=True)
        self.register_buffer("order", order)
        sizes = torch.bincount(groups, minlength=self.n_tokens)
        self.sizes = [int(s) for s in sizes]
        self.embed = nn.ModuleList(nn.Linear(s, d) for s in self.sizes)
        self.position = nn.Parameter(torch.randn(self.n_tokens, d) * 0.02)
        self.encoder = nn.TransformerEncoderLayer(d, config.heads, 2 * d, config.dropout, batch_first=True, norm_first=True)
        n_queries = slots if self.soft else config.queries
        self.queries = nn.Parameter(torch.randn(n_queries, d) * 0.02)
        self.qformer = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(d, config.heads, 2 * d, config.dropout, batch_first=True, norm_first=True),
            config.layers, norm=nn.LayerNorm(d),
        )
        if self.soft:
            self.vocab = [int(v) for v in vocab]
            self.register_buffer("vocab_embeddings", vocab_embeddings.detach().float().clone())
            self.up = nn.Linear(d, hidden)
            self.scale = nn.Parameter(torch.tensor(10.0))  # inverse temperature of the cosine logits
            self.before = nn.Parameter(before.detach().float().clone())
            self.after = nn.Parameter(after.detach().float().clone())
        else:
            self.vocab = []
            self.to_prefix = nn.Linear(d, hidden)
            self.gain = nn.Parameter(torch.full((hidden,), float(scale)))
        self.to_embedding = nn.Linear(d, emb_dim)
        self.reconstruct = nn.ModuleList(nn.Linear(d, s) for s in self.sizes)  # masked-unit pretraining only

    def describe(self) -> dict:
        out = {"hidden": self.hidden, "emb_dim": self.emb_dim, "config": self.config.to_dict()}
        if self.soft:
            out.update(vocab=self.vocab, slots=int(self.queries.shape[0]))
        return out

    def tokens(self, responses: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encoded brain tokens float ``[b, G, dim]``; ``mask`` (bool ``[b, U]``) zeroes units."""
        x = (responses.float() - self.mean) / self.std
        if mask is not None:
            x = x.masked_fill(mask, 0.0)
        x = x[:, self.order]
        pieces = torch.split(x, self.sizes, dim=1)
        tokens = torch.stack([layer(p) for layer, p in zip(self.embed, pieces, strict=True)], dim=1) + self.position
        return self.encoder(tokens)

    def query_outputs(self, responses: torch.Tensor) -> torch.Tensor:
        """The queries after the Q-Former layers, float ``[b, Q, dim]``."""
        memory = self.tokens(responses)
        return self.qformer(self.queries.expand(len(responses), -1, -1), memory)

    def pooled(self, q: torch.Tensor) -> torch.Tensor:
        """The mean query in the caption-embedding space, unit length ``[b, emb_dim]``."""
        return nn.functional.normalize(self.to_embedding(q.mean(1)), dim=-1)

    def slot_logits(self, q: torch.Tensor) -> torch.Tensor:
        """Soft tokens: each slot's cosine logits over the caption vocabulary, float ``[b, Q, V]``."""
        h = nn.functional.normalize(self.up(q), dim=-1)
        return self.scale * h @ nn.functional.normalize(self.vocab_embeddings, dim=-1).T

    def logits(self, responses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Soft tokens: (slot logits ``[b, Q, V]``, pooled ``[b, emb_dim]``)."""
        q = self.query_outputs(responses)
        return self.slot_logits(q), self.pooled(q)

    def soft_prefix(self, logits: torch.Tensor) -> torch.Tensor:
        """The prompt around the slots: each slot is its most likely token's embedding (the LM
        reads real words); in training the gradient flows through the softmax-weighted mean."""
        b = len(logits)
        weights = logits.softmax(-1)
        hard = nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(weights.dtype)
        if torch.is_grad_enabled() and logits.requires_grad:
            hard = hard + weights - weights.detach()
        tokens = hard @ self.vocab_embeddings
        return torch.cat([self.before.expand(b, -1, -1), tokens, self.after.expand(b, -1, -1)], dim=1)

    def forward(self, responses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(prefix ``[b, P, hidden]`` at the LM's embedding scale, pooled ``[b, emb_dim]`` unit length)."""
        q = self.query_outputs(responses)
        if self.soft:
            prefix = self.soft_prefix(self.slot_logits(q))
        else:
            prefix = nn.functional.rms_norm(self.to_prefix(q), (self.hidden,)) * self.gain
        return prefix, self.pooled(q)

    def draft(self, responses: torch.Tensor, decode: Callable[[list[int]], str]) -> list[str]:
        """Soft tokens: the words the slots spell (each slot's most likely token), for inspection."""
        with torch.inference_mode():
            best = self.logits(responses)[0].argmax(-1).tolist()
        return [" ".join(decode([self.vocab[i] for i in row]).split()) for row in best]

    def reconstruction_loss(self, responses: torch.Tensor, mask_ratio: float, generator: torch.Generator | None) -> torch.Tensor:
        """Mean squared error of the z-scored units that were masked, reconstructed from the tokens."""
        mask = torch.rand(responses.shape, generator=generator, device=responses.device) < mask_ratio
        tokens = self.tokens(responses, mask)
        target = ((responses.float() - self.mean) / self.std)[:, self.order]
        guess = torch.cat([layer(tokens[:, t]) for t, layer in enumerate(self.reconstruct)], dim=1)
        m = mask[:, self.order]
        return ((guess - target) ** 2)[m].mean()


def contrastive_loss(pooled: torch.Tensor, embeddings: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between unit rows ``pooled`` ``[b, e]`` and caption ``embeddings`` ``[b, e]``."""
    target = nn.functional.normalize(embeddings.float(), dim=-1)
    logits = pooled @ target.T / temperature
    labels = torch.arange(len(pooled), device=pooled.device)
    return 0.5 * (nn.functional.cross_entropy(logits, labels) + nn.functional.cross_entropy(logits.T, labels))


def _schedule(step: int, steps: int) -> float:
    """Linear warm-up over min(10, steps/10) steps, then cosine from 1 down to 0.1."""
    warm = min(10, max(1, steps // 10))
    if step < warm:
        return (step + 1) / warm
    t = (step - warm) / max(1, steps - warm)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))


def pretrain_encoder(model: BrainQFormer, responses: np.ndarray, steps: int, *, batch_size: int = 32, lr: float = 1e-3,
                     mask_ratio: float = 0.5, seed: int = 0, cancel: Callable[[], bool] | None = None,
                     report: Callable[[int, int, float], None] | None = None) -> list[float]:
    """Masked-unit pretraining of ``model``'s brain encoder on ``responses`` float ``[n, U]`` (any
    stimuli of the same unit space, no captions needed). Returns the loss of every step."""
    gen = torch.Generator().manual_seed(seed)
    params = [*model.embed.parameters(), model.position, *model.encoder.parameters(), *model.reconstruct.parameters()]
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    x_all = torch.from_numpy(np.asarray(responses, np.float32))
    losses = []
    model.train()
    for step in range(steps):
        if cancel is not None and cancel():
            raise Cancelled(f"cancelled at pretraining step {step} of {steps}")
        batch = torch.randint(len(x_all), (min(batch_size, len(x_all)),), generator=gen)
        for group in optimiser.param_groups:
            group["lr"] = lr * _schedule(step, steps)
        loss = model.reconstruction_loss(x_all[batch], mask_ratio, gen)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
        if report is not None:
            report(step + 1, steps, float(np.mean(losses[-10:])))
    return losses


def alignment_steps(config: QFormerConfig, n: int) -> int:
    """Steps of the alignment phase for ``n`` training pairs: ``align_epochs`` passes over them in
    batches of ``align_batch_size`` (random batches, so a pass is on average, not exact)."""
    return math.ceil(config.align_epochs * n / max(1, min(config.align_batch_size, n))) if config.align_epochs > 0 else 0


def build_qformer(lm: LanguageModel, groups: np.ndarray, emb_dim: int, texts: Sequence[str],
                  config: QFormerConfig) -> tuple[BrainQFormer, torch.Tensor | None]:
    """(untrained model, slot targets int64 ``[n, slots]`` of ``texts`` or None for a free prefix)."""
    if config.prefix not in PREFIXES:
        raise ValueError(f"prefix must be one of {PREFIXES}, got {config.prefix!r}")
    if config.prefix == "free":
        return BrainQFormer(groups, lm.hidden_size, emb_dim, config, lm.embedding_rms), None
    vocab, targets = caption_slots(lm, texts, config.max_tokens)
    table = lm.model.get_input_embeddings().weight.detach().float().cpu()
    words = lambda text: table[lm.tokenizer(text, add_special_tokens=False).input_ids]  # noqa: E731
    model = BrainQFormer(groups, lm.hidden_size, emb_dim, config, lm.embedding_rms, vocab=vocab,
                         vocab_embeddings=table[vocab], before=words(PROMPT_BEFORE), after=words(PROMPT_AFTER),
                         slots=targets.shape[1])
    return model, targets


def train_qformer(
    lm: LanguageModel,
    responses: np.ndarray,
    groups: np.ndarray,
    texts: Sequence[str],
    embeddings: np.ndarray,
    config: QFormerConfig = QFormerConfig(),
    *,
    pretrain_responses: np.ndarray | None = None,
    report: StepReport | None = None,
    cancel: Callable[[], bool] | None = None,
) -> tuple[BrainQFormer, dict]:
    """Train a :class:`BrainQFormer` so that ``lm`` writes ``texts[i]`` from ``responses[i]``.

    responses: float ``[n, U]``; groups: int ``[U]`` from :func:`brain_groups`; texts: n captions;
    embeddings: float ``[n, e]`` their caption embeddings (the contrastive targets). Units are
    z-scored with the training responses' mean and standard deviation. Phases (module docstring):
    masked-unit pretraining if ``config.pretrain_steps`` > 0 (on ``pretrain_responses``, default
    ``responses``); alignment (soft tokens); ``config.steps`` LM steps.
    Seeded (``config.seed``): same inputs, same weights on the same machine.
    The alignment runs ``ceil(align_epochs * n / align_batch_size)`` steps (1,000 pairs: 400).
    ``report(phase, step, steps, loss)`` after each LM step, each pretraining step and every 10th
    alignment step; ``cancel()`` before each step (raises :class:`Cancelled`). Returns (model in
    eval mode on CPU, history {"loss", "lm_loss", "contrastive_loss" (LM steps), "align_loss",
    "pretrain_loss", "seconds", "align_seconds", "step_seconds" (per LM step)}).
    """
    responses = np.asarray(responses, np.float32)
    embeddings = np.asarray(embeddings, np.float32)
    n = len(texts)
    if responses.ndim != 2 or len(responses) != n or len(embeddings) != n or n < 2:
        raise ValueError(f"expected responses [n, U], n >= 2 texts and embeddings [n, e], got {responses.shape}, "
                         f"{n} texts and {embeddings.shape}")
    if np.asarray(groups).shape != (responses.shape[1],):
        raise ValueError(f"groups must give one brain token per unit ({responses.shape[1]}), got shape {np.asarray(groups).shape}")
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    model, targets = build_qformer(lm, groups, embeddings.shape[1], texts, config)
    model.mean.copy_(torch.from_numpy(responses.mean(0)))
    model.std.copy_(torch.from_numpy(responses.std(0)).clamp_min(1e-6))
    t0 = time.perf_counter()
    pre_losses: list[float] = []
    if config.pretrain_steps > 0:
        pre = responses if pretrain_responses is None else np.asarray(pretrain_responses, np.float32)
        pre_losses = pretrain_encoder(
            model, pre, config.pretrain_steps, batch_size=config.batch_size, lr=config.lr, mask_ratio=config.mask_ratio,
            seed=config.seed, cancel=cancel,
            report=None if report is None else (lambda step, steps, loss: report("pretrain", step, steps, loss)))
    model.to(lm.device).train()
    x_all, e_all = torch.from_numpy(responses), torch.from_numpy(embeddings)
    params = [p for name, p in model.named_parameters() if not name.startswith("reconstruct.")]

    def check(phase: str, step: int, steps: int) -> None:
        if cancel is not None and cancel():
            raise Cancelled(f"cancelled at {phase}step {step} of {steps}")

    # Alignment (soft tokens): the slots learn to spell the caption, the pooled queries to point
    # at its embedding; no LM pass, so thousands of samples cost seconds.
    align_losses: list[float] = []
    t1 = time.perf_counter()
    align_steps = alignment_steps(config, n) if model.soft else 0
    if align_steps:
        optimiser = torch.optim.AdamW(params, lr=config.align_lr, weight_decay=0.01)
        for step in range(align_steps):
            check("alignment ", step, align_steps)
            batch = torch.randint(n, (min(config.align_batch_size, n),), generator=gen)
            for group in optimiser.param_groups:
                group["lr"] = config.align_lr * _schedule(step, align_steps)
            logits, pooled = model.logits(x_all[batch].to(lm.device))
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), targets[batch].flatten().to(lm.device))
            loss = loss + config.contrastive * contrastive_loss(pooled, e_all[batch].to(lm.device), config.temperature)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            align_losses.append(float(loss.detach()))
            if report is not None and (step + 1) % 10 == 0:
                report("align", step + 1, align_steps, float(np.mean(align_losses[-10:])))
    align_seconds = time.perf_counter() - t1

    # Through the frozen LM: its teacher-forced loss on the caption after the prefix.
    ids, mask = lm.tokenize(list(texts), config.max_tokens)
    optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.01)
    order = torch.empty(0, dtype=torch.long)
    losses, lm_losses, con_losses = [], [], []
    t2 = time.perf_counter()
    for step in range(config.steps):
        check("", step, config.steps)
        if len(order) < config.batch_size:
            order = torch.cat([order, torch.randperm(n, generator=gen)])
        batch, order = order[: config.batch_size], order[config.batch_size:]
        for group in optimiser.param_groups:
            group["lr"] = config.lr * _schedule(step, config.steps)
        q = model.query_outputs(x_all[batch].to(lm.device))
        pooled = model.pooled(q)
        width = int(mask[batch].sum(1).max())
        if model.soft:
            logits = model.slot_logits(q)
            lm_loss = lm.prefix_loss(model.soft_prefix(logits), ids[batch, :width], mask[batch, :width])
            extra = nn.functional.cross_entropy(logits.flatten(0, 1), targets[batch].flatten().to(lm.device))
        else:
            prefix = nn.functional.rms_norm(model.to_prefix(q), (model.hidden,)) * model.gain
            lm_loss = lm.prefix_loss(prefix, ids[batch, :width], mask[batch, :width])
            extra = torch.zeros((), device=lm_loss.device)
        con = contrastive_loss(pooled, e_all[batch].to(lm.device), config.temperature)
        loss = lm_loss + extra + config.contrastive * con
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        losses.append(float(loss.detach()))
        lm_losses.append(float(lm_loss.detach()))
        con_losses.append(float(con.detach()))
        if report is not None:
            report("lm", step + 1, config.steps, float(np.mean(losses[-10:])))
    lm_seconds = time.perf_counter() - t2
    seconds = time.perf_counter() - t0
    model.eval().cpu()
    return model, {"loss": losses, "lm_loss": lm_losses, "contrastive_loss": con_losses, "align_loss": align_losses,
                   "pretrain_loss": pre_losses, "seconds": seconds, "align_seconds": align_seconds,
                   "step_seconds": lm_seconds / max(1, config.steps)}


def generate_qformer_captions(
    lm: LanguageModel, model: BrainQFormer, responses: np.ndarray, *, max_new_tokens: int = 30, num_beams: int = 1,
    seed: int = 0, batch_size: int = 32, progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> list[str]:
    """One caption per row of ``responses`` (float ``[n, U]``), deterministic (greedy or beam).
    With soft tokens a newline ends the caption (the prompt's line ends with "\\nRepeat:")."""
    responses = np.asarray(responses, np.float32)
    model = model.to(lm.device).eval()
    stop = [lm.tokenizer("\n", add_special_tokens=False).input_ids[-1]] if model.soft else []

    def batch(rows: list[int]) -> list[str]:
        with torch.inference_mode():
            prefix, _ = model(torch.from_numpy(responses[rows]).to(lm.device))
        return lm.generate(prefix, max_new_tokens=max_new_tokens, num_beams=num_beams, seed=seed, stop_ids=stop)

    return run_batched(batch, list(range(len(responses))), batch_size, progress, cancel)


def qformer_to_bytes(model: BrainQFormer, extra: dict | None = None) -> bytes:
    """safetensors bytes of the model; its shape and configuration in the metadata (plus ``extra``)."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"qformer": json.dumps(model.describe()), "version": str(VERSION), "extra": json.dumps(extra or {})}
    return save(tensors, metadata=meta)


def qformer_from_bytes(data: bytes) -> tuple[BrainQFormer, dict]:
    """(model in eval mode on CPU, extra) from :func:`qformer_to_bytes`."""
    from safetensors.torch import load

    tensors = load(data)
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    meta = header.get("__metadata__", {})
    shape = json.loads(meta["qformer"])
    config = QFormerConfig(**shape["config"])
    soft = {}
    if "vocab" in shape:
        soft = dict(vocab=shape["vocab"], vocab_embeddings=tensors["vocab_embeddings"], before=tensors["before"],
                    after=tensors["after"], slots=shape["slots"])
    model = BrainQFormer(tensors["groups"].numpy(), shape["hidden"], shape["emb_dim"], config, 1.0, **soft)
    model.load_state_dict(tensors)
    return model.eval(), json.loads(meta.get("extra", "{}"))
