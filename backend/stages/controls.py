"""Stage: the controls of Doerig et al. — does the caption as a whole predict the brain better than
its words do?

For one caption source and text embedder, the same encoding model is fitted on four feature sets:
the full-caption embedding, the mean of its words' embeddings (order and syntax removed), and the
embeddings of the caption reduced to its nouns and to its verbs. Per-unit r of each is compared
with the full caption. A caption with no word of the class is embedded as the empty text, so a
class that captions rarely contain (the demo grammar has no verbs) predicts nothing, and the
summary says how many captions had any.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from backend.analysis.controls import caption_words, compare_per_unit, keep_word_classes, word_average
from backend.cache import Store, array_from_npy, array_to_npy, entry_key
from backend.data.schema import Dataset
from backend.stages.embeddings import embed_texts_cached
from backend.stages.encoding import _complete_captions, dataset_fingerprint, encode_features, fit_encoding, unit_regions

STAGE = "control-encoding"
CONTROLS = ("word-average", "nouns", "verbs")
WORD_CLASS_OF = {"nouns": "noun", "verbs": "verb"}


def control_features(captions: list[str], control: str, embedder: str, *, store: Store, pool, lexicon=None) -> np.ndarray:
    """float32 [n, d]: the control's features for each caption."""
    if control == "word-average":
        vocabulary = caption_words(captions)
        vectors = embed_texts_cached(vocabulary, embedder, store=store, pool=pool)
        return word_average(captions, dict(zip(vocabulary, vectors, strict=True)))
    if control in WORD_CLASS_OF:
        return embed_texts_cached(reduced_captions(captions, control, lexicon), embedder, store=store, pool=pool)
    raise ValueError(f"unknown control {control!r}; use one of {CONTROLS}")


def dataset_lexicon(ds: Dataset) -> dict[str, str] | None:
    """The exact lexicon of the demo world's grammar for its datasets; None (the heuristic) otherwise."""
    from backend.data.demo.scenes import word_classes
    from backend.data.demo.world import DEMO_IDS

    return word_classes() if ds.id in DEMO_IDS else None


def reduced_captions(captions: list[str], control: str, lexicon=None) -> list[str]:
    """Each caption reduced to the control's word class ("" when it has none)."""
    return [keep_word_classes(c, {WORD_CLASS_OF[control]}, lexicon=lexicon) for c in captions]


def _control_key(ds: Dataset, captions: list[str], embedder: str, control: str, lexicon) -> str:
    return entry_key(
        stage=STAGE, dataset=dataset_fingerprint(ds), embedder=embedder, control=control,
        captions=hashlib.sha256(json.dumps(captions).encode()).hexdigest(), lexicon=sorted((lexicon or {}).items()),
    )


def cached_control_r(ds: Dataset, source: str, embedder: str, control: str, store: Store, lexicon=None) -> np.ndarray | None:
    """The control's per-unit test r if it has been fitted, else None (nothing is computed)."""
    if control not in CONTROLS:
        raise ValueError(f"unknown control {control!r}; use one of {CONTROLS}")
    cached = store.get(_control_key(ds, _complete_captions(ds, source, store), embedder, control, lexicon))
    return None if cached is None else array_from_npy(cached[1])


def control_r(ds: Dataset, source: str, embedder: str, control: str, *, store: Store, pool, lexicon=None) -> np.ndarray:
    """float32 [n_units]: test r of the encoding model fitted on the control's features (cached)."""
    captions = _complete_captions(ds, source, store)
    key = _control_key(ds, captions, embedder, control, lexicon)
    cached = store.get(key)
    if cached is not None:
        return array_from_npy(cached[1])
    features = control_features(captions, control, embedder, store=store, pool=pool, lexicon=lexicon)
    r = encode_features(ds, features).r
    store.put(key, "npy", array_to_npy(r))
    return r


def compare_controls(ds: Dataset, source: str, embedder: str, *, store: Store, pool, lexicon=None, report=None) -> dict:
    """Per control: where the full caption beats it, overall and per region (see compare_per_unit),
    plus ``mean_r`` of the control and, for word classes, ``captions_with_words`` (fraction)."""
    full = fit_encoding(ds, source, embedder, store=store, pool=pool).r
    labels, names = unit_regions(ds)
    masks = {str(name): labels == code for code, name in enumerate(names) if code > 0 and (labels == code).any()}
    captions = _complete_captions(ds, source, store)
    out = {}
    for k, control in enumerate(CONTROLS):
        if report:
            report(k, len(CONTROLS), f"encoding on {control} features")
        r = control_r(ds, source, embedder, control, store=store, pool=pool, lexicon=lexicon)
        summary = compare_per_unit(full, r, masks=masks)
        summary.pop("difference", None)  # the per-unit map is served separately, not in summaries
        summary["mean_r"] = float(np.nanmean(r))
        if control in WORD_CLASS_OF:
            summary["captions_with_words"] = float(np.mean([bool(c) for c in reduced_captions(captions, control, lexicon)]))
        out[control] = summary
    if report:
        report(len(CONTROLS), len(CONTROLS), "compared")
    return out
