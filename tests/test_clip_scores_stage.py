"""The CLIP-S / RefCLIP-S stage (backend.stages.clip_scores) on the small demo world, with the tiny
random-weight CLIP of tests/models_tiny.py as the pair (its scores mean nothing; the arithmetic and
the plumbing are what is checked), and its refusals when no CLIP weights are here."""

from __future__ import annotations

import numpy as np
import pytest

from backend.analysis.clip_score import clip_scores
from backend.cache import Store
from backend.models.registry import add_user_model, list_models
from backend.models.weights import ModelUnavailable, weights_present
from backend.stages.clip_scores import PROMPT, caption_clip_scores, clip_pairs, find_clip
from backend.stages.inputs import load_images
from tests.models_tiny import register_tiny, session_dir, tiny_folder, tiny_id

TEXT, VISION = tiny_id("clip-text"), tiny_id("clip-vision")


@pytest.fixture(scope="module")
def clip_pool(human):
    """A CPU pool over a model cache where only the tiny CLIP's two towers are user models (by the
    one local folder); ``$CORTEXTUAL_CACHE`` points there for this module's tests, then goes back.
    (``human`` first, so the session's demo world is made in the suite's cache.)"""
    from backend.models.pool import ModelPool

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CORTEXTUAL_CACHE", str(session_dir("clip-scores-cache")))
        register_tiny("clip-text")
        register_tiny("clip-vision")
        yield ModelPool(budget_gb=2, device="cpu")


def _rows_and_candidates(ds, k=8):
    rows = [int(i) for i in ds.stimuli.indices("test")[:k]]
    refs = [ds.stimuli.captions[r] for r in rows]
    assert all(refs)
    return rows, {"reference": list(refs), "shifted": refs[1:] + refs[:1], "fixed": ["a red car on the street"] * k}


def test_the_stage_equals_the_array_function_on_the_same_embeddings(human, clip_pool, tmp_path):
    rows, candidates = _rows_and_candidates(human)
    store = Store(tmp_path / "store.sqlite")
    result = caption_clip_scores(human, rows, candidates, store=store, pool=clip_pool, clip=TEXT)
    assert result["model"] == TEXT and result["vision_model"] == VISION
    assert set(result) == {"model", "vision_model", *candidates}

    images = clip_pool.get(VISION).embed(load_images(human, rows))
    text = clip_pool.get(TEXT)
    refs = [text.embed([PROMPT + human.stimuli.captions[r]]) for r in rows]
    for name, captions in candidates.items():
        expected = clip_scores(images, text.embed([PROMPT + c for c in captions]), refs)
        assert result[name]["clip_s"] == pytest.approx(expected["clip_s"], abs=1e-6)
        assert result[name]["refclip_s"] == pytest.approx(expected["refclip_s"], abs=1e-6)
    # a candidate that is its reference has text term 1: RefCLIP-S = H(CLIP-S, 1) per item
    same = clip_scores(images, text.embed([PROMPT + c for c in candidates["reference"]]), refs)
    np.testing.assert_allclose(same["per_item"]["text_s"], 1.0, atol=1e-6)

    # the pair is found by either tower's id or the checkpoint's folder, and by default (the only
    # pair with weights here); a second call reads every embedding from the store (loads nothing)
    from backend.models.pool import ModelPool

    fresh = ModelPool(budget_gb=2, device="cpu")
    for clip in (VISION, str(tiny_folder("clip")), None):
        assert caption_clip_scores(human, rows, candidates, store=store, pool=fresh, clip=clip) == result
    assert not fresh.loads
    assert find_clip()[0].id == TEXT


def test_a_row_without_reference_counts_in_clip_s_only(human, clip_pool, tmp_path):
    from dataclasses import replace

    rows, candidates = _rows_and_candidates(human, k=4)
    captions = list(human.stimuli.captions)
    captions[rows[1]] = None
    ds = replace(human, stimuli=replace(human.stimuli, captions=tuple(captions)))
    store = Store(tmp_path / "store.sqlite")
    full = caption_clip_scores(human, rows, candidates, store=store, pool=clip_pool, clip=TEXT)
    part = caption_clip_scores(ds, rows, candidates, store=store, pool=clip_pool, clip=TEXT)
    assert part["fixed"]["clip_s"] == full["fixed"]["clip_s"]
    assert part["fixed"]["refclip_s"] != pytest.approx(full["fixed"]["refclip_s"], abs=1e-9)


def test_bad_candidates_are_refused(human, clip_pool, tmp_path):
    rows, candidates = _rows_and_candidates(human, k=3)
    store = Store(tmp_path / "store.sqlite")
    with pytest.raises(ValueError, match="has 2 captions for 3 rows"):
        caption_clip_scores(human, rows, {"x": ["a", "b"]}, store=store, pool=clip_pool, clip=TEXT)
    with pytest.raises(ValueError, match="reserved"):
        caption_clip_scores(human, rows, {"model": candidates["fixed"]}, store=store, pool=clip_pool, clip=TEXT)
    with pytest.raises(ValueError, match="not a registered CLIP model"):
        caption_clip_scores(human, rows, candidates, store=store, pool=clip_pool,
                            clip="sentence-transformers/all-MiniLM-L6-v2")


@pytest.fixture
def bare_cache(tmp_path, monkeypatch):
    """A model cache without user models, plus a CLIP pair registered by hub id and not downloaded."""
    monkeypatch.setenv("CORTEXTUAL_CACHE", str(tmp_path / "cache"))
    if any(weights_present(s) for pair in clip_pairs() for s in pair):
        pytest.skip("a built-in CLIP's weights are on this machine")
    for tower in ("text", "vision"):
        add_user_model(architecture=f"clip-{tower}", hf_id="nobody/clip-not-here", id=f"nobody/clip-not-here:{tower}")
    assert {s.id for s in list_models() if s.user} == {"nobody/clip-not-here:text", "nobody/clip-not-here:vision"}


def test_without_clip_weights_the_stage_returns_none(human, bare_cache, tmp_path):
    rows, candidates = _rows_and_candidates(human, k=3)
    store = Store(tmp_path / "store.sqlite")
    assert len(clip_pairs()) == 3  # two built in, one added; none has weights here
    assert caption_clip_scores(human, rows, candidates, store=store, pool=None) is None


def test_a_given_clip_without_weights_is_a_one_line_error(human, bare_cache, tmp_path):
    rows, candidates = _rows_and_candidates(human, k=3)
    for clip in ("nobody/clip-not-here", "nobody/clip-not-here:vision", "openai/clip-vit-base-patch32:text"):
        with pytest.raises(ModelUnavailable) as err:
            caption_clip_scores(human, rows, candidates, store=Store(tmp_path / "s.sqlite"), pool=None, clip=clip)
        message = str(err.value)
        assert "\n" not in message and "not downloaded" in message and "launch.py models pull" in message
