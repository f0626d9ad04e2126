"""Language models: a frozen causal LM that reads soft-prefix vectors and writes text.

    causal-lm   AutoModelForCausalLM + AutoTokenizer from a local folder (hub snapshot, user folder)
                or, for SmolLM2-135M-Instruct offline, from its GGUF converted once into the cache
                (backend/models/gguf.py)

The LM never trains: every parameter has ``requires_grad=False`` and the model stays in eval mode.
What trains is whatever produces the prefix (the embedding-prefix decoder, the Brain Q-Former),
through :meth:`LanguageModel.prefix_loss`; :meth:`LanguageModel.generate` writes from a prefix.

Shapes: a prefix is float ``[batch, k, hidden]`` in the LM's input-embedding space (``hidden`` =
:attr:`LanguageModel.hidden_size`, 576 for SmolLM2-135M). A caption is taught as its tokens
followed by the end-of-text token, so generation knows where to stop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch

from backend.models.gguf import converted_folder
from backend.models.registry import ModelSpec
from backend.models.weights import (
    IncompatibleModel, fingerprint, from_pretrained_strict, gguf_file, loading, quiet_transformers, require_weights,
)

log = logging.getLogger(__name__)


class LanguageModel:
    """A frozen causal LM. ``prefix_loss`` trains a prefix through it; ``generate`` decodes one."""

    def __init__(self, spec: ModelSpec, device: str, dtype: torch.dtype,
                 progress: Callable[[str], None] | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.spec = spec
        self.device = device
        self.dtype = dtype
        self.revision = fingerprint(spec)
        folder = require_weights(spec)
        source = gguf_file(spec)
        if source is not None:
            folder = converted_folder(source, progress)  # dequantised once, keyed by the GGUF's hash
        with loading(spec, folder):
            model = from_pretrained_strict(AutoModelForCausalLM, spec, folder, dtype=dtype)
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
        if not getattr(model.config, "is_decoder", True) or model.config.is_encoder_decoder:
            raise IncompatibleModel(f"model {spec.id}: {folder} is not a causal (decoder-only) language model")
        self.model = model.to(device).eval()
        self.model.requires_grad_(False)
        tok = self.tokenizer
        self.eos_id = tok.eos_token_id if tok.eos_token_id is not None else tok.pad_token_id
        if self.eos_id is None:
            raise IncompatibleModel(f"model {spec.id}: its tokenizer has no end-of-text or padding token")
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.eos_id

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def hidden_size(self) -> int:
        """Width of the LM's input embeddings: the prefix's last dimension."""
        return int(self.model.get_input_embeddings().weight.shape[1])

    @property
    def embedding_rms(self) -> float:
        """Root-mean-square of the token embedding entries: the scale a prefix should have."""
        w = self.model.get_input_embeddings().weight
        return float(w.float().pow(2).mean().sqrt())

    def tokenize(self, texts: Sequence[str], max_tokens: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, mask) int64 ``[n, t]``: each text's tokens then end-of-text, right-padded.

        No beginning-of-text token: the prefix is the beginning. Texts longer than ``max_tokens``
        tokens are cut (the end-of-text token stays).
        """
        rows = [self.tokenizer(t.strip(), add_special_tokens=False).input_ids[: max_tokens - 1] + [self.eos_id]
                for t in texts]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return ids, mask

    def prefix_loss(self, prefix: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy of the caption tokens after ``prefix``.

        prefix: float ``[b, k, hidden]`` (gradients flow into it); ids, mask: ``[b, t]`` from
        :meth:`tokenize`. Teacher-forced: every caption position sees the prefix and the true
        tokens before it. Scalar, in nats per token.
        """
        ids, mask = ids.to(self.device), mask.to(self.device)
        tokens = self.model.get_input_embeddings()(ids)
        inputs = torch.cat([prefix.to(tokens.dtype), tokens], dim=1)
        b, k = prefix.shape[:2]
        attention = torch.cat([torch.ones((b, k), dtype=mask.dtype, device=self.device), mask], dim=1)
        labels = torch.cat([torch.full((b, k), -100, dtype=ids.dtype, device=self.device),
                            ids.masked_fill(mask == 0, -100)], dim=1)
        out = self.model(inputs_embeds=inputs, attention_mask=attention, labels=labels, use_cache=False)
        return out.loss

    @torch.inference_mode()
    def generate(self, prefix: torch.Tensor, *, max_new_tokens: int = 30, num_beams: int = 1,
                 seed: int = 0, stop_ids: Sequence[int] = ()) -> list[str]:
        """One caption per prefix row (``[b, k, hidden]``), greedy (``num_beams=1``) or beam search.

        Deterministic: no sampling; ``seed`` is set anyway so any stochastic path in the library
        is reproducible. All prefixes have the same length, so a batch needs no padding and its
        captions equal one-by-one generation (up to float rounding in the attention sums).
        ``stop_ids``: more tokens that end a caption, besides end-of-text (e.g. a newline).
        """
        torch.manual_seed(seed)
        prefix = prefix.to(self.device, self.model.dtype)
        attention = torch.ones(prefix.shape[:2], dtype=torch.long, device=self.device)
        with quiet_transformers():
            out = self.model.generate(
                inputs_embeds=prefix, attention_mask=attention, max_new_tokens=max_new_tokens,
                num_beams=num_beams, do_sample=False, eos_token_id=[self.eos_id, *stop_ids], pad_token_id=self.pad_id,
            )
        # With inputs_embeds only, decoder-only models return just the new tokens.
        return [" ".join(t.split()) for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]


CLASSES: dict[str, type[LanguageModel]] = {"causal-lm": LanguageModel}
