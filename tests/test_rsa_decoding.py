"""RSA and decoding helpers against direct computations (scipy, numpy) and planted structure."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import pdist, squareform
from scipy.stats import spearmanr

from backend.analysis.decoding import identification, retrieve
from backend.analysis.rsa import compare_rdms, rdm, rsa_over_subsets, upper


def test_rdm_matches_scipy_correlation_distance():
    x = np.random.default_rng(0).normal(size=(12, 30))
    np.testing.assert_allclose(rdm(x), squareform(pdist(x, "correlation")), atol=1e-12)


def test_compare_rdms_is_spearman_of_upper_triangles():
    rng = np.random.default_rng(1)
    a, b = rdm(rng.normal(size=(15, 8))), rdm(rng.normal(size=(15, 8)))
    assert compare_rdms(a, b) == pytest.approx(spearmanr(upper(a), upper(b)).statistic, abs=1e-12)
    assert compare_rdms(a, a) == pytest.approx(1.0)


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
