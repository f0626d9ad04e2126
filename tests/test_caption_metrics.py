"""Caption metrics against the MS-COCO evaluation code (pycocoevalcap, in the `dev` extra).

Compared here:
* tokenisation: ``ptb_tokenize`` vs pycocoevalcap's PTBTokenizer (Stanford CoreNLP 3.4.1 jar,
  needs Java) -- identical on the realistic captions below;
* BLEU-1..4, ROUGE-L, CIDEr-D: vs pycocoevalcap's Bleu, Rouge, Cider fed the *same* tokenised
  strings (to isolate the tokenizer) -- corpus and per-item, to 1e-9 (they agree to ~1e-15);
* METEOR: vs the METEOR 1.5 jar shipped in pycocoevalcap run as pycocoevalcap runs it (``-l en
  -norm``) plus ``-m exact`` (the only module we implement) -- the ``-norm`` normaliser token for
  token, sufficient statistics identical, scores to 1e-9, also on raw hyphenated, punctuated and
  upper-case captions through pycocoevalcap's tokenizer; and, informatively, vs pycocoevalcap's
  full METEOR (stem + synonym + paraphrase), which we do not reproduce.

Java 17 is required for the Java-based comparisons; where it or pycocoevalcap is missing these
tests fail (not skip) so that a missing reference is noticed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from backend.analysis.caption_metrics import (
    bleu,
    caption_metrics,
    cider,
    embedding_similarity,
    METEOR_NAME,
    meteor,
    meteor_normalize,
    meteor_stats,
    ptb_tokenize,
    rouge_l,
    sentence_scores,
)

# Twelve COCO-style items: references written in the style of MS-COCO (five per item, mixed case
# and punctuation), candidates ranging from near-copies to unrelated, with repeated words that
# make METEOR's aligner choose between several alignments.
REFERENCES = [
    ["A man riding a wave on top of a surfboard.", "A surfer rides a large wave in the ocean.",
     "A person on a surfboard riding a wave.", "Man surfing on a big blue wave!",
     "a surfer in a wetsuit catching a wave"],
    ["Two dogs playing with a frisbee in the park.", "A couple of dogs running on the grass.",
     "Two brown dogs chase a red frisbee.", "Dogs play in a grassy field with a toy.",
     "two dogs are playing together on a lawn"],
    ["A plate of food with broccoli, rice and chicken.", "A white plate topped with rice and vegetables.",
     "Chicken and broccoli on a plate next to a fork.", "A healthy meal of rice, chicken, and greens.",
     "a dinner plate with meat, rice and broccoli"],
    ["A red double-decker bus driving down a city street.", "A bus is traveling on the road in London.",
     "The red bus is stopped at the curb.", "A double decker bus on a busy street.",
     "Red tour bus driving past some buildings"],
    ["A cat sitting on top of a laptop computer.", "A cat is lying on a keyboard.",
     "The cat's paws are on the laptop's keys.", "A gray cat sits on an open laptop.",
     "cat laying on a computer on a desk"],
    ["A kitchen with a stove, a sink and a refrigerator.", "A small kitchen with white cabinets.",
     "The kitchen has wooden cabinets and a black oven.", "An empty kitchen with appliances.",
     "a clean kitchen with a window over the sink"],
    ["A man holding a tennis racket on a tennis court.", "A tennis player swings at the ball.",
     "A man is playing tennis on a clay court.", "Tennis player in white about to hit a ball.",
     "a person hitting a tennis ball with a racquet"],
    ["A giraffe standing next to a tree in a field.", "A tall giraffe eating leaves from a tree.",
     "A giraffe in the wild near some trees.", "One giraffe is standing in the grass.",
     "the giraffe is reaching up to the branches"],
    ["A bathroom with a toilet and a sink.", "A white toilet next to a bathtub.",
     "A small bathroom that has a toilet, sink and mirror.", "The bathroom is clean and white.",
     "a toilet and a sink in a tiled bathroom"],
    ["A group of people standing around a table.", "People are gathered at a party.",
     "Several people sitting at a long dinner table.", "A family eating dinner together.",
     "friends sharing a meal at a restaurant"],
    ["A stop sign at the corner of a street.", "A red stop sign on a pole.",
     "The stop sign is next to a tree.", "A street sign that says STOP.",
     "a stop sign near a road with cars"],
    ["A clock tower in the middle of a town.", "A tall tower with a clock on it.",
     "The clock on the building says it's noon.", "A large clock tower against a blue sky.",
     "an old clock tower above the buildings"],
]
CANDIDATES = [
    "A man riding a wave on top of a surfboard.",          # copy of a reference
    "Two dogs are playing with a frisbee on the grass.",
    "A plate of rice and broccoli and chicken.",
    "A red bus driving down the street.",
    "A cat laying on a laptop on a desk.",
    "A kitchen with a sink and a sink and a stove.",       # repeats: the aligner has choices
    "A tennis player hitting a ball on a court.",
    "A giraffe is standing in a field.",
    "A plate of pizza on a wooden table.",                 # unrelated to its references
    "A group of people sitting around a table eating.",
    "A stop sign on the side of a road.",
    "The the clock the tower the town.",                   # degenerate repeats
]

# Tricky strings for the tokenizer (clitics, abbreviations, numbers, brackets, quotes).
TOKENIZER_EXTRA = [
    "The man's hat is red; the woman's isn't.", "A group of people (some wearing hats) standing.",
    '"Stop" sign at the corner of 5th St. and Main', "A cat on a laptop... looking at the camera?",
    "It's a 3.5-inch floppy disk & a mouse", "Kids don't like broccoli, they'll say: no -- never",
    "A sign that says 'welcome' near a U.S. flag", "People drinking 100% juice for $5 at 10:30 a.m.",
    "A TV remote, a cell-phone and a man\u2019s wallet", "Two zebras grazing in the grass.  ",
    "I'm sure we're here, you've seen it, he'd go", "cannot gonna wanna", "The dogs' toys",
    "A close-up of a pizza with pepperoni, olives, etc.", "an e-mail @ home {braces} [brackets]",
    "Yes!!! what?! A. Lincoln statue in the 1990's", "a plate w/ food and 3/4 of a pie, 1,000 feet",
]


def _pycoco():
    # Fail loudly (not skip) when the reference implementation is missing.
    import pycocoevalcap.meteor.meteor as meteor_module  # pip install -e '.[dev]'

    assert shutil.which("java"), "Java is needed for pycocoevalcap's tokenizer and METEOR"
    # pycocoevalcap is a namespace package (no __init__.py): locate it through a module.
    return Path(meteor_module.__file__).parent.parent


@pytest.fixture(scope="module")
def java_tokenized():
    """The reference tokenisation: pycocoevalcap's PTBTokenizer (Java) on all captions."""
    _pycoco()
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    texts = CANDIDATES + [r for rs in REFERENCES for r in rs] + TOKENIZER_EXTRA
    out = PTBTokenizer().tokenize({i: [{"caption": t}] for i, t in enumerate(texts)})
    return {t: out[i][0] for i, t in enumerate(texts)}


@pytest.fixture(scope="module")
def tokenized(java_tokenized):
    """Candidates and references as pycocoevalcap scores them (tokenised by the Java tokenizer)."""
    cands = [java_tokenized[c] for c in CANDIDATES]
    refs = [[java_tokenized[r] for r in rs] for rs in REFERENCES]
    return cands, refs


def _coco_dicts(cands, refs):
    return {i: list(r) for i, r in enumerate(refs)}, {i: [c] for i, c in enumerate(cands)}


# ---------------------------------------------------------------------------------- tokenizer

def test_tokenizer_matches_ptb_tokenizer(java_tokenized):
    mismatches = {t: (" ".join(ptb_tokenize(t)), ref) for t, ref in java_tokenized.items()
                  if " ".join(ptb_tokenize(t)) != ref}
    assert not mismatches, mismatches


def test_tokenizer_known_quirks():
    # COCO evaluation keeps bracket tokens (its removal list is upper-case, tokens lower-case).
    assert ptb_tokenize("A dog (brown).") == ["a", "dog", "-lrb-", "brown", "-rrb-"]
    assert ptb_tokenize("Isn't it the U.S. flag?") == ["is", "n't", "it", "the", "u.s.", "flag"]
    assert ptb_tokenize("") == []


# ------------------------------------------------------------------------ BLEU / ROUGE / CIDEr

def test_bleu_matches_pycocoevalcap(tokenized):
    from pycocoevalcap.bleu.bleu import Bleu

    cands, refs = tokenized
    ref_score, ref_items = Bleu(4).compute_score(*_coco_dicts(cands, refs), verbose=0)
    ours, items = bleu(cands, refs, tokenize=False, per_item=True)
    np.testing.assert_allclose(ours, ref_score, rtol=0, atol=1e-9)
    np.testing.assert_allclose(items, np.array(ref_items).T, rtol=0, atol=1e-9)
    assert 0.3 < ours[3] < ours[0] < 1          # realistic range, decreasing with n


def test_bleu_brevity_penalty_and_closest_length():
    from pycocoevalcap.bleu.bleu import Bleu

    # Short candidates (brevity penalty) and equidistant reference lengths (tie -> shorter).
    cands = ["a dog", "a cat on a mat", "the bird"]
    refs = [["a dog runs", "a dog"], ["a cat sat", "a cat sat on the mat now"], ["a bird flies", "x"]]
    ref_score, ref_items = Bleu(4).compute_score(*_coco_dicts(cands, refs), verbose=0)
    ours, items = bleu(cands, refs, tokenize=False, per_item=True)
    np.testing.assert_allclose(ours, ref_score, rtol=0, atol=1e-9)
    np.testing.assert_allclose(items, np.array(ref_items).T, rtol=0, atol=1e-9)


def test_rouge_l_matches_pycocoevalcap(tokenized):
    from pycocoevalcap.rouge.rouge import Rouge

    cands, refs = tokenized
    ref_score, ref_items = Rouge().compute_score(*_coco_dicts(cands, refs))
    ours, items = rouge_l(cands, refs, tokenize=False, per_item=True)
    assert abs(ours - ref_score) < 1e-9
    np.testing.assert_allclose(items, ref_items, rtol=0, atol=1e-9)


def test_cider_matches_pycocoevalcap(tokenized):
    from pycocoevalcap.cider.cider import Cider

    cands, refs = tokenized
    ref_score, ref_items = Cider().compute_score(*_coco_dicts(cands, refs))
    ours, items = cider(cands, refs, tokenize=False, per_item=True)
    assert abs(ours - ref_score) < 1e-9
    np.testing.assert_allclose(items, ref_items, rtol=0, atol=1e-9)
    # Including one-word sentences, where pycocoevalcap's bigram-count "length" matters.
    c2, r2 = cands[:5] + ["dog"], refs[:5] + [["dog", "a dog", "dogs"]]
    ref_score, ref_items = Cider().compute_score(*_coco_dicts(c2, r2))
    ours, items = cider(c2, r2, tokenize=False, per_item=True)
    assert abs(ours - ref_score) < 1e-9
    np.testing.assert_allclose(items, ref_items, rtol=0, atol=1e-9)


def test_raw_text_goes_through_the_tokenizer(tokenized):
    # With tokenize=True (default) raw captions give the same scores as Java-tokenised ones.
    cands, refs = tokenized
    assert bleu(CANDIDATES, REFERENCES) == bleu(cands, refs, tokenize=False)
    assert cider(CANDIDATES, REFERENCES) == cider(cands, refs, tokenize=False)


# ------------------------------------------------------------------------------------- METEOR

def _java_meteor(cands, refs, args):
    """Score with the METEOR 1.5 jar the way pycocoevalcap does (SCORE lines, then one EVAL)."""
    jar = _pycoco() / "meteor" / "meteor-1.5.jar"
    cmd = ["java", "-Xmx2G", "-jar", str(jar), "-", "-", "-stdio", "-l", "en", *args]
    score_lines = "".join(f"SCORE ||| {' ||| '.join(rs)} ||| {c}\n" for c, rs in zip(cands, refs))
    stats = subprocess.run(cmd, input=score_lines, capture_output=True, text=True, check=True,
                           timeout=120).stdout.strip().split("\n")
    out = subprocess.run(cmd, input="EVAL ||| " + " ||| ".join(stats) + "\n", capture_output=True,
                         text=True, check=True, timeout=120).stdout.strip().split("\n")
    values = [float(x) for x in out]
    return values[-1], np.array(values[:-1]), [np.array(s.split(), dtype=float) for s in stats]


def test_meteor_exact_matches_meteor_jar(tokenized):
    cands, refs = tokenized
    # Extra pairs with many ambiguous repeats and an empty candidate.
    cands = cands + ["a man and a dog and a man", "", "the the the"]
    refs = refs + [["a dog and a man and a dog", "a man"], ["a cat"], ["the cat the dog the"]]
    ref_score, ref_items, ref_stats = _java_meteor(cands, refs, ["-norm", "-m", "exact"])
    ours, items = meteor(cands, refs, tokenize=False, per_item=True)
    for c, rs, java in zip(cands, refs, ref_stats):
        # Java's line: lengths, function words, 4 modules x (test/ref content, test/ref function)
        # matches, chunks, matched words; only the exact module is used.
        expected = java[[0, 1, 2, 3, 4, 5, 6, 7, 20, 21, 22]]
        np.testing.assert_array_equal(meteor_stats(c, rs, tokenize=False), expected, err_msg=c)
    assert abs(ours - ref_score) < 1e-9
    np.testing.assert_allclose(items, ref_items, rtol=0, atol=1e-9)


def test_meteor_aligner_matches_meteor_jar_on_ambiguous_sentences():
    # Random sentences over a tiny vocabulary: many equal words, so many alignments tie on
    # matches and the beam search's chunk/distance ordering decides (also checked offline on
    # 1,500 such items: all statistics identical).
    rng = np.random.default_rng(0)
    vocab = "a the dog cat on in man with and of red".split()
    cands = [" ".join(rng.choice(vocab, rng.integers(0, 20))) for _ in range(250)]
    refs = [[" ".join(rng.choice(vocab, rng.integers(1, 20))) for _ in range(rng.integers(1, 4))]
            for _ in range(250)]
    ref_score, ref_items, ref_stats = _java_meteor(cands, refs, ["-norm", "-m", "exact"])
    ours, items = meteor(cands, refs, tokenize=False, per_item=True)
    ours_stats = np.array([meteor_stats(c, rs, tokenize=False) for c, rs in zip(cands, refs)])
    np.testing.assert_array_equal(ours_stats, np.array(ref_stats)[:, [0, 1, 2, 3, 4, 5, 6, 7, 20, 21, 22]])
    assert abs(ours - ref_score) < 1e-9
    np.testing.assert_allclose(items, ref_items, rtol=0, atol=1e-9)


# Strings for METEOR's -norm: hyphens, dots, commas, quotes, contractions, case, symbols.
NORMALIZER_CASES = [
    "A Black-And-White Dog, sitting.", "a black-and-white double-decker bus", "U.S.-based co-worker",
    "Mr. Smith met Dr. Who. St. Louis. No. 5 and No. more", "End with Mr.", "end with mr.",
    "a.m. p.m. i.e. e.g. etc. vs. v. inc. Inc. Ph.D.", "well... ok -- yes --- no .... end..",
    "'quoted' ``double'' a ' b 'tis rock'n'roll o'neill 1990's '90s", "the dog's toy isn't here",
    "x, y ,z 1,000 a,1 1,a 3.5.2", "100% a/b c&d x+y #1 @home <tag> [br] {c} ~z ^ * = | end",
    "\u201csmart\u201d \u2018quotes\u2019 \u2013 dash \u2014 emdash", "caf\u00e9-bar na\u00efve's Z\u00fcrich",
    "a-b-c x--y-z a.-b", "A. Lincoln ABC. Def. ghi.", "tab\tsep  multi   space", "", "-", ".",
]


def test_meteor_normalize_matches_meteor_jar_normalizer():
    """Token for token the jar's own Normalizer (English, punctuation kept) + lower-casing, on raw
    strings and on the PTB-tokenised strings COCO evaluation actually sends it."""
    jar = _pycoco() / "meteor" / "meteor-1.5.jar"
    lines = NORMALIZER_CASES + TOKENIZER_EXTRA + [" ".join(ptb_tokenize(t)) for t in NORMALIZER_CASES + TOKENIZER_EXTRA]
    out = subprocess.run(["java", "-cp", str(jar), "edu.cmu.meteor.util.Normalizer", "en", "true"],
                         input="\n".join(lines) + "\n", capture_output=True, text=True, check=True,
                         timeout=120).stdout.split("\n")
    mismatches = {t: (meteor_normalize(t), j.lower().split()) for t, j in zip(lines, out)
                  if meteor_normalize(t) != j.lower().split()}
    assert not mismatches, mismatches
    assert meteor_normalize("A black-and-white U.S. flag.") == ["a", "black", "and", "white", "us", "flag", "."]


def test_meteor_matches_pycocoevalcap_on_hyphens_punctuation_and_case():
    """Raw captions as pycocoevalcap scores them: its PTBTokenizer, then the jar with its ``-norm``
    (plus ``-m exact``). Before ``meteor`` normalised, the hyphenated caption scored 0.197
    instead of 1.0 and "close-up ... hot-dog" 0.151 instead of 0.494 (corpus 0.291 vs 0.499)."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    cands = ["A black-and-white photo of a double-decker bus.", "Two men playing frisbee in a sun-lit park.",
             "A close-up of a hot-dog with ketchup.", "THE DOG'S BALL IS RED!", "A U.S. flag on a pole, waving.",
             "An X-ray of a hand; it's broken...", "A man (in a red T-shirt) rides a bike."]
    refs = [["A black and white photo of a double decker bus.", "An old bus."],
            ["Two men play frisbee in a sunlit park."], ["Close up of a hot dog with ketchup and mustard."],
            ["The dog's ball is red."], ["The US flag waving on a pole."], ["An x ray of a broken hand"],
            ["A man in a red t shirt riding a bicycle.", "Someone rides a bike"]]
    texts = cands + [r for rs in refs for r in rs]
    out = PTBTokenizer().tokenize({i: [{"caption": t}] for i, t in enumerate(texts)})
    java_tok = {t: out[i][0] for i, t in enumerate(texts)}
    ref_score, ref_items, ref_stats = _java_meteor([java_tok[c] for c in cands],
                                                   [[java_tok[r] for r in rs] for rs in refs], ["-norm", "-m", "exact"])
    ours, items = meteor(cands, refs, per_item=True)  # raw text: our PTB tokeniser, then -norm
    assert abs(ours - ref_score) < 1e-9
    np.testing.assert_allclose(items, ref_items, rtol=0, atol=1e-9)
    for c, rs, java in zip(cands, refs, ref_stats):
        np.testing.assert_array_equal(meteor_stats(c, rs), java[[0, 1, 2, 3, 4, 5, 6, 7, 20, 21, 22]], err_msg=c)
    assert items[0] == pytest.approx(1.0)  # hyphens removed on both sides: an exact copy
    for i, c in enumerate(cands):
        assert sentence_scores(c, refs[i])["meteor"] == pytest.approx(items[i], abs=1e-12)


@pytest.mark.slow
def test_meteor_exact_vs_full_pycocoevalcap_meteor(tokenized):
    """Informative: how far exact-only METEOR is from the METEOR that papers report.

    pycocoevalcap's Meteor also matches stems, WordNet synonyms and paraphrases (loading its
    paraphrase table takes ~10-15 s). We only require exact-only <= full at corpus level and a
    strong correlation of the per-item scores.
    """
    from pycocoevalcap.meteor.meteor import Meteor

    cands, refs = tokenized
    full, full_items = Meteor().compute_score(*_coco_dicts(cands, refs))
    ours, items = meteor(cands, refs, tokenize=False, per_item=True)
    # Per item exact-only can exceed full METEOR (more matches may mean more chunks, or another
    # best reference), so only the corpus score is bounded.
    assert ours <= full + 1e-9 and full - ours < 0.1, (ours, full)
    assert np.corrcoef(items, full_items)[0, 1] > 0.9


# -------------------------------------------------------------------------------- sanity

def test_identical_captions_score_maximum():
    caps = [rs[0] for rs in REFERENCES]
    refs = [[r] for r in caps]
    b = bleu(caps, refs)
    np.testing.assert_allclose(b, 1.0, atol=1e-9)
    assert rouge_l(caps, refs) == pytest.approx(1.0)
    m, m_items = meteor(caps, refs, per_item=True)   # copies: no fragmentation penalty
    assert m == pytest.approx(1.0) and np.allclose(m_items, 1.0)
    s = sentence_scores(caps[0], [caps[0]])
    assert all(v == pytest.approx(1.0) for v in s.values()), s
    # CIDEr of a copy is the maximum over candidates for that item.
    _, items = cider(caps, REFERENCES, per_item=True)
    for i in range(len(caps)):
        others = [CANDIDATES[i], "a photo of something"]
        _, alt = cider([*caps[:i], *others[:1], *caps[i + 1:]], REFERENCES, per_item=True)
        assert items[i] >= alt[i] - 1e-12


def test_unrelated_captions_score_low():
    unrelated = ["An airplane flying over snowy mountains."] * len(REFERENCES)
    m = caption_metrics(unrelated, REFERENCES)["corpus"]
    good = caption_metrics(CANDIDATES, REFERENCES)["corpus"]
    assert m["bleu4"] < 0.05 and m["cider"] < 0.1 and m["meteor"] < 0.15 and m["rouge_l"] < 0.35
    for k in m:
        assert good[k] > m[k], k


def test_caption_metrics_and_sentence_scores_are_consistent():
    res = caption_metrics(CANDIDATES, REFERENCES)
    assert set(res["corpus"]) == {"bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider"}
    assert set(res["names"]) == set(res["corpus"])
    assert res["names"]["meteor"] == METEOR_NAME == "METEOR 1.5, exact matching only, -norm"
    for v in res["per_item"].values():
        assert v.shape == (len(CANDIDATES),) and np.all(np.isfinite(v))
    for i in (0, 5, 11):
        s = sentence_scores(CANDIDATES[i], REFERENCES[i])
        for k, v in s.items():
            assert v == pytest.approx(res["per_item"][k][i], abs=1e-12), k


def test_input_validation():
    with pytest.raises(ValueError):
        bleu(["a"], [["a"], ["b"]])
    with pytest.raises(ValueError):
        rouge_l(["a"], [[]])
    with pytest.raises(TypeError):
        cider("a dog", [["a dog"]])


# ----------------------------------------------------------------------- embedding similarity

def test_embedding_similarity():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 384))
    b = rng.normal(size=(50, 384))
    sim = embedding_similarity(a, b)
    expected = [x @ y / np.linalg.norm(x) / np.linalg.norm(y) for x, y in zip(a, b)]
    np.testing.assert_allclose(sim, expected, atol=1e-12)
    np.testing.assert_allclose(embedding_similarity(a, 3 * a), 1.0, atol=1e-12)
    np.testing.assert_allclose(embedding_similarity(a, -a), -1.0, atol=1e-12)
    assert abs(sim.mean()) < 0.05                  # random high-dimensional vectors: ~orthogonal
    z = embedding_similarity(np.zeros((1, 3)), np.ones((1, 3)))
    assert np.isnan(z[0])
    with pytest.raises(ValueError):
        embedding_similarity(a, b[:, :10])
