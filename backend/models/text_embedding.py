"""Moved: the MiniLM code lives in :mod:`backend.models.text_embedders` with the other text
embedders. These names stay importable from here for existing callers."""

from backend.models.text_embedders import MINILM_DIM, MINILM_ID, embed_texts, load_minilm

__all__ = ["MINILM_DIM", "MINILM_ID", "embed_texts", "load_minilm"]
