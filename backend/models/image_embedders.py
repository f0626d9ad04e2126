"""Image embedders: images -> float32 [n, d] L2-normalised vectors, batched.

    clip-vision  CLIPVisionModelWithProjection + its image processor: CLIP's image tower, read
                 from a whole CLIP checkpoint (the text weights are not loaded). Used for image
                 metrics (embedding 2-way identification) and LLM-VEM's image features.
    scene-reader (simulated)
                 the demo world's stand-in: reads a pictogram scene from its pixels and gives its
                 concept vector (objects, their groups, the background); see
                 :mod:`backend.data.demo.scene_reader`. Meaningful on demo-world pictures only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from backend.models.device import Progress, dtype_kwargs, run_batched
from backend.models.registry import ModelSpec
from backend.models.weights import (
    check_config, fingerprint, from_pretrained_strict, loading, quiet_transformers, require_weights,
)


class ImageEmbedder:
    """Base: ``embed(images) -> float32 [n, dim]``, rows of unit length."""

    def __init__(self, spec: ModelSpec, device: str, dtype: torch.dtype):
        self.spec = spec
        self.device = device
        self.dtype = dtype
        self.revision = fingerprint(spec)

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def dim(self) -> int:
        raise NotImplementedError

    def embed(self, images: Sequence[Image.Image | np.ndarray], batch_size: int = 32,
              progress: Progress | None = None, cancel: Callable[[], bool] | None = None) -> np.ndarray:
        """float32 [len(images), dim], L2-normalised; batched results equal one-by-one (to ~1e-6)."""
        rows = run_batched(self._embed_batch, list(images), batch_size, progress, cancel)
        if not rows:
            return np.zeros((0, self.dim), np.float32)
        return np.stack(rows).astype(np.float32, copy=False)

    def _embed_batch(self, images: list) -> np.ndarray:
        raise NotImplementedError


class ClipImageEmbedder(ImageEmbedder):
    def __init__(self, spec: ModelSpec, device: str, dtype: torch.dtype):
        super().__init__(spec, device, dtype)
        from transformers import AutoImageProcessor, CLIPVisionModelWithProjection

        folder = require_weights(spec)
        # A whole CLIP checkpoint or the tower saved alone.
        check_config(spec, folder, "model_type", ("clip", "clip_vision_model"))
        with loading(spec, folder), quiet_transformers():
            model = from_pretrained_strict(CLIPVisionModelWithProjection, spec, folder,
                                           **dtype_kwargs("transformers", dtype))
            self.model = model.to(device).eval()
            self.processor = AutoImageProcessor.from_pretrained(folder)

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)

    def _embed_batch(self, images: list) -> np.ndarray:
        rgb = [Image.fromarray(im) if isinstance(im, np.ndarray) else im for im in images]
        rgb = [im if im.mode == "RGB" else im.convert("RGB") for im in rgb]
        pixels = self.processor(images=rgb, return_tensors="pt")["pixel_values"].to(self.device, self.dtype)
        with torch.inference_mode():
            emb = self.model(pixel_values=pixels).image_embeds.float()
        return torch.nn.functional.normalize(emb, dim=-1).cpu().numpy()


class SceneReaderEmbedder(ImageEmbedder):
    """The demo world's simulated image embedder (no weights; CPU whatever the device)."""

    @property
    def dim(self) -> int:
        from backend.data.demo.scene_reader import DIM

        return DIM

    def _embed_batch(self, images: list) -> np.ndarray:
        from backend.data.demo.scene_reader import embed_scenes

        return embed_scenes(images)


CLASSES: dict[str, type[ImageEmbedder]] = {"clip-vision": ClipImageEmbedder, "scene-reader": SceneReaderEmbedder}

