"""The Brain Q-Former (MindSemantix): brain responses -> query tokens -> soft prefix of a frozen LM.

    responses [b, U] --z-score per unit--> units grouped into G brain tokens (one learned linear
    projection per group: a region's vertices, a patch of at most ``patch`` of them, or a neuron
    area) [b, G, D] + group embedding --encoder layer--> brain tokens [b, G, D]
    learned queries [Q, D] --``layers`` x (self-attention, cross-attention to the brain tokens, MLP)-->
    [b, Q, D] --linear, RMS norm, learned gain--> prefix [b, Q, hidden] -> frozen LM -> caption

Trained end to end on (response, caption) pairs: the LM's teacher-forced loss on the caption plus
``contrastive`` x a symmetric InfoNCE loss between the mean of the queries (projected to the
caption-embedding width) and the caption's embedding, over the batch. Optionally the brain
encoder is first pretrained without captions (``pretrain_steps`` > 0): a fraction ``mask_ratio``
of the units is zeroed and a linear read-out per group reconstructs them from the encoded tokens
(mean squared error on the masked units), as MindSemantix pretrains on every response of a unit
space; off by default.

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
VERSION = 1

StepReport = Callable[[int, int, float], None]  # (step, steps, loss)


@dataclass(frozen=True)
class QFormerConfig:
    """How a Brain Q-Former is built and trained (every field is part of its cache key)."""

    queries: int = 8  # query tokens = soft-prefix vectors
    dim: int = 256  # width of brain tokens and queries
    layers: int = 2  # query layers (self-attention + cross-attention + MLP)
    heads: int = 4
    patch: int = 512  # at most this many units per brain token (regions are split into patches)
    steps: int = 120
    batch_size: int = 16
    lr: float = 1e-3  # AdamW, linear warm-up then cosine to a tenth
    contrastive: float = 1.0  # weight of the InfoNCE term beside the LM loss
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


class BrainQFormer(nn.Module):
    """responses float ``[b, U]`` -> prefix float ``[b, Q, hidden]`` and pooled query ``[b, emb]``."""

    def __init__(self, groups: np.ndarray, hidden: int, emb_dim: int, config: QFormerConfig, scale: float):
        super().__init__()
        groups = torch.as_tensor(np.asarray(groups, np.int64))
        self.n_tokens = int(groups.max()) + 1
        self.hidden, self.emb_dim, self.config = hidden, emb_dim, config
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
        self.queries = nn.Parameter(torch.randn(config.queries, d) * 0.02)
        self.qformer = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(d, config.heads, 2 * d, config.dropout, batch_first=True, norm_first=True),
            config.layers, norm=nn.LayerNorm(d),
        )
        self.to_prefix = nn.Linear(d, hidden)
        self.gain = nn.Parameter(torch.full((hidden,), float(scale)))
        self.to_embedding = nn.Linear(d, emb_dim)
        self.reconstruct = nn.ModuleList(nn.Linear(d, s) for s in self.sizes)  # masked-unit pretraining only

    def describe(self) -> dict:
        return {"hidden": self.hidden, "emb_dim": self.emb_dim, "config": self.config.to_dict()}

    def tokens(self, responses: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encoded brain tokens float ``[b, G, dim]``; ``mask`` (bool ``[b, U]``) zeroes units."""
        x = (responses.float() - self.mean) / self.std
        if mask is not None:
            x = x.masked_fill(mask, 0.0)
        x = x[:, self.order]
        pieces = torch.split(x, self.sizes, dim=1)
        tokens = torch.stack([layer(p) for layer, p in zip(self.embed, pieces, strict=True)], dim=1) + self.position
        return self.encoder(tokens)

    def forward(self, responses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(prefix ``[b, Q, hidden]`` at the LM's embedding scale, pooled ``[b, emb_dim]`` unit length)."""
        memory = self.tokens(responses)
        q = self.qformer(self.queries.expand(len(responses), -1, -1), memory)
        prefix = nn.functional.rms_norm(self.to_prefix(q), (self.hidden,)) * self.gain
        pooled = nn.functional.normalize(self.to_embedding(q.mean(1)), dim=-1)
        return prefix, pooled

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
                     mask_ratio: float = 0.5, seed: int = 0, cancel: Callable[[], bool] | None = None) -> list[float]:
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
    return losses


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
    z-scored with the training responses' mean and standard deviation. With
    ``config.pretrain_steps`` > 0 the encoder is pretrained first on ``pretrain_responses`` (default:
    ``responses``). Seeded (``config.seed``): same inputs, same weights on the same machine.
    ``report(step, steps, loss)`` after each step (running mean of the last 10 total losses);
    ``cancel()`` before each step (raises :class:`Cancelled`). Returns (model in eval mode on CPU,
    history {"loss", "lm_loss", "contrastive_loss", "pretrain_loss", "seconds", "step_seconds"}).
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
    model = BrainQFormer(groups, lm.hidden_size, embeddings.shape[1], config, lm.embedding_rms)
    model.mean.copy_(torch.from_numpy(responses.mean(0)))
    model.std.copy_(torch.from_numpy(responses.std(0)).clamp_min(1e-6))
    t0 = time.perf_counter()
    pre_losses: list[float] = []
    if config.pretrain_steps > 0:
        pre = responses if pretrain_responses is None else np.asarray(pretrain_responses, np.float32)
        pre_losses = pretrain_encoder(model, pre, config.pretrain_steps, batch_size=config.batch_size, lr=config.lr,
                                      mask_ratio=config.mask_ratio, seed=config.seed, cancel=cancel)
    model.to(lm.device).train()
    ids, mask = lm.tokenize(list(texts), config.max_tokens)
    x_all, e_all = torch.from_numpy(responses), torch.from_numpy(embeddings)
    params = [p for name, p in model.named_parameters() if not name.startswith("reconstruct.")]
    optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.01)
    order = torch.empty(0, dtype=torch.long)
    losses, lm_losses, con_losses = [], [], []
    for step in range(config.steps):
        if cancel is not None and cancel():
            raise Cancelled(f"cancelled at step {step} of {config.steps}")
        if len(order) < config.batch_size:
            order = torch.cat([order, torch.randperm(n, generator=gen)])
        batch, order = order[: config.batch_size], order[config.batch_size:]
        for group in optimiser.param_groups:
            group["lr"] = config.lr * _schedule(step, config.steps)
        prefix, pooled = model(x_all[batch].to(lm.device))
        width = int(mask[batch].sum(1).max())
        lm_loss = lm.prefix_loss(prefix, ids[batch, :width], mask[batch, :width])
        con = contrastive_loss(pooled, e_all[batch].to(lm.device), config.temperature)
        loss = lm_loss + config.contrastive * con
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        losses.append(float(loss.detach()))
        lm_losses.append(float(lm_loss.detach()))
        con_losses.append(float(con.detach()))
        if report is not None:
            report(step + 1, config.steps, float(np.mean(losses[-10:])))
    seconds = time.perf_counter() - t0
    model.eval().cpu()
    return model, {"loss": losses, "lm_loss": lm_losses, "contrastive_loss": con_losses, "pretrain_loss": pre_losses,
                   "seconds": seconds, "step_seconds": seconds / max(1, config.steps)}


def generate_qformer_captions(
    lm: LanguageModel, model: BrainQFormer, responses: np.ndarray, *, max_new_tokens: int = 30, num_beams: int = 1,
    seed: int = 0, batch_size: int = 32, progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> list[str]:
    """One caption per row of ``responses`` (float ``[n, U]``), deterministic (greedy or beam)."""
    responses = np.asarray(responses, np.float32)
    model = model.to(lm.device).eval()

    def batch(rows: list[int]) -> list[str]:
        with torch.inference_mode():
            prefix, _ = model(torch.from_numpy(responses[rows]).to(lm.device))
        return lm.generate(prefix, max_new_tokens=max_new_tokens, num_beams=num_beams, seed=seed)

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
    model = BrainQFormer(tensors["groups"].numpy(), shape["hidden"], shape["emb_dim"], QFormerConfig(**shape["config"]), 1.0)
    model.load_state_dict(tensors)
    return model.eval(), json.loads(meta.get("extra", "{}"))
