"""Visual encoders trained toward language (Doerig et al. 2025; LLM-VEM), and their controls.

A network maps an image to a vector. Two backbones, plain torch (never torchvision or timm):

    cnn     a small residual CNN trained from scratch: a stem and ``len(widths)`` residual stages
            (each halves the resolution), global average pooling (the *penultimate* layer,
            ``widths[-1]`` features) and a linear head (the *embedding* layer). GroupNorm, not
            BatchNorm: no running statistics, so an image's features do not depend on its batch
            (batched inference equals one by one) and the untrained control is well scaled.
    tower   a registered image tower (CLIP vision), frozen, with a trained head: tower embedding
            -> Linear -> GELU (the *penultimate* layer, ``head_hidden`` features) -> Linear (the
            *embedding* layer).

Objectives (what the embedding layer is trained toward, per training image):

    cosine          1 - cosine(embedding, caption embedding) (Doerig et al.: images into the
                    language model's embedding of their captions)
    infonce         symmetric InfoNCE between the batch's image and caption embeddings with a
                    learnable temperature (CLIP-style; LLM-VEM's alignment loss)
    cosine+infonce  cosine + ``alignment_weight`` x InfoNCE
    category        the control: cross-entropy on multi-hot category labels (soft targets:
                    1/k on each of an image's k categories; the embedding layer has one logit
                    per category)

The untrained control is the same network with ``epochs=0`` (weights from the seed alone).

Augmentation (plain tensor ops, on the fly): a random crop of 80-100% of the side resized back,
a small shift in brightness and contrast. No horizontal flips: a flip turns "a dog to the left of
a car" into its opposite, which the caption would then contradict.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from backend.models.device import Cancelled

#: Bumped whenever training or the architecture changes what a configuration produces
#: (2: 80 epochs by default instead of 12; weights trained under version 1 are not reused).
VERSION = 2
BACKBONES = ("cnn", "tower")
OBJECTIVES = ("cosine", "infonce", "cosine+infonce", "category")
LAYERS = ("penultimate", "embedding")
#: ImageNet statistics, for the CNN's input normalisation (the tower uses its own processor's).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

Report = Callable[[int, int, str], None]


@dataclass(frozen=True)
class EncoderConfig:
    """What determines a trained network (with the training data and the seed).

    input_size:       side of the square input in pixels (the CNN's; the tower uses its own)
    widths:           channels of the CNN's residual stages
    stem_stride:      the stem convolution's stride (2: the stages start at half the input side,
                      which costs a quarter of the time at full resolution)
    head_hidden:      width of the tower head's hidden (penultimate) layer
    epochs:           passes over the training images (0: the untrained control). 80 by default:
                      from 1,000 scenes of 1-3 pictograms a network learns its objects slowly.
                      Measured on the demo world (64 px, network seed 0), at 12 epochs the
                      category network's loss fell only from 4.42 to 4.03 (ln 74 = 4.30; test
                      top-1 1.5%, chance 1.4%) and the language network retrieved 4% of the 200
                      test captions (top-1 by cosine to the centred caption embeddings); neither
                      beat the untrained network in the category regions. At 40 epochs: category
                      top-1 6.5%, language retrieval 16.5%; at 80 (seeds 0 and 1): category top-1
                      9.5% and 12.5% (top-5 28% and 36%), language retrieval 20.5% and 25%, and on
                      seeds 0-2 both beat the untrained network there (figures in
                      tests/test_visual_encoders_truth.py). A larger input was no shortcut: at
                      128 px, 20 epochs (4x the cost per epoch) the language network learned no
                      more than at 64 px, 12 epochs.
    batch_size, lr, weight_decay: AdamW with a cosine learning-rate schedule
    temperature:      InfoNCE's initial temperature (learnable; its logit scale is capped at 100)
    alignment_weight: weight of InfoNCE when combined with the cosine loss
    augment:          random crops and brightness / contrast during training
    center_targets:   train toward caption embeddings minus their training mean: captions share a
                      large common direction (cosine ~0.5 between any two), which a raw cosine
                      loss rewards first; centred, it rewards what tells captions apart
    """

    backbone: str = "cnn"
    objective: str = "cosine"
    input_size: int = 64
    widths: tuple[int, ...] = (16, 32, 64, 128)
    stem_stride: int = 2
    head_hidden: int = 256
    epochs: int = 80
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    temperature: float = 0.07
    alignment_weight: float = 1.0
    augment: bool = True
    center_targets: bool = True

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if not 16 <= self.input_size <= 512:
            raise ValueError(f"input_size must be between 16 and 512 pixels, got {self.input_size}")
        if self.epochs < 0 or self.batch_size < 2:
            raise ValueError(f"epochs must be >= 0 and batch_size >= 2, got {self.epochs} and {self.batch_size}")
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------ networks


class _Block(nn.Module):
    """Residual block: two 3x3 convolutions (the first may stride 2) plus a projected shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm1 = nn.GroupNorm(min(8, cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(min(8, cout), cout)
        self.skip = nn.Identity() if (cin == cout and stride == 1) else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.GroupNorm(min(8, cout), cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(y)) + self.skip(x))


class ResidualCNN(nn.Module):
    """images float [b, 3, s, s] (normalised) -> (penultimate [b, widths[-1]], embedding [b, out_dim])."""

    def __init__(self, widths: Sequence[int], out_dim: int, stem_stride: int = 2):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, stem_stride, 1, bias=False), nn.GroupNorm(min(8, widths[0]), widths[0]), nn.ReLU())
        stages, cin = [], widths[0]
        for w in widths:
            stages.append(_Block(cin, w, 2))
            cin = w
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(cin, out_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.stages(self.stem(x)).mean(dim=(2, 3))
        return pooled, self.head(pooled)


class TowerHead(nn.Module):
    """tower embeddings [b, d_in] -> (penultimate [b, hidden], embedding [b, out_dim])."""

    def __init__(self, d_in: int, hidden: int, out_dim: int):
        super().__init__()
        self.hidden = nn.Linear(d_in, hidden)
        self.out = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.gelu(self.hidden(x))
        return h, self.out(h)


class VisualEncoder(nn.Module):
    """A backbone plus what training needs (InfoNCE's logit scale); ``tower`` is frozen and kept
    out of the state dict (it is a registered model: its own weights are on disk).

    ``forward(images uint8 [b, 3, s, s])`` -> (penultimate, embedding); the resizing and
    normalisation each backbone needs happen inside.
    """

    def __init__(self, config: EncoderConfig, out_dim: int, tower=None):
        super().__init__()
        self.config = config
        self.out_dim = int(out_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.temperature)))
        if config.backbone == "cnn":
            self.net: nn.Module = ResidualCNN(config.widths, out_dim, config.stem_stride)
            self._tower = None
        else:
            if tower is None:
                raise ValueError("the tower backbone needs a loaded image tower")
            self._tower = tower  # not a submodule: frozen, not saved
            self.net = TowerHead(tower.dim, config.head_hidden, out_dim)

    @property
    def side(self) -> int:
        return self.config.input_size if self._tower is None else self._tower.side

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.float() / 255.0
        if x.shape[-1] != self.side or x.shape[-2] != self.side:
            x = F.interpolate(x, size=(self.side, self.side), mode="bilinear", align_corners=False, antialias=True)
        if self._tower is None:
            mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
            return self.net((x - mean) / std)
        with torch.no_grad():
            base = self._tower.encode(x)
        return self.net(base)


class FrozenTower:
    """A registered CLIP vision tower, frozen: ``encode(x float [b, 3, side, side] in 0..1)`` ->
    float [b, dim] (its projected image embedding), normalised with its processor's statistics."""

    def __init__(self, embedder):
        self.model = embedder.model
        for p in self.model.parameters():
            p.requires_grad_(False)
        processor = embedder.processor
        size = getattr(processor, "crop_size", None) or getattr(processor, "size", None) or {}
        self.side = int(size.get("height") or size.get("shortest_edge") or self.model.config.image_size)
        self.mean = torch.tensor(processor.image_mean).view(1, 3, 1, 1)
        self.std = torch.tensor(processor.image_std).view(1, 3, 1, 1)
        self.dim = int(self.model.config.projection_dim)
        self.dtype = embedder.dtype

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        return self.model(pixel_values=x.to(self.dtype)).image_embeds.float()


def build_encoder(config: EncoderConfig, out_dim: int, seed: int, tower: FrozenTower | None = None) -> VisualEncoder:
    """The network with its initial weights, a function of ``seed`` alone."""
    torch.manual_seed(seed)
    return VisualEncoder(config, out_dim, tower)


# ------------------------------------------------------------------------------------ training


def category_targets(categories: Sequence[str | None]) -> tuple[np.ndarray, list[str]]:
    """(float32 [n, k] multi-hot labels, the k category names, sorted) from one string per image;
    a string may list several categories separated by commas. Raises ValueError with one line if
    no image has a category."""
    lists = [[c.strip() for c in (text or "").split(",") if c.strip()] for text in categories]
    names = sorted({c for cs in lists for c in cs})
    if not names:
        raise ValueError("this dataset has no stimulus categories; the category-trained control needs them")
    index = {c: i for i, c in enumerate(names)}
    out = np.zeros((len(lists), len(names)), np.float32)
    for row, cs in enumerate(lists):
        out[row, [index[c] for c in cs]] = 1.0
    return out, names


def loss_fn(model: VisualEncoder, embedding: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The configured objective's loss for one batch (target: caption embeddings or multi-hot labels)."""
    objective = model.config.objective
    if objective == "category":
        # Soft-target cross-entropy over the categories (an image with k labels puts 1/k on each):
        # with dozens of rare categories, per-label sigmoids first learn only the prior (all
        # absent) and, measured on the demo world, were still there after 8 epochs.
        share = target / target.sum(dim=1, keepdim=True).clamp(min=1.0)
        return -(share * F.log_softmax(embedding, dim=1)).sum(dim=1).mean()
    cosine = 1.0 - F.cosine_similarity(embedding, target, dim=-1).mean()
    if objective == "cosine":
        return cosine
    image, text = F.normalize(embedding, dim=-1), F.normalize(target, dim=-1)
    logits = model.logit_scale.clamp(max=math.log(100.0)).exp() * image @ text.T
    labels = torch.arange(len(logits), device=logits.device)
    infonce = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
    return infonce if objective == "infonce" else cosine + model.config.alignment_weight * infonce


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """uint8 [b, 3, s, s] -> float [b, 3, s, s] in 0..255: a random crop of 80-100% of the side
    resized back, brightness x 0.8-1.2 and contrast x 0.8-1.2 about the image mean."""
    b, _, s, _ = images.shape
    x = images.float()
    out = torch.empty_like(x)
    scales = 0.8 + 0.2 * torch.rand(b, generator=generator)
    for i in range(b):
        side = max(8, int(round(float(scales[i]) * s)))
        top, left = (int(torch.randint(0, s - side + 1, (1,), generator=generator)) for _ in range(2))
        crop = x[i : i + 1, :, top : top + side, left : left + side]
        out[i] = F.interpolate(crop, size=(s, s), mode="bilinear", align_corners=False)[0] if side != s else crop[0]
    brightness = (0.8 + 0.4 * torch.rand(b, 1, 1, 1, generator=generator))
    contrast = (0.8 + 0.4 * torch.rand(b, 1, 1, 1, generator=generator))
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return ((out - mean) * contrast + mean * brightness).clamp(0, 255)


def train_encoder(
    model: VisualEncoder,
    images: torch.Tensor,
    targets: np.ndarray,
    *,
    seed: int,
    device: str = "cpu",
    report: Report | None = None,
    cancel: Callable[[], bool] | None = None,
) -> dict:
    """Train ``model`` in place on ``images`` (uint8 [n, 3, s, s], the training images only) toward
    ``targets`` (float32 [n, d]: caption embeddings, or multi-hot labels for the category
    objective). Shuffling and augmentation follow ``seed``. ``cancel()`` is checked between
    steps and raises Cancelled (the caller has written nothing yet).

    Returns {"seconds", "epochs", "steps", "epoch_seconds": [...], "loss": [mean per epoch],
    "images_per_second", "device"}.
    """
    config = model.config
    say = report or (lambda done, total, message: None)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    n = len(images)
    batch = min(config.batch_size, n)
    steps_per_epoch = max(1, n // batch)  # full batches only: InfoNCE needs its negatives
    total = steps_per_epoch * config.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1))))
    generator = torch.Generator().manual_seed(seed)
    target = torch.as_tensor(np.asarray(targets, np.float32))
    if config.objective != "category" and config.center_targets:
        target = target - target.mean(dim=0, keepdim=True)
    history: dict = {"epoch_seconds": [], "loss": []}
    started = time.perf_counter()
    step = 0
    for epoch in range(config.epochs):
        epoch_started, losses = time.perf_counter(), []
        order = torch.randperm(n, generator=generator)
        for k in range(steps_per_epoch):
            if cancel is not None and cancel():
                raise Cancelled(f"cancelled at epoch {epoch + 1}, step {step}")
            rows = order[k * batch : (k + 1) * batch]
            x = augment(images[rows], generator) if config.augment else images[rows].float()
            _, embedding = model(x.to(device))
            loss = loss_fn(model, embedding, target[rows].to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            step += 1
            losses.append(float(loss.detach()))
            say(step, total, f"epoch {epoch + 1} of {config.epochs}, step {step} of {total}, loss {np.mean(losses):.4f}")
        history["epoch_seconds"].append(round(time.perf_counter() - epoch_started, 2))
        history["loss"].append(round(float(np.mean(losses)), 5))
    seconds = time.perf_counter() - started
    model.eval()
    return {
        **history, "seconds": round(seconds, 2), "epochs": config.epochs, "steps": step, "device": str(device),
        "images_per_second": round(step * batch / seconds, 1) if seconds > 0 and step else None,
    }


@torch.no_grad()
def encoder_features(model: VisualEncoder, images: torch.Tensor, *, batch_size: int = 64, device: str = "cpu") -> dict[str, np.ndarray]:
    """{"penultimate": float32 [n, p], "embedding": float32 [n, d]} for uint8 images [n, 3, s, s]
    (no augmentation; the model in eval mode)."""
    model.to(device).eval()
    parts: dict[str, list] = {layer: [] for layer in LAYERS}
    for start in range(0, len(images), batch_size):
        pen, emb = model(images[start : start + batch_size].to(device))
        parts["penultimate"].append(pen.float().cpu().numpy())
        parts["embedding"].append(emb.float().cpu().numpy())
    if not len(images):
        return {layer: np.zeros((0, 0), np.float32) for layer in LAYERS}
    return {layer: np.concatenate(v).astype(np.float32) for layer, v in parts.items()}


# ---------------------------------------------------------------------------- serialisation


def encoder_to_bytes(model: VisualEncoder, extra: dict | None = None) -> bytes:
    """safetensors bytes of the trained parameters (never the frozen tower's), with the
    configuration, output size and ``extra`` (JSON) in the metadata."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"config": json.dumps(model.config.to_dict()), "out_dim": str(model.out_dim), "version": str(VERSION),
            "extra": json.dumps(extra or {})}
    return save(tensors, metadata=meta)


def encoder_from_bytes(data: bytes, tower: FrozenTower | None = None) -> tuple[VisualEncoder, dict]:
    """(model in eval mode on CPU, extra) from :func:`encoder_to_bytes`."""
    from safetensors.torch import load

    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    meta = header.get("__metadata__", {})
    raw = json.loads(meta["config"])
    config = EncoderConfig(**{**raw, "widths": tuple(raw["widths"])})
    model = VisualEncoder(config, int(meta["out_dim"]), tower)
    model.load_state_dict(load(data))
    return model.eval(), json.loads(meta.get("extra", "{}"))


def images_tensor(images: Sequence, side: int) -> torch.Tensor:
    """uint8 [n, 3, side, side] from PIL images (resized with a box filter: no aliasing)."""
    from PIL import Image

    arrays = [np.asarray(im.convert("RGB").resize((side, side), Image.Resampling.BOX)) for im in images]
    if not arrays:
        return torch.zeros((0, 3, side, side), dtype=torch.uint8)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
