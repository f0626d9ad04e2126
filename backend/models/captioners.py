"""Captioners: images -> one caption each, batched, greedy (deterministic) by default.

One small class per architecture family, all loaded with the library's own ``from_pretrained``
from the local folder :func:`backend.models.weights.require_weights` gives:

    blip                    BlipForConditionalGeneration (+ optional text prefix "prompt")
    blip2                   Blip2ForConditionalGeneration (+ optional "prompt")
    git                     GitForCausalLM
    vision-encoder-decoder  VisionEncoderDecoderModel (e.g. ViT + GPT-2)
    florence2               Florence2ForConditionalGeneration with the task "prompt" "<CAPTION>"
    simulated-captioner     the demo world's captioners; read the reference caption, not pixels

Generation parameters are the spec's ``defaults`` overridden per call; :meth:`Captioner.params`
returns the effective set (what a cache key must include). Unknown parameters are an error, so a
typo never silently runs the defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from backend.models.device import Progress, dtype_kwargs, run_batched
from backend.models.registry import ModelSpec
from backend.models.weights import check_config, fingerprint, from_pretrained_strict, loading, require_weights

#: Parameters every transformers captioner understands (``prompt`` only where noted).
GENERATION_PARAMS = ("max_new_tokens", "min_new_tokens", "num_beams", "repetition_penalty")


class Captioner:
    """Base: ``caption(images) -> list[str]``. Subclasses implement :meth:`_caption_batch`."""

    #: Names accepted as **params (besides the spec's defaults).
    param_names: tuple[str, ...] = GENERATION_PARAMS

    def __init__(self, spec: ModelSpec, device: str, dtype: torch.dtype):
        unknown = set(spec.defaults) - set(self.param_names)
        if unknown:  # a typo in models.json must not be silently ignored
            raise ValueError(f"{spec.id}: unknown default parameter(s) {sorted(unknown)}; "
                             f"a {spec.architecture} captioner takes {list(self.param_names)}")
        self.spec = spec
        self.device = device
        self.dtype = dtype
        self.revision = fingerprint(spec)

    @property
    def id(self) -> str:
        return self.spec.id

    def params(self, **overrides: Any) -> dict[str, Any]:
        """The spec's defaults with ``overrides`` applied; ValueError on an unknown name."""
        unknown = set(overrides) - set(self.param_names)
        if unknown:
            raise ValueError(f"{self.id} does not take {sorted(unknown)}; it takes {list(self.param_names)}")
        merged = {**self.spec.defaults, **{k: v for k, v in overrides.items() if v is not None}}
        return dict(sorted(merged.items()))

    def caption(
        self,
        images: Sequence[Image.Image | np.ndarray],
        *,
        references: Sequence[str | None] | None = None,
        batch_size: int = 8,
        progress: Progress | None = None,
        cancel: Callable[[], bool] | None = None,
        **params: Any,
    ) -> list[str]:
        """One caption per image, in order. ``references`` (the dataset's own captions) are read
        only by simulated captioners. Batched results equal one-by-one results."""
        settings = self.params(**params)
        if references is not None and len(references) != len(images):
            raise ValueError(f"{len(references)} references for {len(images)} images")
        refs = list(references) if references is not None else [None] * len(images)
        items = list(zip(images, refs, strict=True))
        return run_batched(lambda batch: self._caption_batch([_rgb(im) for im, _ in batch],
                                                             [r for _, r in batch], settings),
                           items, batch_size, progress, cancel)

    def _caption_batch(self, images: list[Image.Image], references: list[str | None],
                       params: dict[str, Any]) -> list[str]:
        raise NotImplementedError


def _rgb(image: Image.Image | np.ndarray) -> Image.Image:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    return image if image.mode == "RGB" else image.convert("RGB")


# --------------------------------------------------------------------------- transformers


class TransformersCaptioner(Captioner):
    """A transformers image-to-text model with a processor; the shared generate/decode path."""

    model_class: str = ""  # name in transformers
    model_types: tuple[str, ...] = ()  # the config.json model_type(s) it loads

    def __init__(self, spec: ModelSpec, device: str, dtype: torch.dtype):
        super().__init__(spec, device, dtype)
        import transformers

        folder = require_weights(spec)
        check_config(spec, folder, "model_type", self.model_types)
        with loading(spec, folder):
            cls = getattr(transformers, self.model_class)
            model = from_pretrained_strict(cls, spec, folder, **dtype_kwargs("transformers", dtype))
            self.model = model.to(device).eval()
            self._load_processor(folder)

    def _load_processor(self, folder) -> None:
        from transformers import AutoProcessor

        self.processor = AutoProcessor.from_pretrained(folder)
        self.tokenizer = self.processor.tokenizer

    def _inputs(self, images: list[Image.Image], params: dict[str, Any]) -> dict[str, torch.Tensor]:
        return dict(self.processor(images=images, return_tensors="pt"))

    def _caption_batch(self, images, references, params):
        inputs = {k: v.to(self.device) for k, v in self._inputs(images, params).items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        generate = {k: params[k] for k in GENERATION_PARAMS if k in params}
        with torch.inference_mode():
            out = self.model.generate(**inputs, do_sample=False, **generate)
        if self._echoes_prompt() and "input_ids" in inputs:
            out = out[:, inputs["input_ids"].shape[1]:]
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]

    def _echoes_prompt(self) -> bool:
        """Whether generate() returns the input ids before the new tokens (decoder-only models)."""
        return not self.model.config.is_encoder_decoder


class BlipCaptioner(TransformersCaptioner):
    """BLIP; an optional ``prompt`` is a caption prefix ("a photography of"), kept in the output
    as BLIP's own decoding does."""

    model_class = "BlipForConditionalGeneration"
    model_types = ("blip",)
    param_names = GENERATION_PARAMS + ("prompt",)

    def _inputs(self, images, params):
        prompt = params.get("prompt")
        if prompt:
            return dict(self.processor(images=images, text=[prompt] * len(images), return_tensors="pt"))
        return dict(self.processor(images=images, return_tensors="pt"))

    def _echoes_prompt(self) -> bool:
        # BLIP rewrites its prompt ids before generating; the prefix stays in the caption.
        return False


class Blip2Captioner(TransformersCaptioner):
    """BLIP-2: query tokens into a frozen language model; ``prompt`` (default none) precedes the
    caption and is not part of the output."""

    model_class = "Blip2ForConditionalGeneration"
    model_types = ("blip-2",)
    param_names = GENERATION_PARAMS + ("prompt",)

    def _inputs(self, images, params):
        # Always pass text (empty by default) so the image tokens + BOS prefix is explicit and
        # can be cut from the output by its length.
        text = [params.get("prompt") or ""] * len(images)
        return dict(self.processor(images=images, text=text, return_tensors="pt"))

    def _echoes_prompt(self) -> bool:
        return bool(self.model.config.use_decoder_only_language_model)  # OPT yes, Flan-T5 no


class GitCaptioner(TransformersCaptioner):
    model_class = "GitForCausalLM"
    model_types = ("git",)

    def _inputs(self, images, params):
        # Pixels only: GIT starts from its own [CLS] token, so there is no prompt to cut.
        return {"pixel_values": self.processor(images=images, return_tensors="pt")["pixel_values"]}


class VisionEncoderDecoderCaptioner(TransformersCaptioner):
    """An image encoder + text decoder pair (ViT + GPT-2): image processor and tokenizer are
    saved separately, without a combined processor."""

    model_class = "VisionEncoderDecoderModel"
    model_types = ("vision-encoder-decoder",)

    def _load_processor(self, folder) -> None:
        from transformers import AutoImageProcessor, AutoTokenizer

        self.image_processor = AutoImageProcessor.from_pretrained(folder)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)

    def _inputs(self, images, params):
        return {"pixel_values": self.image_processor(images=images, return_tensors="pt")["pixel_values"]}


class Florence2Captioner(TransformersCaptioner):
    """Florence-2 (transformers' native classes); ``prompt`` is the task token: "<CAPTION>",
    "<DETAILED_CAPTION>" or "<MORE_DETAILED_CAPTION>"."""

    model_class = "Florence2ForConditionalGeneration"
    model_types = ("florence2",)
    param_names = GENERATION_PARAMS + ("prompt",)
    TASKS = ("<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>")

    def _inputs(self, images, params):
        task = params.get("prompt") or "<CAPTION>"
        if task not in self.TASKS:
            raise ValueError(f"{self.id}: prompt must be one of {list(self.TASKS)}, got {task!r}")
        return dict(self.processor(images=images, text=[task] * len(images), return_tensors="pt"))


# ------------------------------------------------------------------------------ simulated


class SimulatedCaptioner(Captioner):
    """The demo world's captioners (see :mod:`backend.data.demo.captioners`). They read each
    image's reference caption -- parsed back into its scene -- instead of the pixels, so they
    need ``references`` and work only on demo-world stimuli.

    The noise of sim-noisy-words depends on (reference, ``seed``, ``rate``) only, not on the
    item's position, so batching, order and caching by content do not change a caption.
    """

    param_names = ("seed", "rate")

    def _caption_batch(self, images, references, params):
        from backend.data.demo.captioners import NOISY_WORD_RATE, simulated_caption
        from backend.data.demo.scenes import parse

        seed = int(params.get("seed", 0))
        rate = float(params.get("rate", NOISY_WORD_RATE))
        out = []
        for ref in references:
            if not ref:
                raise ValueError(f"{self.id} is a simulated captioner: it needs the demo world's reference "
                                 f"caption of every image (references=...), and one is missing")
            try:
                scene = parse(ref)
            except ValueError as err:
                raise ValueError(f"{self.id} is a simulated captioner and works only on demo-world stimuli; "
                                 f"{ref!r} is not a demo-world caption ({err})") from None
            out.append(simulated_caption(self.id, scene, seed, rate=rate))
        return out


# ------------------------------------------ architecture -> class (the pool builds from this)

CLASSES: dict[str, type[Captioner]] = {
    "blip": BlipCaptioner,
    "blip2": Blip2Captioner,
    "git": GitCaptioner,
    "vision-encoder-decoder": VisionEncoderDecoderCaptioner,
    "florence2": Florence2Captioner,
    "simulated-captioner": SimulatedCaptioner,
}

