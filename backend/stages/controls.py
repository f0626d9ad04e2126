"""Stage: the controls of Doerig et al. — does the caption as a whole predict the brain better than
its words do?

For one caption source and text embedder, the same encoding model is fitted on three feature sets:
the full-caption embedding, the mean of its words' embeddings (order and syntax removed), and the
embedding of the caption reduced to its nouns. Per-unit r of each is compared with the full caption.
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
CONTROLS = ("word-average", "nouns")


def control_features(captions: list[str], control: str, embedder: str, *, store: Store, pool, lexicon=None) -> np.ndarray:
    """float32 [n, d]: the control's features for each caption."""
    if control == "word-average":
        vocabulary = caption_words(captions)
        vectors = embed_texts_cached(vocabulary, embedder, store=store, pool=pool)
        return word_average(captions, dict(zip(vocabulary, vectors, strict=True)))
    if control == "nouns":
        reduced = [keep_word_classes(c, {"noun"}, lexicon=lexicon) or c for c in captions]
        return embed_texts_cached(reduced, embedder, store=store, pool=pool)
    raise ValueError(f"unknown control {control!r}; use one of {CONTROLS}")


def control_r(ds: Dataset, source: str, embedder: str, control: str, *, store: Store, pool, lexicon=None) -> np.ndarray:
    """float32 [n_units]: test r of the encoding model fitted on the control's features (cached)."""
    captions = _complete_captions(ds, source, store)
    key = entry_key(
        stage=STAGE, dataset=dataset_fingerprint(ds), embedder=embedder, control=control,
        captions=hashlib.sha256(json.dumps(captions).encode()).hexdigest(), lexicon=sorted((lexicon or {}).items()),
    )
    cached = store.get(key)
    if cached is not None:
        return array_from_npy(cached[1])
    features = control_features(captions, control, embedder, store=store, pool=pool, lexicon=lexicon)
    r = encode_features(ds, features).r
    store.put(key, "npy", array_to_npy(r))
    return r


def compare_controls(ds: Dataset, source: str, embedder: str, *, store: Store, pool, lexicon=None) -> dict:
    """Per control: where the full caption beats it, overall and per region (see compare_per_unit)."""
    full = fit_encoding(ds, source, embedder, store=store, pool=pool).r
    labels, names = unit_regions(ds)
    masks = {str(name): labels == code for code, name in enumerate(names) if code > 0 and (labels == code).any()}
    out = {}
    for control in CONTROLS:
        summary = compare_per_unit(full, control_r(ds, source, embedder, control, store=store, pool=pool, lexicon=lexicon), masks=masks)
        summary.pop("difference", None)  # the per-unit map is served separately, not in summaries
        out[control] = summary
    return out
