"""Word-level controls for caption embeddings (Doerig et al., 2025).

A sentence embedding of the whole caption is compared against two controls that keep the words
but lose how they combine: the mean of the caption's word embeddings (a bag of words; word order
and syntax are gone) and the embedding of the caption reduced to one word class (nouns only,
verbs only, ...). :func:`compare_per_unit` summarises, per brain unit, where one model's
encoding accuracy beats another's.

Word classes come from a transparent heuristic (no part-of-speech model is available offline):
a closed list of English function words, then suffix rules. A caller that knows its vocabulary
exactly (the demo world's grammar) passes a ``lexicon`` that overrides the heuristic.
"""

from __future__ import annotations

import re

import numpy as np

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")

#: Word classes :func:`keep_word_classes` knows; ``function`` words are never kept unless asked.
WORD_CLASSES = ("noun", "verb", "adjective", "adverb", "preposition", "function")

# Closed-class English words: articles/determiners, pronouns, conjunctions, auxiliaries and
# modals, quantifiers, number words, and a few particles. Prepositions are listed apart so they
# can be kept.
_FUNCTION = frozenset("""
a an the this that these those some any each every either neither no another other such
all both few many much more most several own same enough
i me my mine myself you your yours yourself yourselves he him his himself she her hers herself
it its itself we us our ours ourselves they them their theirs themselves one ones someone
something somebody anyone anything nobody nothing everyone everything who whom whose which what
and or but nor so yet if than then because while whereas although though as whether
is am are was were be been being has have had having do does did doing done
can could may might must shall should will would
not n't there here very too also just only really quite rather almost
to of 's
two three four five six seven eight nine ten dozen
""".split())
_PREPOSITIONS = frozenset("""
about above across after against along alongside amid among around at atop before behind below
beneath beside besides between beyond by down during except for from in inside into like near
next off on onto opposite out outside over past per round since through throughout toward towards
under underneath until up upon via with within without
""".split())
# Common verbs in image captions that carry no telltale suffix (-ing/-ed forms are caught by
# suffix rules); third-person -s forms are listed because "-s" also marks plural nouns.
_VERBS = frozenset("""
sit sits stand stands lie lies lay lays hold holds ride rides run runs walk walks eat eats
look looks play plays fly flies swim swims jump jumps throw throws catch catches wear wears
carry carries hang hangs rest rests watch watches drink drinks read reads talk talks wait waits
park parks cross crosses pose poses take takes make makes go goes come comes get gets grab grabs
pull pulls push pushes cut cuts cook cooks fill fills cover covers show shows contain contains
sat stood lay held rode ran ate flew swam threw caught wore hung drank took made went came got
""".split())
_ADJECTIVES = frozenset("""
small large big little tiny huge giant tall short long old young new good bad high low
red orange yellow green blue purple pink brown black white gray grey dark light bright
empty full open closed clean dirty wet dry hot cold warm cool busy quiet single double
several various different same other many few whole half plain
wooden golden woolen metallic
""".split())
_ADVERB_SUFFIXES = ("ly",)
_VERB_SUFFIXES = ("ing", "ed")
_ADJECTIVE_SUFFIXES = ("ful", "ous", "ive", "able", "ible", "al", "ic", "ish", "less", "ary", "y")
# Nouns that the suffix rules would misclassify, frequent in captions.
_NOUN_EXCEPTIONS = frozenset("""
building ceiling painting clothing sibling king ring string wing thing evening morning
sky boy toy city country body baby lady party family puppy kitty teddy bunny pony penny
jersey hockey monkey turkey donkey trolley alley valley key journey
animal hospital table vegetable cable bottle apple people bicycle motorcycle vehicle
""".split())


def tokenize(caption: str) -> list[str]:
    """Lower-case words of a caption: runs of letters, with inner apostrophes ("dog's")."""
    return _WORD.findall(caption.lower())


def caption_words(captions: list[str]) -> list[str]:
    """The sorted unique vocabulary of ``captions``, so a caller can embed every word once."""
    return sorted({w for c in captions for w in tokenize(c)})


def word_average(captions: list[str], word_vectors: dict[str, np.ndarray]) -> np.ndarray:
    """float32 [n, d]: per caption, the mean of its words' vectors (a bag-of-words control).

    Every occurrence counts (a repeated word weighs twice). Words missing from ``word_vectors``
    are skipped; a caption with no known word gets a row of zeros. ``d`` is the vectors' length.
    """
    if not word_vectors:
        raise ValueError("word_vectors is empty")
    d = len(next(iter(word_vectors.values())))
    out = np.zeros((len(captions), d), np.float32)
    for i, caption in enumerate(captions):
        vecs = [word_vectors[w] for w in tokenize(caption) if w in word_vectors]
        if vecs:
            out[i] = np.mean(np.asarray(vecs, np.float64), axis=0)
    return out


def word_class(word: str, lexicon: dict[str, str] | None = None) -> str:
    """The class of one lower-case word: one of :data:`WORD_CLASSES`.

    ``lexicon`` (word -> class) wins. Otherwise, a heuristic with known limits: closed lists of
    function words, prepositions and frequent caption verbs/adjectives; then suffixes (-ly adverb,
    -ing/-ed verb, -ful/-ous/-ive/-able/-al/-ic/-y ... adjective, with a list of common nouns
    that only look like that); everything else is a noun. Context is ignored, so a word has one
    class everywhere: "a man *sitting*" and "a *sitting* room" both give a verb, "park" is
    always a verb and "light" always an adjective; unlisted irregular verbs ("sleeps") and
    adjectives without those suffixes ("round") count as nouns.
    """
    if lexicon is not None and word in lexicon:
        return lexicon[word]
    if word in _FUNCTION or word.endswith("'s") and word[:-2] in _FUNCTION:
        return "function"
    if word in _PREPOSITIONS:
        return "preposition"
    if word in _NOUN_EXCEPTIONS:
        return "noun"
    if word in _VERBS:
        return "verb"
    if word in _ADJECTIVES:
        return "adjective"
    if len(word) > 4 and word.endswith(_ADVERB_SUFFIXES):
        return "adverb"
    if len(word) > 4 and word.endswith(_VERB_SUFFIXES):
        return "verb"
    if len(word) > 4 and word.endswith(_ADJECTIVE_SUFFIXES):
        return "adjective"
    return "noun"


def keep_word_classes(caption: str, classes: set[str], lexicon: dict[str, str] | None = None) -> str:
    """The caption reduced to its words of the given classes, in order, space-separated.

    classes: a subset of :data:`WORD_CLASSES`, e.g. ``{"noun"}`` or ``{"noun", "verb"}``.
    lexicon: word -> class overriding the heuristic of :func:`word_class`; entries may be phrases
    ("teddy bear": "noun", "to the left of": "preposition"), matched longest first, so a
    multi-word name is kept or dropped whole.
    """
    unknown = set(classes) - set(WORD_CLASSES)
    if unknown:
        raise ValueError(f"unknown word classes {sorted(unknown)}; known: {WORD_CLASSES}")
    words = tokenize(caption)
    phrases = sorted(
        (tuple(tokenize(k)) for k in (lexicon or {}) if len(tokenize(k)) > 1), key=len, reverse=True
    )
    kept: list[str] = []
    i = 0
    while i < len(words):
        match = next((p for p in phrases if tuple(words[i:i + len(p)]) == p), None)
        if match is not None:
            if lexicon[" ".join(match)] in classes:  # type: ignore[index]
                kept.extend(match)
            i += len(match)
            continue
        if word_class(words[i], lexicon) in classes:
            kept.append(words[i])
        i += 1
    return " ".join(kept)


def compare_per_unit(
    r_a: np.ndarray, r_b: np.ndarray, masks: dict[str, np.ndarray] | None = None
) -> dict:
    """Where model A's per-unit encoding accuracy beats model B's.

    r_a, r_b: float [u] scores of the same units (e.g. test Pearson r); NaNs are ignored.
    masks: optional name -> bool [u] (ROIs, areas).
    Returns {"difference": float32 [u] r_a - r_b, "fraction_a_better": float (over valid units),
    "mean_difference": float, "regions": {name: {"n_units", "fraction_a_better",
    "mean_difference"}}}.
    """
    a, b = np.asarray(r_a, np.float64), np.asarray(r_b, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"r_a and r_b must be 1-D of the same length, got {a.shape} and {b.shape}")
    diff = a - b
    valid = np.isfinite(diff)

    def summary(sel: np.ndarray) -> dict:
        d = diff[sel & valid]
        return {
            "n_units": int(d.size),
            "fraction_a_better": float((d > 0).mean()) if d.size else float("nan"),
            "mean_difference": float(d.mean()) if d.size else float("nan"),
        }

    whole = summary(np.ones_like(valid))
    regions = {}
    for name, mask in (masks or {}).items():
        mask = np.asarray(mask, bool)
        if mask.shape != diff.shape:
            raise ValueError(f"mask {name!r} has shape {mask.shape}, expected {diff.shape}")
        regions[name] = summary(mask)
    return {
        "difference": diff.astype(np.float32),
        "fraction_a_better": whole["fraction_a_better"],
        "mean_difference": whole["mean_difference"],
        "regions": regions,
    }
