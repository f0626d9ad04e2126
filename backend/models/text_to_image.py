"""Text-to-image: prompts -> one RGB image each, reproducible from a seed.

    stable-diffusion, stable-diffusion-xl  diffusers' AutoPipelineForText2Image.from_pretrained
                                           on the local folder (SD-Turbo, SDXL-Turbo, SD 1.5, ...)
    scene-renderer                         the demo world's stand-in: draws the pictogram scene
                                           the text describes (simulated)

Prompt ``i`` of a call draws its starting noise from its own CPU ``torch.Generator`` seeded with
``seed + i`` (or ``seeds[i]``), so a batch gives the same images as one-by-one calls with those
seeds, on any device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from backend.models.device import Progress, dtype_kwargs, run_batched
from backend.models.registry import ModelSpec
from backend.models.weights import check_config, fingerprint, loading, require_weights


class TextToImage:
    """Base: ``generate(prompts) -> list[PIL.Image.Image]`` (RGB, ``size`` x ``size``)."""

    def __init__(self, spec: ModelSpec, device: str, dtype: torch.dtype):
        unknown = set(spec.defaults) - {"size", "steps", "guidance"}
        if unknown:  # a typo in models.json must not be silently ignored
            raise ValueError(f"{spec.id}: unknown default parameter(s) {sorted(unknown)}; "
                             f"text-to-image models take size, steps and guidance")
        self.spec = spec
        self.device = device
        self.dtype = dtype
        self.revision = fingerprint(spec)

    @property
    def id(self) -> str:
        return self.spec.id

    def params(self, size: int | None = None, steps: int | None = None,
               guidance: float | None = None) -> dict[str, Any]:
        """Effective (size, steps, guidance): the arguments, else the spec's defaults."""
        d = self.spec.defaults
        out = {"size": int(size if size is not None else d.get("size", 512)),
               "steps": int(steps if steps is not None else d.get("steps", 25)),
               "guidance": float(guidance if guidance is not None else d.get("guidance", 7.5))}
        if out["size"] < 8 or out["steps"] < 1:
            raise ValueError(f"size must be >= 8 and steps >= 1, got size={out['size']} steps={out['steps']}")
        return out

    def generate(
        self,
        prompts: Sequence[str],
        *,
        seed: int = 0,
        seeds: Sequence[int] | None = None,
        size: int | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        batch_size: int = 4,
        progress: Progress | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> list[Image.Image]:
        """One image per prompt; prompt ``i`` uses seed ``seeds[i]`` if given, else ``seed + i``."""
        if isinstance(prompts, str):
            raise TypeError("generate() takes a list of prompts, not one string")
        if seeds is not None and len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
        per_item = [int(s) for s in seeds] if seeds is not None else [seed + i for i in range(len(prompts))]
        settings = self.params(size, steps, guidance)
        items = list(zip(prompts, per_item, strict=True))
        return run_batched(lambda batch: self._generate_batch([p for p, _ in batch], [s for _, s in batch],
                                                              **settings),
                           items, batch_size, progress, cancel)

    def _generate_batch(self, prompts: list[str], seeds: list[int], *, size: int, steps: int,
                        guidance: float) -> list[Image.Image]:
        raise NotImplementedError


#: The pipeline classes (model_index.json ``_class_name``) each architecture loads.
PIPELINES: dict[str, tuple[str, ...]] = {
    "stable-diffusion": ("StableDiffusionPipeline",),
    "stable-diffusion-xl": ("StableDiffusionXLPipeline",),
}


class DiffusersTextToImage(TextToImage):
    def __init__(self, spec: ModelSpec, device: str, dtype: torch.dtype):
        super().__init__(spec, device, dtype)
        from diffusers import AutoPipelineForText2Image

        folder = require_weights(spec)
        check_config(spec, folder, "_class_name", PIPELINES[spec.architecture], file="model_index.json")
        kwargs: dict[str, Any] = dtype_kwargs("diffusers", dtype)
        if dtype == torch.float16 and _has_fp16_variant(folder):
            kwargs["variant"] = "fp16"  # read the half-size files instead of casting the full ones
        with loading(spec, folder):
            self.pipe = AutoPipelineForText2Image.from_pretrained(folder, **kwargs).to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self.scale = int(getattr(self.pipe, "vae_scale_factor", 8))

    def _generate_batch(self, prompts, seeds, *, size, steps, guidance):
        if size % self.scale:
            raise ValueError(f"{self.id}: size must be a multiple of {self.scale}, got {size}")
        # CPU generators: the same starting noise whatever the device.
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        with torch.inference_mode():
            out = self.pipe(prompt=list(prompts), generator=generators, num_inference_steps=steps,
                            guidance_scale=guidance, height=size, width=size, output_type="pil")
        return [im.convert("RGB") for im in out.images]


def _has_fp16_variant(folder: Path) -> bool:
    return any(folder.glob("unet/*.fp16.safetensors")) or any(folder.glob("transformer/*.fp16.safetensors"))


class SceneRenderer(TextToImage):
    """Draws the demo world's scene for the text (``scenes.interpret``: a forgiving reading that
    takes the object names, sizes, relation and background it finds). The seed jitters the layout
    as a real model's seed varies its image. Text naming no known object draws the empty plain
    background -- a blank reconstruction rather than an error in the middle of a batch.
    ``steps`` and ``guidance`` mean nothing here: they are ignored and left out of :meth:`params`."""

    def params(self, size: int | None = None, steps: int | None = None,
               guidance: float | None = None) -> dict[str, Any]:
        size = int(size if size is not None else self.spec.defaults.get("size", 256))
        if size < 8:
            raise ValueError(f"size must be >= 8, got {size}")
        return {"size": size}

    def _generate_batch(self, prompts, seeds, *, size, **_ignored):
        from backend.data.demo import scenes

        out = []
        for prompt, seed in zip(prompts, seeds, strict=True):
            try:
                pixels = scenes.render(scenes.interpret(prompt), size, jitter=seed)
            except ValueError:
                pixels = scenes.render_background("white background", size)
            out.append(Image.fromarray(pixels, "RGB"))
        return out


CLASSES: dict[str, type[TextToImage]] = {
    "stable-diffusion": DiffusersTextToImage,
    "stable-diffusion-xl": DiffusersTextToImage,
    "scene-renderer": SceneRenderer,
}

