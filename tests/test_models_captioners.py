"""Captioners through the users' path: tiny random-weight models added by local path, taken from
the pool, run on images. Plus the demo world's simulated captioners."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from backend.data.demo import captioners as sim
from backend.data.demo import scenes
from backend.models.device import Cancelled
from tests.models_tiny import CAPTIONER_ARCHITECTURES, tiny_id, tiny_pool  # noqa: F401  (fixture)


def random_images(n: int, size: int = 48) -> list[Image.Image]:
    # Not the model's input size, and one non-square, so the processors' resizing is exercised.
    images = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8))
              for i in range(n)]
    images[-1] = images[-1].resize((size + 16, size))
    return images


IMAGES = random_images(5)


@pytest.mark.parametrize("architecture", CAPTIONER_ARCHITECTURES)
def test_tiny_captioner_is_deterministic_and_batching_changes_nothing(tiny_pool, architecture):
    captioner = tiny_pool.get(tiny_id(architecture))
    assert captioner.spec.architecture == architecture and captioner.device == "cpu"
    progress = []
    batched = captioner.caption(IMAGES, batch_size=2, progress=lambda d, t: progress.append((d, t)))
    assert len(batched) == len(IMAGES) and all(isinstance(c, str) for c in batched)
    assert progress == [(2, 5), (4, 5), (5, 5)]
    assert captioner.caption(IMAGES, batch_size=2) == batched  # deterministic
    assert [captioner.caption([im])[0] for im in IMAGES] == batched  # batching equals one-by-one
    assert captioner.caption(IMAGES[::-1], batch_size=5) == batched[::-1]
    # The captions depend on the image (so the checks above could fail).
    assert len(set(batched)) >= 2, batched
    assert tiny_pool.loads[tiny_id(architecture)] == 1
    assert captioner.caption([]) == []


def test_generation_parameters_are_applied_and_checked(tiny_pool):
    blip = tiny_pool.get(tiny_id("blip"))  # a word-level vocabulary: one token is one word
    assert blip.params() == {"max_new_tokens": 8, "num_beams": 1}
    assert blip.params(max_new_tokens=2) == {"max_new_tokens": 2, "num_beams": 1}
    short = blip.caption(IMAGES, max_new_tokens=2)
    assert all(len(c.split()) <= 2 for c in short)
    assert any(len(c.split()) > 2 for c in blip.caption(IMAGES))
    beams = blip.caption(IMAGES, num_beams=2)
    assert beams == blip.caption(IMAGES, num_beams=2, batch_size=1)  # beam search is deterministic too
    with pytest.raises(ValueError, match=r"does not take \['temperature'\]"):
        blip.caption(IMAGES, temperature=0.7)
    florence = tiny_pool.get(tiny_id("florence2"))
    with pytest.raises(ValueError, match="prompt must be one of"):
        florence.caption(IMAGES[:1], prompt="<OD>")
    assert len(florence.caption(IMAGES[:2], prompt="<DETAILED_CAPTION>")) == 2


def test_blip_prompt_prefixes_the_caption(tiny_pool):
    blip = tiny_pool.get(tiny_id("blip"))
    captions = blip.caption(IMAGES[:3], prompt="a photo of")
    assert all(c.startswith("a photo of") for c in captions)


def test_cancel_stops_between_batches(tiny_pool):
    git = tiny_pool.get(tiny_id("git"))
    done = []
    with pytest.raises(Cancelled):
        git.caption(IMAGES, batch_size=2, progress=lambda d, t: done.append(d), cancel=lambda: len(done) >= 1)
    assert done == [2]


# ------------------------------------------------------------------------------ simulated


def demo_scenes(n: int) -> list[scenes.Scene]:
    rng = np.random.default_rng(7)
    return [scenes.sample_scene(rng) for _ in range(n)]


@pytest.mark.parametrize("model_id", sim.CAPTIONER_IDS)
def test_simulated_captioners_read_the_reference(tiny_pool, model_id):
    world = demo_scenes(12)
    refs = [scenes.caption(s) for s in world]
    images = [Image.new("RGB", (8, 8))] * len(refs)  # pixels are not read
    captioner = tiny_pool.get(model_id)
    assert captioner.spec.simulated
    out = captioner.caption(images, references=refs, batch_size=5)
    assert out == [sim.simulated_caption(model_id, s, 0) for s in world]
    # Each caption depends on its own reference only: order and batching change nothing.
    assert captioner.caption(images, references=refs[::-1], batch_size=1) == out[::-1]
    if model_id == "sim-reference":
        assert out == refs


def test_noisy_captioner_takes_seed_and_rate(tiny_pool):
    refs = [scenes.caption(s) for s in demo_scenes(20)]
    images = [Image.new("RGB", (8, 8))] * len(refs)
    noisy = tiny_pool.get("sim-noisy-words")
    assert noisy.params() == {"rate": sim.NOISY_WORD_RATE, "seed": 0}
    assert noisy.caption(images, references=refs, rate=0.0) == refs
    assert noisy.caption(images, references=refs, seed=1) != noisy.caption(images, references=refs, seed=2)


def test_simulated_captioners_refuse_what_they_cannot_read(tiny_pool):
    captioner = tiny_pool.get("sim-objects-only")
    image = [Image.new("RGB", (8, 8))]
    with pytest.raises(ValueError, match="needs the demo world's reference caption"):
        captioner.caption(image)
    with pytest.raises(ValueError, match="needs the demo world's reference caption"):
        captioner.caption(image, references=[None])
    with pytest.raises(ValueError, match="works only on demo-world stimuli; 'two zebras grazing'"):
        captioner.caption(image, references=["two zebras grazing"])
    with pytest.raises(ValueError, match="2 references for 1 images"):
        captioner.caption(image, references=["a", "b"])


def test_unknown_default_parameters_in_a_user_entry_are_an_error(tiny_pool):
    from tests.models_tiny import register_tiny

    register_tiny("git", id="git-typo", defaults={"max_new_token": 5})
    with pytest.raises(ValueError, match=r"unknown default parameter\(s\) \['max_new_token'\]"):
        tiny_pool.get("git-typo")
