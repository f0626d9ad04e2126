"""RDM figures: rank-percentile colouring and the side-by-side layout."""

import numpy as np
import pytest
from scipy.stats import rankdata

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
