"""Stage: CLIP-S and RefCLIP-S of generated (or retrieved) captions, when CLIP weights are here.

A CLIP *pair* is a registered CLIP text tower (architecture ``clip-text``, e.g.
``openai/clip-vit-base-patch32:text``) and the vision tower from the same checkpoint (``clip-vision``,
``...:vision``): same Hugging Face repository and revision, or same local folder. Both embedders
return the *projected* embeddings (``text_embeds`` / ``image_embeds`` of CLIP's
``*WithProjection`` models, L2-normalised), the joint space CLIPScore is defined in.

Nothing is downloaded and no other model stands in: without a pair whose weights are both present,
:func:`caption_clip_scores` returns None (no ``clip`` given) or raises
:class:`~backend.models.weights.ModelUnavailable` (the ``clip`` asked for is not here).

As in the reference implementation (jmhessel/clipscore), every caption -- candidate and reference --
goes through CLIP's text encoder as "A photo depicts <caption>" (``prompt``). The arithmetic is
:func:`backend.analysis.clip_score.clip_scores`; embeddings are cached per text and per image in the
store like every other embedding stage's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from backend.analysis.clip_score import CLIP_S_WEIGHT, clip_scores
from backend.cache import Store
from backend.data.schema import Dataset
from backend.models.registry import ModelSpec, list_models
from backend.models.weights import ModelUnavailable, pull_command, weights_present
from backend.stages.embeddings import embed_image_hashes_cached, embed_texts_cached
from backend.stages.inputs import image_hashes, load_images

#: The reference implementation's caption prefix (CLIPCapDataset's default).
PROMPT = "A photo depicts "
#: Keys of the result that are not candidate sets.
RESERVED = ("model", "vision_model")


def _origin(spec: ModelSpec) -> tuple:
    """Where a tower's weights come from: towers of one CLIP checkpoint share it."""
    if spec.hf_id:
        return ("hub", spec.hf_id, spec.revision)
    if spec.source:
        return ("folder", str(Path(spec.source).expanduser().resolve()))
    return ("id", spec.id.rsplit(":", 1)[0])


def clip_pairs() -> list[tuple[ModelSpec, ModelSpec]]:
    """(text spec, vision spec) of every registered CLIP checkpoint with both towers, in registry
    order of the text towers (built-in first, then the user's)."""
    visions: dict[tuple, ModelSpec] = {}
    for spec in list_models("image_embedder"):
        if spec.architecture == "clip-vision":
            visions.setdefault(_origin(spec), spec)
    return [(t, visions[_origin(t)]) for t in list_models("text_embedder")
            if t.architecture == "clip-text" and _origin(t) in visions]


def find_clip(clip: str | None = None) -> tuple[ModelSpec, ModelSpec] | None:
    """The CLIP pair to score with. ``clip`` None: the first registered pair whose weights are both
    present, or None. ``clip`` given (the text tower's id, the vision tower's id or the checkpoint's
    Hugging Face id / local folder): that pair; ValueError if there is no such pair,
    ModelUnavailable (one line, with the pull commands) if its weights are not here."""
    pairs = clip_pairs()
    if clip is None:
        return next(((t, v) for t, v in pairs if weights_present(t) and weights_present(v)), None)
    for t, v in pairs:
        if clip in (t.id, v.id, t.hf_id, t.source):
            missing = [s for s in (t, v) if not weights_present(s)]
            if missing:
                pulls = " and ".join(f"`{pull_command(s)}`" for s in missing)
                raise ModelUnavailable(f"CLIP {clip} is not downloaded here (needed for CLIP-S); run {pulls} "
                                       f"on a machine with internet access")
            return t, v
    known = ", ".join(t.id for t, _ in pairs) or "none"
    raise ValueError(f"{clip!r} is not a registered CLIP model with text and vision towers; known: {known}")


def caption_clip_scores(
    ds: Dataset,
    rows: Sequence[int],
    candidates: dict[str, list[str]],
    *,
    store: Store,
    pool,
    clip: str | None = None,
    prompt: str = PROMPT,
    w: float = CLIP_S_WEIGHT,
    report: Callable[[int, int, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> dict[str, dict] | None:
    """CLIP-S and RefCLIP-S of each candidate set on the stimuli ``rows``.

    candidates: set name -> one caption per row (e.g. {"retrieval": [...], "prefix": [...]}).
    References are the dataset's reference captions (``ds.stimuli.captions[row]``); a row without
    one counts in CLIP-S and not in RefCLIP-S.
    Returns ``{"model": text tower id, "vision_model": vision tower id,
    name: {"clip_s": float, "refclip_s": float | None}, ...}``, or None when ``clip`` is None and no
    CLIP pair has its weights here (see :func:`find_clip` for a given ``clip``).
    """
    rows = [int(r) for r in rows]
    for name, texts in candidates.items():
        if name in RESERVED:
            raise ValueError(f"a candidate set cannot be named {name!r} (reserved: {', '.join(RESERVED)})")
        if len(texts) != len(rows):
            raise ValueError(f"candidate set {name!r} has {len(texts)} captions for {len(rows)} rows")
    if not rows:
        raise ValueError("no rows to score")
    pair = find_clip(clip)
    if pair is None:
        return None
    text_spec, vision_spec = pair

    hashes = image_hashes(ds)
    images = embed_image_hashes_cached(
        [hashes[r] for r in rows], lambda idx: load_images(ds, [rows[i] for i in idx]), vision_spec.id,
        store=store, pool=pool, report=report, cancel=cancel)
    refs = [ds.stimuli.captions[r] for r in rows]
    names = list(candidates)
    texts = [prompt + (c or "") for name in names for c in candidates[name]]
    texts += [prompt + r for r in refs if r is not None]
    vectors = embed_texts_cached(texts, text_spec.id, store=store, pool=pool, report=report, cancel=cancel)

    n = len(rows)
    ref_vectors, at = [], len(names) * n
    for r in refs:
        ref_vectors.append(vectors[at : at + 1] if r is not None else np.zeros((0, vectors.shape[1])))
        at += r is not None
    result: dict[str, dict] = {"model": text_spec.id, "vision_model": vision_spec.id}
    for k, name in enumerate(names):
        scores = clip_scores(images, vectors[k * n : (k + 1) * n], ref_vectors, w=w)
        result[name] = {"clip_s": scores["clip_s"], "refclip_s": scores["refclip_s"]}
    return result
