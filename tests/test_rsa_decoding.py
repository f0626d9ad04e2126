"""RSA and decoding helpers against direct computations (scipy, numpy) and planted structure."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import pdist, squareform
from scipy.stats import rankdata, spearmanr

from backend.analysis.decoding import identification, retrieve
from backend.analysis.rsa import compare_rdms, rdm, rsa_over_subsets, tolerant_ranks, upper


def test_rdm_matches_scipy_correlation_distance():
    x = np.random.default_rng(0).normal(size=(12, 30))
    np.testing.assert_allclose(rdm(x), squareform(pdist(x, "correlation")), atol=1e-12)


def test_compare_rdms_is_spearman_of_upper_triangles():
    rng = np.random.default_rng(1)
    a, b = rdm(rng.normal(size=(15, 8))), rdm(rng.normal(size=(15, 8)))
    assert compare_rdms(a, b) == pytest.approx(spearmanr(upper(a), upper(b)).statistic, abs=1e-12)
    assert compare_rdms(a, a) == pytest.approx(1.0)


def _exact_distance_order(patterns: np.ndarray) -> np.ndarray:
    """Upper-triangle ranks (0 = smallest) of the correlation distances of integer patterns,
    computed exactly: 1 - r orders as -sign(num) num^2 / den with r = num / sqrt(den), compared
    as fractions, so mathematically equal distances share a rank."""
    from fractions import Fraction

    rows = [[int(v) for v in row] for row in patterns]
    p = len(rows[0])
    keys = []
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            x, y = rows[i], rows[j]
            num = p * sum(a * b for a, b in zip(x, y)) - sum(x) * sum(y)
            den = (p * sum(a * a for a in x) - sum(x) ** 2) * (p * sum(b * b for b in y) - sum(y) ** 2)
            keys.append(-Fraction(num * num, den) if num > 0 else Fraction(num * num, den))
    order = {k: r for r, k in enumerate(sorted(set(keys)))}
    return np.array([order[k] for k in keys], dtype=np.float64)


def _integer_patterns(seed: int, n: int = 24, p: int = 5) -> np.ndarray:
    """[n, p] patterns with values 0, 1, 2: many pairs have exactly equal correlations."""
    x = np.random.default_rng(seed).integers(0, 3, size=(n, p))
    x[x.std(axis=1) == 0, 0] += 1  # no constant rows (their correlation is undefined)
    return x


def test_compare_rdms_ranks_equal_dissimilarities_as_ties():
    """On integer patterns most dissimilarities are exactly equal to others, but come out of
    floating point differing by ~1e-16; ranked as they come, Spearman was off by up to 6.8e-3
    (seeds 0-19; rsatoolbox 0.3.2 by up to 2.6e-3 for the same reason). Against scipy's spearmanr
    of the exactly computed distances it now agrees to rounding (measured 1.4e-17)."""
    for seed in range(10):
        a, b = _integer_patterns(seed), _integer_patterns(100 + seed)
        exact_a, exact_b = _exact_distance_order(a), _exact_distance_order(b)
        assert len(np.unique(exact_a)) < len(exact_a) / 2  # ties are the rule here
        expected = spearmanr(exact_a, exact_b).statistic
        assert compare_rdms(rdm(a), rdm(b)) == pytest.approx(expected, abs=1e-12), seed
        # the tolerant ranks of the float distances are the exact ranks (ties shared)
        np.testing.assert_array_equal(tolerant_ranks(upper(rdm(a))), rankdata(exact_a))


def test_tolerant_ranks_merge_rounding_but_not_real_differences():
    rng = np.random.default_rng(8)
    base = rng.permutation(np.repeat(np.arange(1.0, 11.0), 3))  # 10 values, 3 copies each
    jitter = base * (1 + rng.choice([-1, 0, 1], size=base.size) * 4e-16)  # rounding-sized
    np.testing.assert_array_equal(tolerant_ranks(jitter), rankdata(base))
    assert len(np.unique(rankdata(jitter))) > 10  # plain ranks split the copies
    spread = base + rng.uniform(-1, 1, size=base.size) * 1e-7  # real (if small) differences
    np.testing.assert_array_equal(tolerant_ranks(spread), rankdata(spread))
    assert tolerant_ranks(np.array([])).size == 0
    np.testing.assert_array_equal(tolerant_ranks(np.zeros(4)), [2.5] * 4)


def test_rdms_agree_with_rsatoolbox():
    """Optional (rsatoolbox is not a dependency): its correlation RDM equals ours; its Spearman
    equals ours where nothing ties, and on integer patterns once its distances are ranked with
    the same tolerance (its own ranking splits ties)."""
    pytest.importorskip("rsatoolbox")
    from rsatoolbox.data import Dataset
    from rsatoolbox.rdm import calc_rdm, compare

    def theirs(x):
        return calc_rdm(Dataset(np.asarray(x, np.float64)), method="correlation")

    rng = np.random.default_rng(9)
    a, b = rng.normal(size=(20, 30)), rng.normal(size=(20, 30))
    np.testing.assert_allclose(theirs(a).get_vectors()[0], upper(rdm(a)), atol=1e-12)
    spearman = float(compare(theirs(a), theirs(b), method="spearman")[0, 0])
    assert compare_rdms(rdm(a), rdm(b)) == pytest.approx(spearman, abs=1e-12)
    a, b = _integer_patterns(3), _integer_patterns(103)
    va, vb = theirs(a).get_vectors()[0], theirs(b).get_vectors()[0]
    np.testing.assert_allclose(va, upper(rdm(a)), atol=1e-12)
    spearman = spearmanr(tolerant_ranks(va), tolerant_ranks(vb)).statistic
    assert compare_rdms(rdm(a), rdm(b)) == pytest.approx(spearman, abs=1e-12)


def test_rsa_ranks_a_planted_model_above_an_unrelated_one():
    rng = np.random.default_rng(2)
    latent = rng.normal(size=(200, 10))
    brain = latent @ rng.normal(size=(10, 300)) + 0.5 * rng.normal(size=(200, 300))
    models = {"related": latent @ rng.normal(size=(10, 64)), "unrelated": rng.normal(size=(200, 64))}
    scores = rsa_over_subsets(brain, models, n_subsets=10, subset_size=60)
    assert scores["related"].shape == (10,)
    assert scores["related"].mean() > 0.5 > abs(scores["unrelated"].mean()) + 0.3
    assert scores["related"].std() > 0, "subsets give a spread"
    again = rsa_over_subsets(brain, models, n_subsets=10, subset_size=60)
    np.testing.assert_array_equal(again["related"], scores["related"])


def test_retrieve_finds_nearest_by_cosine_and_can_exclude_self():
    corpus = np.eye(5)
    predicted = np.array([[0.9, 0.1, 0, 0, 0], [0, 0, 0.2, 1.0, 0]])
    np.testing.assert_array_equal(retrieve(predicted, corpus, top=2), [[0, 1], [3, 2]])
    np.testing.assert_array_equal(retrieve(predicted, corpus, top=1, exclude=np.array([0, -1])), [[1], [3]])


def test_centred_retrieval_undoes_shrinkage_towards_the_corpus_mean():
    """Ridge predictions shrink towards the mean embedding: uncentred cosine then keeps returning
    the corpus entry nearest the mean (a hub); centred retrieval finds each item's own entry."""
    rng = np.random.default_rng(5)
    mean = 3 * rng.normal(size=16)
    corpus = mean + rng.normal(size=(50, 16))
    corpus[0] = mean + 0.05 * rng.normal(size=16)  # the hub
    shrunk = mean + 0.2 * (corpus[1:] - mean)  # predictions of items 1..49, pulled to the mean
    plain = retrieve(shrunk, corpus)[:, 0]
    centred = retrieve(shrunk, corpus, centred=True)[:, 0]
    assert np.mean(plain == 0) > 0.5, "most predictions retrieve the hub"
    np.testing.assert_array_equal(centred, np.arange(1, 50))


def test_identification_perfect_random_and_brute_force():
    rng = np.random.default_rng(3)
    true = rng.normal(size=(40, 16))
    perfect = identification(true, true)
    assert perfect == {"top1": 1.0, "two_way": 1.0, "rank": 1.0}
    noisy = true + rng.normal(size=true.shape) * 3
    result = identification(noisy, true)
    sims = (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)) @ (true / np.linalg.norm(true, axis=1, keepdims=True)).T
    wins = [sims[i, i] > sims[i, j] for i in range(40) for j in range(40) if i != j]
    assert result["two_way"] == pytest.approx(np.mean(wins))
    chance = identification(rng.normal(size=(200, 16)), rng.normal(size=(200, 16)))
    assert abs(chance["two_way"] - 0.5) < 0.05 and chance["top1"] < 0.05


def _brute_identification(predicted, true):
    """Per item (top-1 0/1, 2-way win fraction, rank) by explicit loops, with cosine 0 against an
    all-zero vector."""
    def cos(x, y):
        nx, ny = np.linalg.norm(x), np.linalg.norm(y)
        return 0.0 if nx == 0 or ny == 0 else float(x @ y / nx / ny)

    m = len(true)
    s = np.array([[cos(p, t) for t in true] for p in predicted])
    wins = np.array([sum(s[i, i] > s[i, j] for j in range(m) if j != i) for i in range(m)])
    return {"top1": (wins == m - 1).astype(float), "two_way": wins / (m - 1), "rank": m - wins}


def test_identification_with_a_zero_target_or_prediction():
    """A zero vector has cosine 0 with everything (never NaN): it changes top-1 and 2-way by at
    most its own item's share. Before, one zero target among these 50 took top-1 from 0.50 to 0.0
    and 2-way from 0.963 to 0.924 (a NaN column failed every comparison with it); now 0.48-0.50
    and 0.951-0.956."""
    rng = np.random.default_rng(7)
    m = 50
    true = rng.normal(size=(m, 16))
    predicted = true + 1.5 * rng.normal(size=true.shape)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    assert np.all(np.diag(unit(predicted) @ unit(true).T) > 0)  # so others can only win against a zero target
    base = identification(predicted, true)
    items = _brute_identification(predicted, true)
    assert 0.3 < base["top1"] < 0.9
    for k in (0, 17, m - 1):
        zero_target, zero_pred = true.copy(), predicted.copy()
        zero_target[k] = 0
        zero_pred[k] = 0
        for p, t in ((predicted, zero_target), (zero_pred, true)):
            got = identification(p, t)
            for key, value in _brute_identification(p, t).items():
                assert got[key] == pytest.approx(value.mean(), abs=1e-12), key
            # only item k can lose: the others' comparisons with a zero target can only be won
            assert got["top1"] >= base["top1"] - 1 / m
            assert got["two_way"] >= base["two_way"] - 1 / m
        # a zero prediction identifies nothing: exactly its own item's share is lost
        got = identification(zero_pred, true)
        assert got["top1"] == pytest.approx(base["top1"] - items["top1"][k] / m, abs=1e-12)
        assert got["two_way"] == pytest.approx(base["two_way"] - items["two_way"][k] / m, abs=1e-12)
    nothing = identification(np.zeros((5, 3)), np.zeros((5, 3)))
    assert nothing == {"top1": 0.0, "two_way": 0.0, "rank": 5.0}  # all ties: nothing identified


def test_caption_corpus_files_are_checked(tmp_path):
    from backend.stages.decoding import MAX_CORPUS_CAPTION, check_corpus, corpus_id, read_corpus

    good = tmp_path / "good.txt"
    good.write_text("a dog on a beach\n\n   a  cat under a night sky  \n", encoding="utf-8")
    assert read_corpus(good) == ["a dog on a beach", "a cat under a night sky"]
    assert corpus_id(read_corpus(good)) == corpus_id(["a dog on a beach", "a cat under a night sky"])
    cases = {
        "one.txt": (b"just one caption\n", "at least 2 captions"),
        "latin1.txt": ("caf\u00e9 au lait\nmore\n".encode("latin-1"), "not UTF-8 text"),
        "binary.txt": (b"a\x00b\nc\n", "binary data"),
        "long.txt": (("x" * (MAX_CORPUS_CAPTION + 1) + "\nshort\n").encode(), "caption 1 of the corpus"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=message):
            read_corpus(tmp_path / name)
    with pytest.raises(ValueError, match="no such caption corpus"):
        read_corpus(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="at least 2"):
        check_corpus(["", "  "])
