"""Text-to-image: a tiny Stable Diffusion pipeline added by local path, and the demo world's
scene renderer, through the pool. Seeds make images reproducible and batching changes nothing."""

from __future__ import annotations

import time

import numpy as np
import pytest

from backend.data.demo import scenes
from backend.models.weights import ModelUnavailable
from tests.models_tiny import tiny_id, tiny_pool  # noqa: F401  (fixture)

PROMPTS = ["a dog on the beach", "a red car under the night sky", "a small tree"]


def arrays(images) -> list[np.ndarray]:
    return [np.asarray(im) for im in images]


def assert_same_up_to_rounding(a: np.ndarray, b: np.ndarray) -> None:
    """Equal, except where float noise from a different batch shape (~1e-7) tips a pixel across
    a rounding boundary: at most one grey level, on a handful of pixels."""
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).sum())


def test_tiny_stable_diffusion_is_reproducible_and_batch_invariant(tiny_pool):
    model = tiny_pool.get(tiny_id("stable-diffusion"))
    assert model.params() == {"size": 64, "steps": 2, "guidance": 0.0}
    progress = []
    images = model.generate(PROMPTS, seed=3, batch_size=2, progress=lambda d, t: progress.append((d, t)))
    assert [(im.mode, im.size) for im in images] == [("RGB", (64, 64))] * 3
    assert progress == [(2, 3), (3, 3)]
    first = arrays(images)
    assert first[0].std() > 1  # not a blank image
    again = arrays(model.generate(PROMPTS, seed=3, batch_size=2))
    one_by_one = [np.asarray(model.generate([p], seed=3 + i)[0]) for i, p in enumerate(PROMPTS)]
    explicit = arrays(model.generate(PROMPTS, seeds=[3, 4, 5], batch_size=2))
    for a, b, c, d in zip(first, again, one_by_one, explicit, strict=True):
        np.testing.assert_array_equal(a, b)  # same seed, same image
        assert_same_up_to_rounding(a, c)  # batching equals one-by-one
        np.testing.assert_array_equal(a, d)  # seeds=[...] is seed + index spelled out (same batches)
    other_seed = np.asarray(model.generate(PROMPTS[:1], seed=99)[0])
    assert np.abs(other_seed.astype(int) - first[0]).mean() > 1


def test_tiny_stable_diffusion_settings(tiny_pool):
    model = tiny_pool.get(tiny_id("stable-diffusion"))
    assert model.generate(PROMPTS[:1], size=32, steps=1, guidance=3.0)[0].size == (32, 32)  # with CFG
    with pytest.raises(ValueError, match="multiple of 2"):
        model.generate(PROMPTS[:1], size=33)
    with pytest.raises(ValueError, match="2 seeds for 3 prompts"):
        model.generate(PROMPTS, seeds=[1, 2])
    with pytest.raises(TypeError, match="list of prompts"):
        model.generate("a dog")


def test_scene_renderer_draws_the_described_scene(tiny_pool):
    renderer = tiny_pool.get("sim-scene-renderer")
    assert renderer.spec.simulated and renderer.params() == {"size": 256}
    prompts = ["a small dog to the left of a large car on a beach",  # a demo-world caption
               "a photo of a cat and a tree in the snow",  # free text naming known objects
               "an abstract painting"]  # nothing the world knows: an empty canvas
    images = renderer.generate(prompts, seed=5, size=64, batch_size=2)
    expected = [scenes.render(scenes.interpret(prompts[0]), 64, jitter=5),
                scenes.render(scenes.interpret(prompts[1]), 64, jitter=6),
                scenes.render_background("white background", 64)]
    for im, want in zip(images, expected, strict=True):
        assert im.mode == "RGB" and im.size == (64, 64)
        np.testing.assert_array_equal(np.asarray(im), want)
    one_by_one = [renderer.generate([p], seed=5 + i, size=64)[0] for i, p in enumerate(prompts)]
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, one_by_one, strict=True))


def test_default_text_to_image_is_absent_here_and_fails_fast(tiny_pool):
    start = time.monotonic()
    with pytest.raises(ModelUnavailable, match="run `python launch.py models pull stabilityai/sd-turbo`"):
        tiny_pool.get("stabilityai/sd-turbo")
    assert time.monotonic() - start < 5
