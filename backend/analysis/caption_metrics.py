"""Caption metrics: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D and sentence-embedding similarity.

Plain functions over strings and arrays; no model is loaded here (embeddings are computed
elsewhere and passed in as arrays). The n-gram metrics reproduce the MS-COCO caption evaluation
code (``pycocoevalcap``), which is what captioning and brain-to-caption papers report, without a
runtime dependency on it (it needs Java and ships 100 MB of jars):

* ``bleu``     -- pycocoevalcap ``Bleu(4)``: corpus-level BLEU with the "closest" reference length
                  and its additive smoothing constants (tiny=1e-15 on matches, small=1e-9 on counts).
* ``rouge_l``  -- pycocoevalcap ``Rouge``: LCS-based F-measure with beta=1.2, where precision and
                  recall are each maximised over the references, then averaged over items.
* ``cider``    -- pycocoevalcap ``Cider`` (which is CIDEr-D): tf-idf n-gram vectors (n=1..4) with
                  document frequencies from the references of the evaluated set, clipping, a
                  Gaussian length penalty (sigma=6) and a factor 10.
* ``meteor``   -- METEOR 1.5 (the jar pycocoevalcap runs, with pycocoevalcap's ``-l en -norm``)
                  restricted to its *exact* matching module: the jar's ``-norm`` text
                  normalisation (``meteor_normalize``: punctuation split off, hyphens between
                  words removed, "U.S." -> "us", lower-casing), same English parameters,
                  function-word list, beam-search aligner, best-reference choice and corpus
                  aggregation of sufficient statistics. The stem, WordNet-synonym and paraphrase
                  modules are NOT implemented, so scores are lower than the METEOR that papers
                  report (see ``meteor``'s docstring). Reported as ``METEOR_NAME``.

Text goes through ``ptb_tokenize`` first (unless ``tokenize=False``): an approximation in pure
Python of the Stanford PTBTokenizer + punctuation removal that pycocoevalcap applies before every
metric (see its docstring for what is and is not reproduced).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

__all__ = [
    "METEOR_NAME",
    "METRIC_NAMES",
    "ptb_tokenize",
    "meteor_normalize",
    "bleu",
    "rouge_l",
    "cider",
    "meteor",
    "meteor_stats",
    "embedding_similarity",
    "caption_metrics",
    "sentence_scores",
]

# --------------------------------------------------------------------------------------------
# Tokenisation
# --------------------------------------------------------------------------------------------

# pycocoevalcap.tokenizer.ptbtokenizer.PUNCTUATIONS, verbatim. The tokenizer runs with -lowerCase,
# so its bracket tokens come out as "-lrb-" etc. and are *not* in this (upper-case) list: COCO
# evaluation keeps them as words. We reproduce that quirk rather than fix it, so that scores agree.
PTB_PUNCTUATION = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-",
     ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)

_BRACKETS = {"(": "-LRB-", ")": "-RRB-", "{": "-LCB-", "}": "-RCB-", "[": "-LSB-", "]": "-RSB-"}
# Typographic quotes/dashes are mapped to ASCII the way PTBTokenizer normalises them.
_UNICODE_MAP = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
                              "\u2013": " -- ", "\u2014": " -- ", "\n": " ", "\r": " "})
# Abbreviations whose final period PTBTokenizer keeps as part of the word (lower-cased).
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st jr sr mt vs etc inc co corp ltd ave blvd rd gen gov sen rep capt col lt "
    "sgt fig jan feb mar apr jun jul aug sep sept oct nov dec".split()
)
# Words PTBTokenizer splits in two.
_SPLIT_WORDS = {"cannot": ["can", "not"], "gonna": ["gon", "na"], "gotta": ["got", "ta"],
                "wanna": ["wan", "na"], "gimme": ["gim", "me"], "lemme": ["lem", "me"]}
_CLITIC = re.compile(r"^(.+?)(n't|'s|'m|'d|'ll|'re|'ve)$", re.IGNORECASE)

_TOKEN = re.compile(
    r"""
      (?P<bracket>-(?:LRB|RRB|LCB|RCB|LSB|RSB)-)
    | (?P<clitic>'(?:s|m|d|ll|re|ve)\b)                     # a detached clitic: "food 's"
    | (?P<year>'\d\w*)                                     # '90s
    | (?P<word>\w+(?:(?:[-./@&']|(?<=\d)[,:](?=\d))\w+)*\.?)  # words, 3.5, 1,000, 10:30, u.s.
    | (?P<ellipsis>\.{2,})
    | (?P<dashes>-{2,})
    | (?P<bang>[!?]+)
    | (?P<other>\S)
    """,
    re.VERBOSE,
)


def _is_abbreviation(word_with_period: str) -> bool:
    stem = word_with_period[:-1]
    if "." in stem:                     # u.s. a.m. e.g. i.e. (and www.x.com. -- PTB keeps those too)
        return True
    if len(stem) == 1 and stem.isupper():   # an initial: "A. Lincoln"
        return True
    return stem.lower() in _ABBREVIATIONS


def ptb_tokenize(text: str) -> list[str]:
    """Tokenise one caption like pycocoevalcap's PTBTokenizer + punctuation removal.

    Returns the lower-cased tokens COCO evaluation scores (punctuation tokens dropped).

    Reproduced: lower-casing; clitics split off ("man's" -> "man 's", "isn't" -> "is n't",
    "can't" -> "ca n't", "I'd've" -> "i 'd 've"); "cannot/gonna/gotta/wanna" split; punctuation
    split off words and removed (. , ; : ? ! ' " ` - -- ... and typographic quotes/dashes), except
    inside numbers (3.5, 1,000, 10:30), hyphenated words (black-and-white), dotted acronyms
    (u.s., a.m., e.g.), initials ("A.") and common abbreviations (st., mr., etc.); "$", "%", "#", "/"
    split off as their own tokens; runs like "!!!" or "?!" kept as tokens; brackets become
    "-lrb-"/"-rrb-"/"-lcb-"/"-rcb-"/"-lsb-"/"-rsb-" and are *kept* (a quirk of COCO evaluation:
    its removal list is upper-case while the tokenizer lower-cases).

    Not reproduced (rare in captions): context-dependent periods ("no. 5"), "y'all", "'n'",
    PTB's currency/fraction normalisations and other special cases of the Stanford lexer.
    The test suite checks agreement with the Java tokenizer on realistic captions.
    """
    text = text.translate(_UNICODE_MAP)
    for bracket, name in _BRACKETS.items():
        text = text.replace(bracket, f" {name} ")
    tokens: list[str] = []
    for m in _TOKEN.finditer(text):
        kind, tok = m.lastgroup, m.group()
        if kind == "word":
            period = ""
            if tok.endswith(".") and not _is_abbreviation(tok):
                tok, period = tok[:-1], "."
            low = tok.lower()
            if low in _SPLIT_WORDS:
                tokens.extend(_SPLIT_WORDS[low])
            else:
                # Peel clitics from the end, repeatedly ("i'd've" -> i 'd 've).
                tail: list[str] = []
                while c := _CLITIC.match(tok):
                    tok, clitic = c.group(1), c.group(2)
                    tail.insert(0, clitic)
                    if clitic.lower() == "n't":      # "shouldn't've": nothing left to peel
                        break
                tokens.append(tok)
                tokens.extend(tail)
            if period:
                tokens.append(period)
        elif kind == "ellipsis":
            tokens.append("...")
        elif kind == "dashes":
            tokens.append("--")
        elif kind == "other" and tok in "\"'`":
            tokens.append("``")          # quotes: dropped below, as PTB's `` / '' are
        else:
            tokens.append(tok)
    return [t for t in (tok.lower() for tok in tokens) if t and t not in PTB_PUNCTUATION]


def _prepare(candidates: Sequence[str], references: Sequence[Sequence[str] | str],
             tokenize: bool) -> tuple[list[list[str]], list[list[list[str]]]]:
    """Validate inputs and turn them into token lists (one candidate, >= 1 references per item)."""
    if isinstance(candidates, str):
        raise TypeError("candidates must be a sequence of strings, one per item")
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference lists")
    if len(candidates) == 0:
        raise ValueError("no captions to score")
    split = ptb_tokenize if tokenize else str.split
    cands = [split(c) for c in candidates]
    refs = []
    for i, r in enumerate(references):
        r = [r] if isinstance(r, str) else list(r)
        if not r:
            raise ValueError(f"item {i} has no reference captions")
        refs.append([split(x) for x in r])
    return cands, refs


# --------------------------------------------------------------------------------------------
# BLEU (pycocoevalcap Bleu: corpus-level, "closest" reference length)
# --------------------------------------------------------------------------------------------

_BLEU_TINY = 1e-15   # added to matched n-gram counts (so 0 matches give ~0, not 0/0)
_BLEU_SMALL = 1e-9   # added to candidate n-gram counts and reference length


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    counts: Counter = Counter()
    for k in range(1, n + 1):
        for i in range(len(tokens) - k + 1):
            counts[tuple(tokens[i:i + k])] += 1
    return counts


def _bleu_item_stats(cand: list[str], refs: list[list[str]], n: int) -> tuple[int, int, list[int], list[int]]:
    """(candidate length, effective reference length, matched n-grams, candidate n-grams) per order."""
    max_ref: dict = {}
    for r in refs:
        for g, c in _ngrams(r, n).items():
            if c > max_ref.get(g, 0):
                max_ref[g] = c
    testlen = len(cand)
    # "closest" reference length; on a tie the shorter one (pycocoevalcap: min over (|diff|, len)).
    reflen = min((abs(len(r) - testlen), len(r)) for r in refs)[1]
    correct = [0] * n
    for g, c in _ngrams(cand, n).items():
        correct[len(g) - 1] += min(max_ref.get(g, 0), c)
    guess = [max(0, testlen - k) for k in range(n)]
    return testlen, reflen, correct, guess


def _bleu_from_stats(testlen: float, reflen: float, correct: Sequence[float],
                     guess: Sequence[float]) -> list[float]:
    # Same operation order as pycocoevalcap so that results agree to the last bits.
    scores, prod = [], 1.0
    for k in range(len(correct)):
        prod *= float(correct[k] + _BLEU_TINY) / (guess[k] + _BLEU_SMALL)
        scores.append(prod ** (1.0 / (k + 1)))
    ratio = (testlen + _BLEU_TINY) / (reflen + _BLEU_SMALL)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores


def bleu(candidates: Sequence[str], references: Sequence[Sequence[str]], n: int = 4, *,
         tokenize: bool = True, per_item: bool = False):
    """Corpus BLEU-1..n as in pycocoevalcap's ``Bleu(n)``.

    candidates: one caption per item; references: a list of >= 1 reference captions per item.
    Returns ``[BLEU-1, ..., BLEU-n]`` (floats in [0, 1]); the clipped n-gram counts and the
    lengths are summed over the corpus before the geometric mean and brevity penalty (so this is
    not the mean of sentence scores). The effective reference length of an item is the reference
    length closest to the candidate's (shorter on ties).
    With ``per_item=True`` returns ``(scores, per_item_scores)`` where ``per_item_scores`` is an
    array [n_items, n] of pycocoevalcap's sentence-level BLEU (same smoothing constants).
    """
    cands, refs = _prepare(candidates, references, tokenize)
    stats = [_bleu_item_stats(c, r, n) for c, r in zip(cands, refs)]
    testlen = sum(s[0] for s in stats)
    reflen = sum(s[1] for s in stats)
    correct = [sum(s[2][k] for s in stats) for k in range(n)]
    guess = [sum(s[3][k] for s in stats) for k in range(n)]
    scores = _bleu_from_stats(testlen, reflen, correct, guess)
    if not per_item:
        return scores
    return scores, np.array([_bleu_from_stats(*s) for s in stats], dtype=np.float64).reshape(len(stats), n)


# --------------------------------------------------------------------------------------------
# ROUGE-L (pycocoevalcap Rouge)
# --------------------------------------------------------------------------------------------

def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def _rouge_l_item(cand: list[str], refs: list[list[str]], beta: float) -> float:
    if not cand:
        return 0.0
    prec = rec = 0.0
    for r in refs:
        lcs = _lcs_length(r, cand)
        prec = max(prec, lcs / len(cand))
        rec = max(rec, lcs / len(r) if r else 0.0)
    if prec == 0 or rec == 0:
        return 0.0
    return ((1 + beta ** 2) * prec * rec) / float(rec + beta ** 2 * prec)


def rouge_l(candidates: Sequence[str], references: Sequence[Sequence[str]], *, beta: float = 1.2,
            tokenize: bool = True, per_item: bool = False):
    """ROUGE-L as in pycocoevalcap's ``Rouge``: mean over items of an LCS F-measure in [0, 1].

    Per item, precision = LCS/len(candidate) and recall = LCS/len(reference) are each maximised
    over the references *separately* (pycocoevalcap's convention, not the F of the best
    reference), then F = (1 + beta^2) P R / (R + beta^2 P) with beta = 1.2. An empty candidate
    scores 0. ``per_item=True`` returns ``(mean, array [n_items])``.
    """
    cands, refs = _prepare(candidates, references, tokenize)
    items = np.array([_rouge_l_item(c, r, beta) for c, r in zip(cands, refs)], dtype=np.float64)
    score = float(np.mean(items))
    return (score, items) if per_item else score


# --------------------------------------------------------------------------------------------
# CIDEr-D (pycocoevalcap Cider)
# --------------------------------------------------------------------------------------------

def _cider_vec(counts: Counter, df: dict, log_n_items: float, n: int):
    vec = [dict() for _ in range(n)]
    norm = [0.0] * n
    bigrams = 0
    for g, tf in counts.items():
        k = len(g) - 1
        w = float(tf) * (log_n_items - math.log(max(1.0, df.get(g, 0.0))))
        vec[k][g] = w
        norm[k] += w * w
        if k == 1:
            # pycocoevalcap counts *bigrams* as the "length" used by the length penalty
            # (len - 1 for sentences of >= 2 words); reproduced for agreement.
            bigrams += tf
    return vec, [math.sqrt(x) for x in norm], bigrams


def cider(candidates: Sequence[str], references: Sequence[Sequence[str]], *, n: int = 4,
          sigma: float = 6.0, tokenize: bool = True, per_item: bool = False):
    """CIDEr-D as in pycocoevalcap's ``Cider`` (the COCO "CIDEr" is the CIDEr-D variant).

    Each sentence becomes tf-idf vectors of its 1..n-grams, with idf = log(#items) - log(df) where
    df counts the items whose *references* contain the n-gram (computed from this evaluated set,
    so the score depends on the set: a single item always scores 0). Per item and order, the
    candidate-reference similarity is sum(min(v_c, v_r) * v_r) / (|v_c| |v_r|) (clipping), times a
    Gaussian length penalty exp(-d^2 / (2 sigma^2)) with sigma = 6 (d is the difference in numbers
    of bigrams, as in pycocoevalcap); it is averaged over orders and references and multiplied by
    10. Returns the mean over items (typically 0..~3); ``per_item=True`` returns ``(mean, array)``.
    """
    cands, refs = _prepare(candidates, references, tokenize)
    ref_counts = [[_ngrams(r, n) for r in rs] for rs in refs]
    df: Counter = Counter()
    for rc in ref_counts:
        df.update(set(g for c in rc for g in c))
    log_n_items = math.log(float(len(cands)))
    items = []
    for cand, rcs in zip(cands, ref_counts):
        vec, norm, length = _cider_vec(_ngrams(cand, n), df, log_n_items, n)
        total = np.zeros(n)
        for rc in rcs:
            vec_r, norm_r, length_r = _cider_vec(rc, df, log_n_items, n)
            penalty = math.e ** (-(float(length - length_r) ** 2) / (2 * sigma ** 2))
            for k in range(n):
                val = sum(min(w, vec_r[k].get(g, 0.0)) * vec_r[k].get(g, 0.0) for g, w in vec[k].items())
                if norm[k] != 0 and norm_r[k] != 0:
                    val /= norm[k] * norm_r[k]
                total[k] += val * penalty
        items.append(float(np.mean(total)) / len(rcs) * 10.0)
    items = np.array(items, dtype=np.float64)
    score = float(np.mean(items))
    return (score, items) if per_item else score


# --------------------------------------------------------------------------------------------
# METEOR 1.5, exact-match module only
# --------------------------------------------------------------------------------------------

# METEOR 1.5 English "rank" task (its default): alpha, beta, gamma, delta.
METEOR_ALPHA, METEOR_BETA, METEOR_GAMMA, METEOR_DELTA = 0.85, 0.20, 0.60, 0.75
_METEOR_BEAM = 40
# METEOR 1.5's English function-word list (function/english.words in meteor-1.5.jar). Matches and
# lengths of these words are weighted by 1 - delta, of all other words by delta.
METEOR_FUNCTION_WORDS = frozenset([
    "the", ",", ".", "to", "of", "and", "a", "in", "that", "for", '"', "is", "on", "'s", "it",
    "with", "was", "as", "said", "at", "he", "by", "be", "from", "have", "has", "are", "his",
    "but", "an", "this", "not", "i", "will", "\u2019", "they", ")", "-rrb-", "(", "-lrb-", "who",
    "their", "had", "we", "which", "were", "been", "more", "or", "s", "its", "would", "about",
    "new", "one", "after", "you", ":", "also", "up", "when", "there", "than", "$", "all", "out",
    "her", "people", "she", "year", "two", "-", "can", "if", "last", "first", "\u201c", "over",
    "other", "\u201d", "into", "some", "what", "so", "--", "no", "time", "years", "could", "?",
    "'t", "\u2014", "'",
])

# What ``meteor`` reports, exactly: the variant of METEOR and its preprocessing.
METEOR_NAME = "METEOR 1.5, exact matching only, -norm"
METRIC_NAMES = {
    **{f"bleu{k}": f"BLEU-{k} (pycocoevalcap)" for k in range(1, 5)},
    "meteor": METEOR_NAME,
    "rouge_l": "ROUGE-L (pycocoevalcap, beta 1.2)",
    "cider": "CIDEr-D (pycocoevalcap)",
}

# METEOR 1.5's Normalizer (edu.cmu.meteor.util.Normalizer, English, punctuation kept), which the
# jar applies to every segment under ``-norm`` before lower-casing. Character classes as in the
# jar: its letters are Latin-1, Latin Extended-A and Cyrillic; Java's \s and \p{Digit} are ASCII.
_NORM_ALPHA = ("A-Za-z\u0160\u017d\u0161\u017e\u0178\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u017e"
               "\u0400-\u04ff\u0500-\u0527\ua640-\ua66e\ua67e-\ua697\u1d00-\u1d7f")
_NORM_ALNUM = "0-9" + _NORM_ALPHA
_NORM_SYMBOL = re.compile(f"([^{_NORM_ALNUM} \t\n\x0b\f\r.'`,\\-\u2018\u2019])")  # split off other symbols
_NORM_RULES = [  # (pattern, replacement), applied in this order after the dots are protected
    (re.compile(r"([^0-9]),([^0-9])"), r"\1 , \2"),  # commas, except inside numbers
    (re.compile(r"([0-9]),([^0-9])"), r"\1 , \2"),
    (re.compile(r"([^0-9]),([0-9])"), r"\1 , \2"),
    (re.compile("[`\u2018\u2019]"), "'"),  # quotes
    (re.compile("[\u201c\u201d]|''"), ' " '),
]
_NORM_RM_DASH = re.compile(f"([{_NORM_ALNUM}.])-([{_NORM_ALNUM}])")  # "black-and-white" -> "black and white"
_NORM_APOSTROPHES = [  # English: contractions split to the right ("dog's" -> "dog 's")
    (re.compile(f"([^{_NORM_ALPHA}])'([^{_NORM_ALPHA}])"), r"\1 ' \2"),
    (re.compile(f"([^{_NORM_ALPHA}0-9])'([{_NORM_ALPHA}])"), r"\1 ' \2"),
    (re.compile(f"([{_NORM_ALPHA}])'([^{_NORM_ALPHA}])"), r"\1 ' \2"),
    (re.compile(f"([{_NORM_ALPHA}])'([{_NORM_ALPHA}])"), r"\1 '\2"),
    (re.compile(r"([0-9])'(s)"), r"\1 '\2"),
]
_NORM_LETTER = re.compile(f"[{_NORM_ALPHA}]")
_NORM_SPACES = re.compile("[ \u2000-\u200a\u202f\u205f\u3000\u00a0]+")
# nonbreaking/english.prefixes in meteor-1.5.jar (from Moses): a final "." after these stays on
# the word; "numeric" ones only before a number.
_NBP_ANY = frozenset(
    [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    + "Adj Adm Adv Asst Bart Bldg Brig Bros Capt Cmdr Col Comdr Con Corp Cpl DR Dr Drs Ens Gen Gov "
      "Hon Hr Hosp Insp Lt MM MR MRS MS Maj Messrs Mlle Mme Mr Mrs Ms Msgr Op Ord Pfc Ph Prof Pvt Rep "
      "Reps Res Rev Rt Sen Sens Sfc Sgt Sr St Supt Surg v vs i.e rev e.g Nos Nr".split()
)
_NBP_NUMERIC = frozenset(["No", "Art", "pp"])


def meteor_normalize(text: str) -> list[str]:
    """Tokens of ``text`` as METEOR 1.5 scores them with ``-norm`` (what pycocoevalcap runs).

    A port of the jar's Normalizer for English with punctuation kept, then lower-casing (in that
    order: "Mr." before a capital stays one token, "mr." before a capital is split): symbols other
    than . ' ` , - are split off; runs of dots kept together; commas split except inside numbers;
    typographic quotes and `` '' made ASCII; en dashes and "--" become "-"; a hyphen between two
    letters/digits (or after a dot) is removed ("black-and-white" -> "black and white", except that
    overlapping matches are skipped as the jar's regex does: "a-b-c" -> "a b-c"); contractions
    split to the right ("dog's" -> "dog 's", "n't" -> "n 't"); a final "." is split off a word
    unless the word is dotted ("u.s." -> "us"), a nonbreaking prefix (Mr., St., ...) or followed
    by a lower-case word. The test suite checks agreement with the jar's Normalizer.
    """
    line = f" {text} "
    line = _NORM_SYMBOL.sub(r" \1 ", line)
    line = re.sub(r"\.([.]+)", r" DOTMULTI\1", line)  # protect "..." while single dots are handled
    while "DOTMULTI." in line:
        line = re.sub(r"DOTMULTI\.([^.])", r"DOTDOTMULTI \1", line)
        line = line.replace("DOTMULTI.", "DOTDOTMULTI")
    for pattern, repl in _NORM_RULES:
        line = pattern.sub(repl, line)
    line = line.replace("\u2013", "-").replace("--", "-")
    line = _NORM_RM_DASH.sub(r"\1 \2", line)
    for pattern, repl in _NORM_APOSTROPHES:
        line = pattern.sub(repl, line)
    words = [w for w in re.split(r"[ \t\n\r\f]+", line) if w]  # Java's StringTokenizer
    out = []
    for i, word in enumerate(words):
        following = words[i + 1] if i + 1 < len(words) else ""
        if len(word) > 1 and word.endswith("."):
            pre = word[:-1]
            if "." in pre and _NORM_LETTER.search(pre):
                word = word.replace(".", "")  # U.S. -> US
            elif pre in _NBP_ANY or re.match("[a-z]", following):
                pass
            elif pre in _NBP_NUMERIC and re.match("[0-9]", following):
                pass
            else:
                word = pre + " ."
        out.append(word)
    line = " ".join(out)
    while "DOTDOTMULTI" in line:
        line = line.replace("DOTDOTMULTI", "DOTMULTI.")
    line = line.replace("DOTMULTI", ".")
    return _NORM_SPACES.sub(" ", line).lower().split()


def _meteor_prepare(candidates: Sequence[str], references: Sequence[Sequence[str] | str],
                    tokenize: bool) -> tuple[list[list[str]], list[list[list[str]]]]:
    """``_prepare``'s tokens, re-joined and passed through ``meteor_normalize`` as the jar's
    ``-norm`` does to the strings pycocoevalcap sends it."""
    cands, refs = _prepare(candidates, references, tokenize)
    return ([meteor_normalize(" ".join(c)) for c in cands],
            [[meteor_normalize(" ".join(r)) for r in rs] for rs in refs])


def _meteor_align(test: list[str], ref: list[str]) -> list[int | None]:
    """METEOR 1.5's aligner with only exact matches: for each reference position, the matched
    test position or None.

    Reproduces its search so that ties resolve the same way: candidate matches for each reference
    word are the equal test words (in test order); a match that is the only candidate of both its
    words is fixed up front; the rest is resolved left to right over the reference by a beam
    search (beam 40) ranking partial alignments by more matches, then fewer chunks, then smaller
    summed |ref pos - test pos| ("distance", accumulated with METEOR's own bookkeeping, in which
    the distance of a newly chosen match is charged to the sibling path that skips it).
    """
    cands: list[list[int]] = [[i for i, t in enumerate(test) if t == r] for r in ref]
    test_cover = [0] * len(test)
    for c in cands:
        for i in c:
            test_cover[i] += 1
    fixed: list[int | None] = [None] * len(ref)
    used_test0 = [False] * len(test)
    for j, c in enumerate(cands):
        if len(c) == 1 and test_cover[c[0]] == 1:
            fixed[j] = c[0]
            used_test0[c[0]] = True

    # path: [matches (list), used_test (list), n_matches, chunks, last_end, distance]
    start = [list(fixed), used_test0, 0, 0, -1, 0]
    next_paths = [start]
    n_ref = len(ref)
    for cur in range(n_ref + 1):
        paths = sorted(next_paths, key=lambda p: (-p[2], p[3], p[5]))   # stable, like Java's sort
        next_paths = []
        for path in paths[:_METEOR_BEAM]:
            if cur == n_ref:
                if path[4] != -1:
                    path[3] += 1
                next_paths.append(path)
                continue
            if fixed[cur] is not None:
                i = fixed[cur]
                path[2] += 2          # one word on each side (exact module weight 1)
                if path[4] != -1 and i != path[4]:
                    path[3] += 1
                path[4] = i + 1
                path[5] += abs(cur - i)
                next_paths.append(path)
                continue
            for i in cands[cur]:
                if path[1][i]:
                    continue
                new = [list(path[0]), list(path[1]), path[2] + 2, path[3], i + 1, path[5]]
                new[0][cur] = i
                new[1][i] = True
                if path[4] != -1 and i != path[4]:
                    new[3] += 1
                path[5] += abs(cur - i)       # METEOR 1.5 charges this to the skipping path
                next_paths.append(new)
            if path[4] != -1:                 # skip this reference word: close the open chunk
                path[3] += 1
                path[4] = -1
            next_paths.append(path)
        if not next_paths:
            next_paths.append(paths[0])
    best = sorted(next_paths, key=lambda p: (-p[2], p[3], p[5]))[0]
    return best[0]


def _count_chunks(matches: list[int | None]) -> int:
    chunks, last_end = 0, -1
    for i in matches:
        if i is None:
            if last_end != -1:
                chunks += 1
                last_end = -1
            continue
        if last_end != -1 and i != last_end:
            chunks += 1
        last_end = i + 1
    return chunks + (1 if last_end != -1 else 0)


def _meteor_pair_stats(test: list[str], ref: list[str]) -> np.ndarray:
    matches = _meteor_align(test, ref)
    fw = METEOR_FUNCTION_WORDS
    test_func = sum(t in fw for t in test)
    ref_func = sum(r in fw for r in ref)
    # Exact matches pair identical words, so a matched word is a function word on both sides.
    func_matches = sum(1 for j, i in enumerate(matches) if i is not None and ref[j] in fw)
    n_matches = sum(i is not None for i in matches)
    content_matches = n_matches - func_matches
    return np.array([len(test), len(ref), test_func, ref_func, content_matches, content_matches,
                     func_matches, func_matches, _count_chunks(matches), n_matches, n_matches],
                    dtype=np.float64)


def _meteor_score(s: np.ndarray, alpha: float = METEOR_ALPHA, beta: float = METEOR_BETA,
                  gamma: float = METEOR_GAMMA, delta: float = METEOR_DELTA) -> float:
    """METEOR score from sufficient statistics (METEOR 1.5 ``computeMetrics``, one module)."""
    (test_len, ref_len, test_func, ref_func, tcm, rcm, tfm, rfm, chunks, tm, rm) = s
    with np.errstate(divide="ignore", invalid="ignore"):
        test_w_len = delta * (test_len - test_func) + (1 - delta) * test_func
        ref_w_len = delta * (ref_len - ref_func) + (1 - delta) * ref_func
        p = np.float64(tcm * delta + tfm * (1 - delta)) / test_w_len
        r = np.float64(rcm * delta + rfm * (1 - delta)) / ref_w_len
        fmean = 1.0 / ((1 - alpha) / p + alpha / r)
        if tm == test_len and rm == ref_len and chunks == 1:
            frag = 0.0        # identical (fully matched, one chunk): no fragmentation penalty
        else:
            frag = chunks / ((tm + rm) / 2)
        score = fmean * (1 - gamma * frag ** beta)
    score = float(score)
    return 0.0 if math.isnan(score) else max(score, 0.0)


def meteor_stats(candidate: str, refs: Sequence[str], *, tokenize: bool = True) -> np.ndarray:
    """METEOR sufficient statistics of one candidate against its best reference (exact module,
    after ``meteor_normalize``).

    Returns an array of 11 counts: test length, reference length, test/reference function words,
    test/reference content-word matches, test/reference function-word matches, chunks, test/
    reference matched words. The best reference is the first one with the highest METEOR score.
    """
    (cand,), (rs,) = _meteor_prepare([candidate], [refs], tokenize)
    return _best_meteor_stats(cand, rs)


def _best_meteor_stats(cand: list[str], refs: list[list[str]]) -> np.ndarray:
    best, best_score = None, -1.0
    for r in refs:
        s = _meteor_pair_stats(cand, r)
        score = _meteor_score(s)
        if score > best_score:     # strictly greater: the first of equal references wins
            best, best_score = s, score
    return best


def _aggregate_meteor_stats(stats: Sequence[np.ndarray]) -> np.ndarray:
    """Corpus statistics: sums over segments, except that (like METEOR 1.5's ``addStats``) an
    exact copy -- fully matched in one chunk -- adds no chunk, so a corpus of copies scores 1."""
    total = np.sum(stats, axis=0)
    total[8] -= sum(1 for s in stats if s[9] == s[0] and s[10] == s[1] and s[8] == 1)
    return total


def meteor(candidates: Sequence[str], references: Sequence[Sequence[str]], *,
           tokenize: bool = True, per_item: bool = False):
    """METEOR 1.5 with the exact-match module only (no stemming, synonyms or paraphrases):
    ``METEOR_NAME`` = "METEOR 1.5, exact matching only, -norm".

    Follows the METEOR 1.5 jar as pycocoevalcap runs it (``-l en -norm``, default "rank" task):
    each segment is normalised as by the jar's ``-norm`` (``meteor_normalize``; with
    ``tokenize=True`` after pycocoevalcap's PTB tokenisation, as COCO evaluation feeds it), then
    scored with parameters alpha=0.85, beta=0.20, gamma=0.60, delta=0.75; precision and recall weight
    function words (METEOR's English list) by 1-delta and other words by delta;
    Fmean = P R / (alpha P + (1 - alpha) R); fragmentation penalty gamma * (chunks / mean matched
    words)^beta (zero for an exact copy); per item the best-scoring reference is kept; the corpus
    score is computed from the sufficient statistics summed over items (like pycocoevalcap's
    ``EVAL`` line; exact copies add no chunk), not as the mean of item scores. Alignment uses
    METEOR's beam search.

    Not the number papers report: pycocoevalcap's METEOR additionally matches Snowball stems
    (weight 0.6), WordNet synonyms (0.8) and paraphrases (0.6), which need WordNet and the 60 MB
    paraphrase table. Exact-only scores are therefore usually lower (on the test suite's COCO-style
    captions: corpus 0.353 vs 0.360, items within 0.044, correlation 0.998); compare them only with
    scores from this same function, and label them with ``METEOR_NAME``. Agreement with the
    METEOR 1.5 jar run as pycocoevalcap runs it plus ``-m exact`` is tested.

    Returns the corpus score in [0, 1]; ``per_item=True`` returns ``(score, array [n_items])``.
    """
    cands, refs = _meteor_prepare(candidates, references, tokenize)
    stats = [_best_meteor_stats(c, r) for c, r in zip(cands, refs)]
    score = _meteor_score(_aggregate_meteor_stats(stats))
    if not per_item:
        return score
    return score, np.array([_meteor_score(s) for s in stats], dtype=np.float64)


# --------------------------------------------------------------------------------------------
# Embedding similarity
# --------------------------------------------------------------------------------------------

def embedding_similarity(a_vectors, b_vectors) -> np.ndarray:
    """Cosine similarity of paired embeddings: row i of ``a_vectors`` with row i of ``b_vectors``.

    a_vectors, b_vectors: arrays [n, d] (e.g. sentence embeddings of generated and reference
    captions, computed elsewhere; a single [d] vector is treated as n=1). Returns float64 [n] in
    [-1, 1]; a pair involving an all-zero vector gives NaN (cosine is undefined there). For
    several references per item, average the per-reference similarities (or embed the
    references' mean) -- this function does not choose.
    """
    a = np.atleast_2d(np.asarray(a_vectors, dtype=np.float64))
    b = np.atleast_2d(np.asarray(b_vectors, dtype=np.float64))
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"expected two arrays [n, d] of the same shape, got {a.shape} and {b.shape}")
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.einsum("ij,ij->i", a, b) / (na * nb)
    out[(na == 0) | (nb == 0)] = np.nan
    return np.clip(out, -1.0, 1.0)


# --------------------------------------------------------------------------------------------
# All at once
# --------------------------------------------------------------------------------------------

def caption_metrics(candidates: Sequence[str], references: Sequence[Sequence[str]], *,
                    tokenize: bool = True) -> dict:
    """All n-gram metrics of a caption set: ``{"corpus": {...}, "per_item": {...}}``.

    Keys: bleu1..bleu4, meteor (exact-only, see ``meteor``), rouge_l, cider (CIDEr-D).
    ``corpus`` holds floats as pycocoevalcap reports them; ``per_item`` holds float64 arrays [n]
    (sentence-level BLEU, METEOR per segment, ROUGE-L and CIDEr-D per item; CIDEr's idf comes
    from the whole set); ``names`` says what each key is (``METRIC_NAMES``: the meteor key is
    "METEOR 1.5, exact matching only, -norm"), for labelling reports.
    """
    cands, refs = _prepare(candidates, references, tokenize)
    # Already tokenised: re-join so the metric functions see exactly these tokens.
    c = [" ".join(t) for t in cands]
    r = [[" ".join(t) for t in rs] for rs in refs]
    b, b_items = bleu(c, r, tokenize=False, per_item=True)
    m, m_items = meteor(c, r, tokenize=False, per_item=True)
    rl, rl_items = rouge_l(c, r, tokenize=False, per_item=True)
    cd, cd_items = cider(c, r, tokenize=False, per_item=True)
    corpus = {f"bleu{k + 1}": b[k] for k in range(4)}
    corpus.update(meteor=m, rouge_l=rl, cider=cd)
    items = {f"bleu{k + 1}": b_items[:, k] for k in range(4)}
    items.update(meteor=m_items, rouge_l=rl_items, cider=cd_items)
    return {"corpus": corpus, "per_item": items, "names": dict(METRIC_NAMES)}


def sentence_scores(candidate: str, refs: Sequence[str], *, tokenize: bool = True) -> dict:
    """Scores of one caption against its references, for showing next to it in the viewer.

    Returns {"bleu1".."bleu4", "meteor", "rouge_l"} (floats in [0, 1]): pycocoevalcap's
    sentence-level BLEU, METEOR of the segment (``METEOR_NAME``), ROUGE-L. CIDEr is left out: its
    idf needs the whole evaluated set (use ``caption_metrics(...)["per_item"]["cider"]``).
    """
    (cand,), (rs,) = _prepare([candidate], [refs], tokenize)
    b = _bleu_from_stats(*_bleu_item_stats(cand, rs, 4))
    out = {f"bleu{k + 1}": b[k] for k in range(4)}
    (m_cand,), (m_refs,) = _meteor_prepare([" ".join(cand)], [[" ".join(r) for r in rs]], False)
    out["meteor"] = _meteor_score(_best_meteor_stats(m_cand, m_refs))
    out["rouge_l"] = _rouge_l_item(cand, rs, 1.2)
    return out
