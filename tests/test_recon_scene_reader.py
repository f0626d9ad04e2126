"""The demo world's simulated image embedder (scene reader) and the comparison's embedding scores."""

from __future__ import annotations

import types

import numpy as np
import pytest

from backend.data.demo import pictograms, scene_reader, scenes
from backend.data.demo.scenes import Scene
from backend.stages.embeddings import embed_image_hashes_cached
from backend.stages.comparison import (
    FALLBACK_IMAGE_EMBEDDER, default_image_embedder, embedding_scores,
)


def _scenes(n: int, seed: int) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [scenes.sample_scene(rng) for _ in range(n)]


# ------------------------------------------------------------------------------ the reader


def test_reader_finds_the_planted_objects_and_background_of_rendered_scenes():
    sample = _scenes(40, seed=11)
    precision = recall = 0.0
    for i, scene in enumerate(sample):
        reading = scene_reader.read_scene(scenes.render(scene, 256, jitter=100 + i))
        assert reading.background == scene.background, scenes.caption(scene)
        assert reading.background_match > 0.5
        got, want = set(reading.categories), set(scenes.scene_categories(scene))
        precision += len(got & want) / max(len(got), 1)
        recall += len(got & want) / len(want)
    # Measured 0.99 / 0.96 on the default world's test stimuli; misses are half-hidden objects.
    assert precision / len(sample) >= 0.9 and recall / len(sample) >= 0.85, (precision, recall)


def test_reader_places_objects_where_they_are_drawn():
    scene = scenes.parse("a small dog above a large car on a city street")
    reading = scene_reader.read_scene(scenes.render(scene, 256, jitter=5))
    where = {d.category: d for d in reading.objects}
    assert set(where) == {"dog", "car"}
    assert where["dog"].y < 0.45 < 0.55 < where["car"].y  # above is above
    assert where["car"].side > where["dog"].side  # large is larger
    for placement in scenes.layout(scene, 256, jitter=5):
        d = where[placement.category]
        assert abs(d.x - (placement.x0 + placement.side / 2) / 256) < 0.05
        assert abs(d.y - (placement.y0 + placement.side / 2) / 256) < 0.05


def test_reader_separates_objects_that_touch():
    # Three large objects with no relation stand side by side and touch (the renderer's layout
    # for "a, b and c", which is how captions without a relation are drawn).
    scene = scenes.interpret("a large umbrella, a large tractor and a large alarm clock")
    image, masks = scenes.render_with_masks(scene, 256, jitter=0)
    from scipy import ndimage

    joined = ndimage.binary_dilation(masks.any(0), iterations=2)
    assert ndimage.label(joined)[1] < 3, "the objects should touch for this test to mean anything"
    assert sorted(scene_reader.read_scene(image).categories) == ["alarm clock", "tractor", "umbrella"]


def test_reader_takes_pil_images_any_size_and_rejects_non_rgb():
    from PIL import Image

    scene = scenes.parse("a large pizza in a desert")
    for size in (200, 256, 512):
        image = scenes.render(scene, size, jitter=1)
        assert scene_reader.read_scene(Image.fromarray(image)).categories == ["pizza"]
    with pytest.raises(ValueError, match="uint8"):
        scene_reader.read_scene(np.zeros((64, 64, 3), np.float32))


def test_a_picture_from_outside_the_world_reads_as_nothing():
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    reading = scene_reader.read_scene(noise)
    assert reading.background is None and reading.objects == () and reading.background_match < 0.25
    assert not scene_reader.embed_scenes([noise]).any()
    blank = scenes.render_background("white background", 256)  # the renderer's empty picture
    assert scene_reader.read_scene(blank) == scene_reader.Reading("white background", 1.0, ())


# ------------------------------------------------------------------------------- vectors


def test_scene_vector_marks_categories_groups_and_background():
    v = scene_reader.scene_vector(["dog", "cat", "car", "dog"], "beach")
    on = {scene_reader.VECTOR_NAMES[i] for i in np.flatnonzero(v)}
    assert on == {"object:dog", "object:cat", "object:car", "group:animals", "group:vehicles", "background:beach"}
    assert v.shape == (scene_reader.DIM,) == (len(pictograms.NAMES) + len(pictograms.GROUP_NAMES) + 8,)
    scene = scenes.parse("a small dog to the left of a large car on a beach")
    np.testing.assert_array_equal(scene_reader.truth_vector(scene), scene_reader.scene_vector(["dog", "car"], "beach"))
    assert not scene_reader.scene_vector([], None).any()


def test_embed_scenes_rows_are_unit_vectors_of_what_is_read():
    images = [scenes.render(s, 256, jitter=i) for i, s in enumerate(_scenes(4, seed=3))]
    v = scene_reader.embed_scenes(images)
    assert v.shape == (4, scene_reader.DIM) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-6)
    for row, image in zip(v, images, strict=True):
        expected = scene_reader.reading_vector(scene_reader.read_scene(image))
        np.testing.assert_allclose(row, expected / np.linalg.norm(expected), atol=1e-6)
    assert scene_reader.embed_scenes([]).shape == (0, scene_reader.DIM)


# -------------------------------------------------------- identification of reconstructions


def test_reconstructions_of_the_right_scenes_are_identified_and_wrong_ones_are_not():
    sample = _scenes(16, seed=21)
    stimuli = scene_reader.embed_scenes([scenes.render(s, 256, jitter=i) for i, s in enumerate(sample)])
    # A reconstruction drawn again from the same caption (another seed: another layout jitter).
    redrawn = scene_reader.embed_scenes([scenes.render(scenes.interpret(scenes.caption(s)), 256, jitter=999)
                                         for s in sample])
    right = embedding_scores(redrawn, stimuli)
    wrong = embedding_scores(np.roll(redrawn, 1, axis=0), stimuli)
    assert right["image_two_way"] >= 0.95 and right["image_similarity"] >= 0.9
    assert wrong["image_two_way"] < 0.7 and wrong["image_similarity"] < 0.5
    # Naming the objects but not the background (drawn on white) is worth something, not everything.
    listed = [" and ".join(scenes.scene_categories(s)) for s in sample]  # "a dog and a car" style
    objects_only = scene_reader.embed_scenes([scenes.render(scenes.interpret(text), 256) for text in listed])
    partial = embedding_scores(objects_only, stimuli)
    assert wrong["image_two_way"] < partial["image_two_way"] < right["image_two_way"]


def test_embedding_scores_on_known_features():
    stimuli = np.eye(4)
    scores = embedding_scores(stimuli * 3, stimuli)
    assert scores == {"image_two_way": 1.0, "image_similarity": pytest.approx(1.0)}
    half = embedding_scores(np.ones((4, 4)), stimuli)  # equally like every stimulus: ties fail
    assert half["image_two_way"] == 0.0 and half["image_similarity"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="differ"):
        embedding_scores(np.ones((4, 3)), stimuli)


# --------------------------------------------------------------- model, choice and caching


def test_scene_reader_is_a_registered_simulated_image_embedder():
    from backend.models.pool import ModelPool
    from backend.models.registry import get_model, list_models

    spec = get_model(FALLBACK_IMAGE_EMBEDDER)
    assert spec.kind == "image_embedder" and spec.simulated and "simulated" in spec.label
    assert spec in list_models("image_embedder")
    pool = ModelPool(device="cpu")
    model = pool.get(FALLBACK_IMAGE_EMBEDDER)
    images = [scenes.render(s, 256, jitter=i) for i, s in enumerate(_scenes(3, seed=5))]
    assert model.dim == scene_reader.DIM
    np.testing.assert_allclose(model.embed(images, batch_size=2), scene_reader.embed_scenes(images), atol=1e-6)


def test_default_image_embedder_never_gives_the_simulated_one_for_real_data():
    # No CLIP weights here: the simulated reader for a simulated dataset, nothing for a real one.
    assert default_image_embedder(types.SimpleNamespace(simulated=True)) == FALLBACK_IMAGE_EMBEDDER
    assert default_image_embedder(types.SimpleNamespace(simulated=False)) is None


def test_image_embeddings_are_cached_per_content_and_repeats_embedded_once(tmp_path):
    from backend.cache import Store

    class CountingPool:
        def __init__(self):
            self.embedded = 0

        def get(self, model_id):
            pool = self

            class Model:
                def embed(self, images, batch_size=32, cancel=None):
                    pool.embedded += len(images)
                    return scene_reader.embed_scenes(images)

            return Model()

    images = [scenes.render(s, 256, jitter=i) for i, s in enumerate(_scenes(3, seed=8))]
    rows = [0, 1, 0, 2, 1]
    hashes = [f"h{r}" for r in rows]
    store, pool = Store(tmp_path / "store.sqlite"), CountingPool()
    first = embed_image_hashes_cached(hashes, lambda idx: [images[rows[i]] for i in idx], FALLBACK_IMAGE_EMBEDDER,
                                 store=store, pool=pool)
    assert pool.embedded == 3  # one per distinct image
    np.testing.assert_allclose(first, scene_reader.embed_scenes([images[r] for r in rows]), atol=1e-6)
    again = embed_image_hashes_cached(hashes, lambda idx: pytest.fail("cached images are not loaded"),
                                 FALLBACK_IMAGE_EMBEDDER, store=store, pool=pool)
    assert pool.embedded == 3
    np.testing.assert_array_equal(again, first)


@pytest.mark.slow
def test_compare_captioners_adds_the_embedding_columns_on_the_small_world(human, tmp_path):
    from backend.cache import Store
    from backend.models.pool import ModelPool
    from backend.stages.comparison import compare_captioners

    store, pool = Store(tmp_path / "store.sqlite"), ModelPool(device="cpu")
    sources = ["reference", "sim-one-object"]
    rows = compare_captioners(human, sources, "sentence-transformers/all-MiniLM-L6-v2", "sim-scene-renderer",
                              store=store, pool=pool, image_embedder=FALLBACK_IMAGE_EMBEDDER)
    assert [r["source"] for r in rows] == sources
    for row in rows:
        assert {"pixcorr", "ssim", "image_two_way", "image_similarity"} <= set(row)
        assert 0 <= row["image_two_way"] <= 1 and 0 <= row["image_similarity"] <= 1
        assert row["image_embedder"] == FALLBACK_IMAGE_EMBEDDER
    plain = compare_captioners(human, sources[:1], "sentence-transformers/all-MiniLM-L6-v2", "sim-scene-renderer",
                               store=store, pool=pool)
    assert "image_two_way" not in plain[0] and plain[0]["pixcorr"] == rows[0]["pixcorr"]
    with pytest.raises(ValueError, match="not an image embedder"):
        compare_captioners(human, sources[:1], "sentence-transformers/all-MiniLM-L6-v2", "sim-scene-renderer",
                           store=store, pool=pool, image_embedder="sim-scene-renderer")

