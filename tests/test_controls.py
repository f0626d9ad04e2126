"""Doerig et al. word-level controls: word averages, word-class filtering, per-unit comparison."""

import numpy as np
import pytest

from backend.analysis.controls import (
    caption_words, compare_per_unit, keep_word_classes, tokenize, word_average, word_class,
)
from backend.data.demo.pictograms import NAMES
from backend.data.demo.scenes import word_classes


def test_tokenize_and_vocabulary():
    assert tokenize("A dog's ball, on the GRASS.") == ["a", "dog's", "ball", "on", "the", "grass"]
    assert caption_words(["a dog", "The cat and a dog"]) == ["a", "and", "cat", "dog", "the"]


def test_word_average_matches_hand_computation():
    vectors = {"a": np.array([1.0, 0.0]), "dog": np.array([0.0, 2.0]), "runs": np.array([3.0, 3.0])}
    out = word_average(["A dog runs", "a a dog", "unknown words only", "dog zebra"], vectors)
    assert out.dtype == np.float32 and out.shape == (4, 2)
    np.testing.assert_allclose(out[0], [(1 + 0 + 3) / 3, (0 + 2 + 3) / 3], rtol=1e-6)
    np.testing.assert_allclose(out[1], [2 / 3, 2 / 3], rtol=1e-6)  # repeats count
    np.testing.assert_array_equal(out[2], [0, 0])  # no known word -> zeros
    np.testing.assert_array_equal(out[3], [0, 2])  # unknown words skipped


def test_word_average_ignores_order():
    captions = ["a dog left of a car", "a car left of a dog"]
    rng = np.random.default_rng(0)
    vectors = {w: rng.normal(size=8) for w in caption_words(captions)}
    out = word_average(captions, vectors)
    np.testing.assert_allclose(out[0], out[1], rtol=1e-6)


def test_keep_word_classes_demo_world_with_lexicon():
    lexicon = word_classes()
    assert "teddy bear" in NAMES and "dog" in NAMES and "car" in NAMES
    caption = "a small teddy bear to the left of a large car on a beach"
    assert keep_word_classes(caption, {"noun"}, lexicon) == "teddy bear car beach"
    assert keep_word_classes(caption, {"adjective"}, lexicon) == "small large"
    assert keep_word_classes(caption, {"noun", "adjective"}, lexicon) == "small teddy bear large car beach"
    caption = "a large dog, a small car and a small teddy bear under a night sky"
    assert keep_word_classes(caption, {"noun"}, lexicon) == "dog car teddy bear night sky"


def test_keep_word_classes_heuristic_on_coco_like_captions():
    cases = {
        "A man riding a wave on top of a surfboard.": {"man", "wave", "top", "surfboard"},
        "Two giraffes standing next to each other in a grassy field.": {"giraffes", "field"},
        "A plate of food with broccoli and a slice of pizza on a wooden table.":
            {"plate", "food", "broccoli", "slice", "pizza", "table"},
        "A young boy is holding a kite on the beach.": {"boy", "kite", "beach"},
        "There is a cat sleeping on the bed next to a laptop.": {"cat", "bed", "laptop"},
    }
    for caption, nouns in cases.items():
        kept = keep_word_classes(caption, {"noun"}).split()
        assert nouns <= set(kept), (caption, kept)
        for dropped in ("a", "the", "on", "of", "is", "riding", "standing", "holding", "sleeping",
                        "grassy", "wooden", "young", "there", "and", "with"):
            assert dropped not in kept, (caption, dropped)
    assert keep_word_classes("A man riding a horse", {"verb"}) == "riding"
    assert word_class("quickly") == "adverb" and word_class("building") == "noun"
    assert word_class("park", {"park": "noun"}) == "noun"  # the lexicon wins
    with pytest.raises(ValueError):
        keep_word_classes("a dog", {"nouns"})


def test_compare_per_unit():
    r_a = np.array([0.5, 0.2, 0.3, np.nan, 0.1])
    r_b = np.array([0.1, 0.4, 0.3, 0.2, 0.0])
    mask = np.array([True, True, False, False, False])
    out = compare_per_unit(r_a, r_b, {"roi": mask})
    np.testing.assert_allclose(out["difference"], [0.4, -0.2, 0.0, np.nan, 0.1], rtol=1e-6)
    assert out["fraction_a_better"] == pytest.approx(2 / 4)
    assert out["mean_difference"] == pytest.approx((0.4 - 0.2 + 0.0 + 0.1) / 4)
    assert out["regions"]["roi"] == {"n_units": 2, "fraction_a_better": 0.5,
                                     "mean_difference": pytest.approx(0.1)}
    with pytest.raises(ValueError):
        compare_per_unit(r_a, r_b[:3])
