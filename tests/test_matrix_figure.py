"""RDM figures: rank-percentile colouring and the side-by-side layout."""

import numpy as np
import pytest
from scipy.stats import rankdata

from viewer.controls_tab import control_rows, coverage_note
from viewer.matrix_figure import CELL_PX, MARGIN, percentile_ranks, rdm_figure, viridis


def test_viridis_ends_and_nan():
    colours = viridis(np.array([0.0, 1.0, np.nan, -3.0, 7.0]))
    assert colours.dtype == np.uint8 and colours.shape == (5, 3)
    assert tuple(colours[0]) == (68, 1, 84) and tuple(colours[1]) == (253, 231, 37)
    assert tuple(colours[2]) == (220, 220, 220)
    assert tuple(colours[3]) == tuple(colours[0]) and tuple(colours[4]) == tuple(colours[1]), "clipped"


def test_percentile_ranks_follow_scipy_ranks():
    rng = np.random.default_rng(0)
    m = rng.random((6, 6))
    m = m + m.T
    out = percentile_ranks(m)
    off = ~np.eye(6, dtype=bool)
    expected = (rankdata(m[off], method="ordinal") - 1) / (off.sum() - 1)
    np.testing.assert_allclose(out[off], expected)
    assert np.all(np.diag(out) == 0) and out[off].min() == 0 and out[off].max() == 1


def test_rdm_figure_places_each_matrix_under_its_title():
    block = np.ones((10, 10))
    block[:5, :5] = block[5:, 5:] = 0.1  # two clusters: dark blocks on the diagonal
    figure = rdm_figure([block, block.T], ["brain", "text"], footer="10 stimuli")
    assert figure.size == (MARGIN + 2 * (CELL_PX + MARGIN), 2 * MARGIN + CELL_PX + 40)
    pixels = np.asarray(figure)
    inside = pixels[MARGIN + CELL_PX // 4, MARGIN + CELL_PX // 4]  # within the first diagonal block
    across = pixels[MARGIN + CELL_PX // 4, MARGIN + 3 * CELL_PX // 4]  # between the clusters
    assert inside.sum() < across.sum(), "similar pairs are darker than dissimilar ones"
    with pytest.raises(ValueError):
        rdm_figure([block], ["a", "b"])


def test_controls_table_and_coverage_note():
    summary = {
        "word-average": {"mean_difference": 0.05, "fraction_a_better": 0.7, "regions": {"EVC": {"mean_difference": -0.01, "fraction_a_better": 0.4}}},
        "verbs": {"mean_difference": 0.3, "fraction_a_better": 0.9, "regions": {}, "captions_with_words": 0.0},
    }
    frame = control_rows(summary)
    assert list(frame["region"]) == ["all units", "EVC", "all units"]
    assert frame.loc[1, "mean_difference"] == -0.01 and frame.loc[1, "control"] == "mean of word embeddings"
    assert "0% of captions" in coverage_note(summary) and "too few" in coverage_note(summary)
