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
VERSION = 1

StepReport = Callable[[int, int, float], None]  # (step, steps, loss in nats per token)


@dataclass(frozen=True)
class PrefixConfig:
    """How a prefix decoder is built and trained (every field is part of its cache key)."""

    prefix_length: int = 8  # k soft-prefix vectors
    width: int = 1024  # the MLP's hidden width
    steps: int = 120
    batch_size: int = 32
    lr: float = 2e-3  # AdamW, cosine decay to a tenth, 10 warm-up steps
    noise: float = 0.3  # expected length of the Gaussian noise added to each unit input vector
    seed: int = 0
    max_tokens: int = 40  # caption tokens taught (the rest is cut)

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


def train_prefix_decoder(
    lm: LanguageModel,
    vectors: np.ndarray,
    texts: Sequence[str],
    config: PrefixConfig = PrefixConfig(),
    *,
    report: StepReport | None = None,
    cancel: Callable[[], bool] | None = None,
) -> tuple[PrefixMapper, dict]:
    """Train a :class:`PrefixMapper` so that ``lm`` writes ``texts[i]`` from ``vectors[i]``.

    vectors: float ``[n, d]`` (text embeddings, or predictions of them); texts: n captions.
    Batches of ``config.batch_size`` pairs drawn without replacement (an epoch at a time) from a
    generator seeded with ``config.seed``; the same inputs and config give the same weights on
    the same machine. ``report(step, steps, loss)`` after every step (loss: running mean over the
    last 10 steps, nats per token); ``cancel()`` is checked before each step (raises Cancelled).
    Returns (mapper on CPU in eval mode, history {"loss": [...], "seconds": s, "step_seconds": s}).
    """
    vectors = np.asarray(vectors, np.float32)
    if vectors.ndim != 2 or len(vectors) != len(texts) or len(texts) < 2:
        raise ValueError(f"expected vectors [n, d] and n >= 2 texts, got {vectors.shape} and {len(texts)} texts")
    torch.manual_seed(config.seed)  # the MLP's initial weights
    gen = torch.Generator().manual_seed(config.seed)  # batch order and noise
    mapper = PrefixMapper(vectors.shape[1], lm.hidden_size, config.prefix_length, config.width, lm.embedding_rms)
    mapper.centre.copy_(torch.from_numpy(vectors.mean(0)))
    mapper.to(lm.device).train()
    ids, mask = lm.tokenize(list(texts), config.max_tokens)
    x_all = torch.from_numpy(vectors)
    optimiser = torch.optim.AdamW(mapper.parameters(), lr=config.lr, weight_decay=0.01)
    warm = min(10, max(1, config.steps // 10))

    def lr_at(step: int) -> float:  # linear warm-up, then cosine from lr down to lr / 10
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, config.steps - warm)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))

    order = torch.empty(0, dtype=torch.long)
    losses: list[float] = []
    t0 = time.perf_counter()
    for step in range(config.steps):
        if cancel is not None and cancel():
            raise Cancelled(f"cancelled at step {step} of {config.steps}")
        if len(order) < config.batch_size:
            order = torch.cat([order, torch.randperm(len(texts), generator=gen)])
        batch, order = order[: config.batch_size], order[config.batch_size:]
        for group in optimiser.param_groups:
            group["lr"] = config.lr * lr_at(step)
        noise_gen = gen if lm.device == "cpu" else None
        prefix = mapper(x_all[batch].to(lm.device), noise=config.noise, generator=noise_gen)
        width = int(mask[batch].sum(1).max())  # drop columns that are padding for the whole batch
        loss = lm.prefix_loss(prefix, ids[batch, :width], mask[batch, :width])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(mapper.parameters(), 1.0)
        optimiser.step()
        losses.append(float(loss.detach()))
        if report is not None:
            report(step + 1, config.steps, float(np.mean(losses[-10:])))
    seconds = time.perf_counter() - t0
    mapper.eval().cpu()
    return mapper, {"loss": losses, "seconds": seconds, "step_seconds": seconds / max(1, config.steps)}


def generate_captions(
    lm: LanguageModel,
    mapper: PrefixMapper,
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
        return lm.generate(prefix, max_new_tokens=max_new_tokens, num_beams=num_beams, seed=seed)

    return run_batched(batch, list(range(len(vectors))), batch_size, progress, cancel)


# ------------------------------------------------------------------------------ serialisation


def mapper_to_bytes(mapper: PrefixMapper, extra: dict | None = None) -> bytes:
    """safetensors bytes of the mapper, its shape in the metadata (plus ``extra``, JSON)."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in mapper.state_dict().items()}
    meta = {"mapper": json.dumps(mapper.describe()), "version": str(VERSION), "extra": json.dumps(extra or {})}
    return save(tensors, metadata=meta)


def mapper_from_bytes(data: bytes) -> tuple[PrefixMapper, dict]:
    """(mapper in eval mode on CPU, extra) from :func:`mapper_to_bytes`."""
    from safetensors.torch import load

    tensors = load(data)
    # The header: 8 bytes of little-endian length, then JSON holding "__metadata__".
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    meta = header.get("__metadata__", {})
    shape = json.loads(meta["mapper"])
    mapper = PrefixMapper(shape["in_dim"], shape["hidden"], shape["prefix_length"], shape["width"], 1.0)
    mapper.load_state_dict(tensors)
    return mapper.eval(), json.loads(meta.get("extra", "{}"))
