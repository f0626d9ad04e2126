"""The demo world's pictograms, scene grammar, renderer and simulated captioners."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from backend.data.demo import captioners, pictograms, scenes
from backend.data.demo.scenes import Scene, SceneObject


def _sample(n: int, seed: int = 0) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [scenes.sample_scene(rng) for _ in range(n)]


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    assert len(xs) > 0, "object has no visible pixels"
    return float(xs.mean()), float(ys.mean())


# -------------------------------------------------------------------------------- pictograms


def test_category_table_is_large_and_grouped():
    assert len(pictograms.CATEGORIES) >= 48
    assert len(pictograms.GROUPS) >= 7
    assert all(len(names) >= 5 for names in pictograms.GROUPS.values())
    assert sum(len(v) for v in pictograms.GROUPS.values()) == len(pictograms.CATEGORIES)
    assert len(set(pictograms.NAMES)) == len(pictograms.NAMES)
    for c in pictograms.CATEGORIES:
        assert c.animate == (c.group in ("animals", "people"))
        assert c.food == (c.group == "food")
    assert pictograms.category("dog").animate and pictograms.category("apple").food


def test_every_hexcode_exists_and_renders_non_empty():
    for c in pictograms.CATEGORIES:
        assert "<svg" in pictograms.svg_text(c.name), c.hexcode
        p = pictograms.load_pictogram(c.name, 48)
        assert p.shape == (48, 48, 4) and p.dtype == np.uint8
        opaque = p[..., 3] > 128
        # Cropped to content and scaled to fill: the drawing spans (nearly) the whole square
        # along its longer side and covers a fair share of it.
        ys, xs = np.nonzero(opaque)
        assert max(ys.max() - ys.min(), xs.max() - xs.min()) >= 44, c.name
        assert opaque.mean() > 0.1, c.name
    assert pictograms.load_pictogram("dog", 48) is pictograms.load_pictogram("dog", 48)


def test_unknown_pictogram_is_a_clear_error():
    with pytest.raises(ValueError, match="unicorn"):
        pictograms.load_pictogram("unicorn", 32)
    with pytest.raises(ValueError, match="unknown pictogram"):
        pictograms.category("dragon")


# ----------------------------------------------------------------------------------- grammar


def test_round_trip_parse_of_caption_over_2000_scenes():
    sampled = _sample(2000)
    for s in sampled:
        assert scenes.parse(scenes.caption(s)) == s
    counts = np.bincount([len(s.objects) for s in sampled], minlength=4)[1:] / len(sampled)
    assert np.allclose(counts, scenes.OBJECT_COUNT_P, atol=0.04)
    assert all(len(set(scenes.scene_categories(s))) == len(s.objects) for s in sampled)
    assert {s.relation for s in sampled} == set(scenes.RELATIONS) | {None}
    assert {s.background for s in sampled} == set(scenes.BACKGROUNDS)


def test_caption_examples_and_articles():
    s = Scene((SceneObject("dog", "small"), SceneObject("car", "large")), "to the left of", "beach")
    assert scenes.caption(s) == "a small dog to the left of a large car on a beach"
    s3 = Scene((SceneObject("apple", "large"), SceneObject("elephant", "small"),
                SceneObject("tree", "small")), "between", "night sky")
    assert scenes.caption(s3) == ("a large apple between a small elephant and a small tree "
                                  "under a night sky")
    listed = Scene(s3.objects, None, "desert")
    assert scenes.caption(listed) == "a large apple, a small elephant and a small tree in a desert"
    assert scenes.parse(scenes.caption(listed)) == listed
    assert scenes.noun_phrase(SceneObject("umbrella", "large"), with_size=False) == "an umbrella"
    assert scenes.noun_phrase(SceneObject("ice cream", "large"), with_size=False) == "an ice cream"


def test_parse_tolerates_case_whitespace_and_period():
    s = Scene((SceneObject("fire truck", "large"), SceneObject("pine tree", "small")), "above",
              "city street")
    assert scenes.parse("  A Large   FIRE truck above a small pine tree on a city street. ") == s


@pytest.mark.parametrize("text, part", [
    ("", "empty"),
    ("a small dog on the moon", "background"),
    ("the small dog on a beach", "object"),
    ("a tiny dog on a beach", "size"),
    ("a small unicorn on a beach", "object name"),
    ("a small dog beside a large car on a beach", "relation"),
    ("a small dog between a large car on a beach", "between"),
    ("a small dog in front of a large car and a small tree on a beach", "three objects"),
    ("a small dog above a large car a small tree on a beach", "end of the caption"),
])
def test_parse_errors_name_the_unreadable_part(text, part):
    with pytest.raises(ValueError) as err:
        scenes.parse(text)
    message = str(err.value)
    assert part in message and "\n" not in message


def test_scene_validation():
    with pytest.raises(ValueError, match="1-3 objects"):
        Scene((), None, "beach")
    with pytest.raises(ValueError, match="relation"):
        Scene((SceneObject("dog", "small"),), "above", "beach")
    with pytest.raises(ValueError, match="background"):
        Scene((SceneObject("dog", "small"),), None, "moon")
    with pytest.raises(ValueError, match="size"):
        SceneObject("dog", "huge")


def test_interpret_reads_partial_captions():
    assert scenes.interpret("a dog and a car") == Scene(
        (SceneObject("dog", "large"), SceneObject("car", "large")), None, "white background")
    s = scenes.interpret("Look: a tiny cat, and a small rocket, on a beach!")
    assert scenes.scene_categories(s) == ["cat", "rocket"]
    assert s.objects[1].size == "small" and s.relation is None and s.background == "beach"
    s = scenes.interpret("A photo of a dog sitting to the left of a red car near a beach.")
    assert s == Scene((SceneObject("dog", "large"), SceneObject("car", "large")),
                      "to the left of", "beach")
    # A relation that cannot hold for the number of objects named is dropped, not an error.
    assert scenes.interpret("a dog between the hills").relation is None
    for s in _sample(50, seed=3):
        assert scenes.interpret(scenes.caption(s)) == s
    with pytest.raises(ValueError, match="object"):
        scenes.interpret("nothing recognisable here")


def test_accessors():
    s = Scene((SceneObject("dog", "small"), SceneObject("pizza", "large"),
               SceneObject("house", "small")), "above", "beach")
    assert scenes.scene_categories(s) == ["dog", "pizza", "house"]
    assert scenes.scene_groups(s) == ["animals", "food", "buildings"]
    assert scenes.any_animate(s) and scenes.any_food(s)
    plain = Scene((SceneObject("house", "small"),), None, "beach")
    assert not scenes.any_animate(plain) and not scenes.any_food(plain)


# ------------------------------------------------------------------------------------ render


def test_render_is_deterministic_and_jitter_varies():
    for s in _sample(20, seed=1):
        a = scenes.render(s, 128)
        assert a.shape == (128, 128, 3) and a.dtype == np.uint8
        assert a.tobytes() == scenes.render(s, 128).tobytes()
        j = scenes.render(s, 128, jitter=7)
        assert j.tobytes() == scenes.render(s, 128, jitter=7).tobytes()
        assert not np.array_equal(j, scenes.render(s, 128, jitter=8))
        assert not np.array_equal(a, j)


def _pair(relation: str, a: str = "dog", b: str = "car", sa="large", sb="large") -> Scene:
    return Scene((SceneObject(a, sa), SceneObject(b, sb)), relation, "grassy field")


@pytest.mark.parametrize("jitter", [None, 0, 1, 2])
def test_render_respects_relations(jitter):
    def centres(scene):
        image, masks = scenes.render_with_masks(scene, 160, jitter=jitter)
        background = scenes.render_background(scene.background, 160)
        for m in masks:
            # The masks really are where the image shows an object.
            assert np.abs(image[m].astype(int) - background[m]).mean() > 20
        return [_centroid(m) for m in masks]

    sizes = list(itertools.product(scenes.SIZES, repeat=2))
    for sa, sb in sizes:
        (ax, ay), (bx, by) = centres(_pair("to the left of", sa=sa, sb=sb))
        assert ax + 30 < bx
        (ax, ay), (bx, by) = centres(_pair("to the right of", sa=sa, sb=sb))
        assert ax > bx + 30
        (ax, ay), (bx, by) = centres(_pair("above", sa=sa, sb=sb))
        assert ay + 30 < by
        (ax, ay), (bx, by) = centres(_pair("below", sa=sa, sb=sb))
        assert ay > by + 30
    objs = (SceneObject("cat", "small"), SceneObject("bus", "large"), SceneObject("rose", "small"))
    (ax, ay), (bx, by), (cx, cy) = centres(Scene(objs, "to the left of", "beach"))
    assert ax < min(bx, cx) - 30
    (ax, ay), (bx, by), (cx, cy) = centres(Scene(objs, "above", "beach"))
    assert ay < min(by, cy) - 30
    (ax, ay), (bx, by), (cx, cy) = centres(Scene(objs, "between", "beach"))
    assert bx + 20 < ax < cx - 20


def test_in_front_of_occludes_and_behind_is_occluded():
    def visible_and_full(scene):
        _, masks = scenes.render_with_masks(scene, 200)
        full = [0, 0]
        for p in scenes.layout(scene, 200):
            full[p.index] = int((pictograms.load_pictogram(p.category, p.side)[..., 3] >= 128).sum())
        return masks, [int(m.sum()) for m in masks], full

    # Square-ish pictograms, so that even two small ones overlap.
    for sa, sb in itertools.product(scenes.SIZES, repeat=2):
        masks, visible, full = visible_and_full(_pair("in front of", "gift", "camera", sa, sb))
        assert visible[0] == full[0] and visible[1] < full[1]
        assert _centroid(masks[0])[1] > _centroid(masks[1])[1]  # in front = lower in the picture
        masks, visible, full = visible_and_full(_pair("behind", "gift", "camera", sa, sb))
        assert visible[0] < full[0] and visible[1] == full[1]
        assert _centroid(masks[0])[1] < _centroid(masks[1])[1]


def test_sizes_are_visible():
    for name in ("dog", "banana", "house"):
        extents = {}
        for size in scenes.SIZES:
            _, masks = scenes.render_with_masks(Scene((SceneObject(name, size),), None, "beach"), 200)
            ys, xs = np.nonzero(masks[0])
            extents[size] = max(np.ptp(ys), np.ptp(xs))
        assert extents["large"] > 1.5 * extents["small"]


def test_backgrounds_are_distinct():
    assert len(scenes.BACKGROUNDS) >= 6
    images = {b: scenes.render_background(b, 64).astype(float) for b in scenes.BACKGROUNDS}
    for a, b in itertools.combinations(images, 2):
        assert np.abs(images[a] - images[b]).mean() > 15, (a, b)
    s = _pair("above")
    rendered = {scenes.render(Scene(s.objects, s.relation, b), 64).tobytes()
                for b in scenes.BACKGROUNDS}
    assert len(rendered) == len(scenes.BACKGROUNDS)


# ------------------------------------------------------------------------------- captioners


def test_captioners_are_deterministic_and_reject_unknown_ids():
    assert [c.id for c in captioners.SIMULATED_CAPTIONERS] == [
        "sim-reference", "sim-objects-only", "sim-one-object", "sim-noisy-words"]
    sampled = _sample(100, seed=5)
    for cid in captioners.CAPTIONER_IDS:
        first = [captioners.simulated_caption(cid, s, 3) for s in sampled]
        assert first == [captioners.simulated_caption(cid, s, 3) for s in sampled]
    noisy = [captioners.simulated_caption("sim-noisy-words", s, 3) for s in sampled]
    assert noisy != [captioners.simulated_caption("sim-noisy-words", s, 4) for s in sampled]
    with pytest.raises(ValueError, match="sim-reference"):
        captioners.simulated_caption("gpt-9", sampled[0], 0)


def test_captioner_outputs_have_the_promised_content():
    for i, s in enumerate(_sample(300, seed=6)):
        assert captioners.simulated_caption("sim-reference", s, i) == scenes.caption(s)
        objects_only = scenes.interpret(captioners.simulated_caption("sim-objects-only", s, i))
        assert scenes.scene_categories(objects_only) == scenes.scene_categories(s)
        one = scenes.interpret(captioners.simulated_caption("sim-one-object", s, i))
        assert len(one.objects) == 1 and one.objects[0].category in scenes.scene_categories(s)
        if any(o.size == "large" for o in s.objects):
            assert one.objects[0].category in [o.category for o in s.objects if o.size == "large"]
        # Noisy captions stay inside the grammar (so the renderer can draw them).
        noisy = scenes.parse(captioners.simulated_caption("sim-noisy-words", s, i))
        assert len(noisy.objects) == len(s.objects)
        assert len(set(scenes.scene_categories(noisy))) == len(noisy.objects)
        assert scenes.parse(captioners.simulated_caption("sim-noisy-words", s, i, rate=0.0)) == s


def _words(text: str) -> set[str]:
    return set(text.lower().replace(",", " ").split())


def _category_f1(text: str, scene: Scene) -> float:
    named = set(scenes.scene_categories(scenes.interpret(text)))
    true = set(scenes.scene_categories(scene))
    hit = len(named & true)
    return 0.0 if hit == 0 else 2 * hit / (len(named) + len(true))


def test_captioners_are_graded():
    sampled = _sample(400, seed=7)
    ids = captioners.CAPTIONER_IDS
    caps = {c: [captioners.simulated_caption(c, s, i) for i, s in enumerate(sampled)] for c in ids}
    refs = caps["sim-reference"]
    # Word recall of the reference falls along the order for the honest captioners...
    recall = {c: np.mean([len(_words(t) & _words(r)) / len(_words(r)) for t, r in zip(caps[c], refs)])
              for c in ids}
    assert recall["sim-reference"] == 1.0
    assert recall["sim-reference"] > recall["sim-objects-only"] > recall["sim-one-object"]
    # ...and on the objects (what category-selective regions see) every step is a loss: the
    # noisy captioner names wrong objects, the one-object captioner only misses some.
    f1 = {c: np.mean([_category_f1(t, s) for t, s in zip(caps[c], sampled)]) for c in ids}
    assert f1["sim-reference"] == f1["sim-objects-only"] == 1.0
    assert 1.0 > f1["sim-one-object"] > f1["sim-noisy-words"] + 0.05
    # More noise, less truth.
    noisier = [captioners.simulated_caption("sim-noisy-words", s, i, rate=0.99)
               for i, s in enumerate(sampled)]
    assert np.mean([_category_f1(t, s) for t, s in zip(noisier, sampled)]) < f1["sim-noisy-words"]
