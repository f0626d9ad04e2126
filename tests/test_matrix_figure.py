"""RDM heatmaps (plotly): rank-percentile colouring, one shared colour bar, hover naming both stimuli."""

import json

import numpy as np
import pytest
from scipy.stats import rankdata

from viewer.plots import percentile_ranks, rdm_figure


def test_percentile_ranks_follow_scipy_ranks():
    rng = np.random.default_rng(0)
    m = rng.random((6, 6))
    m = m + m.T
    out = percentile_ranks(m)
    off = ~np.eye(6, dtype=bool)
    expected = (rankdata(m[off], method="ordinal") - 1) / (off.sum() - 1)
    np.testing.assert_allclose(out[off], expected)
    assert np.all(np.diag(out) == 0) and out[off].min() == 0 and out[off].max() == 1


def _z(trace) -> np.ndarray:
    """A heatmap's z from the figure JSON (plotly sends numpy arrays as base64 typed arrays)."""
    import base64

    z = trace["z"]
    if isinstance(z, dict):
        shape = [int(s) for s in str(z["shape"]).split(",")]
        return np.frombuffer(base64.b64decode(z["bdata"]), dtype=z["dtype"]).reshape(shape)
    return np.asarray(z, float)


def test_rdm_heatmaps_side_by_side_with_hover_naming_both_stimuli():
    block = np.ones((10, 10))
    block[:5, :5] = block[5:, 5:] = 0.1  # two clusters: low ranks on the diagonal blocks
    stimuli = list(range(100, 110))
    captions = {i: f"caption of {i}" for i in stimuli}
    fig = json.loads(rdm_figure([block, block.T], ["brain: V1", "text: reference"], stimuli, captions, footer="10 stimuli").to_json())
    heatmaps = [t for t in fig["data"] if t["type"] == "heatmap"]
    assert len(heatmaps) == 2 and {t["xaxis"] for t in heatmaps} == {"x", "x2"}
    assert all(t["coloraxis"] == "coloraxis" for t in heatmaps), "one colour scale for both"
    z = _z(heatmaps[0])
    assert z[1, 3] < z[1, 8], "pairs within a cluster rank as more similar than pairs across"
    assert heatmaps[0]["x"][0] == "#100 caption of 100" and heatmaps[0]["y"] == heatmaps[0]["x"]
    assert "row: %{y}" in heatmaps[0]["hovertemplate"] and "column: %{x}" in heatmaps[0]["hovertemplate"]
    bar = fig["layout"]["coloraxis"]["colorbar"]
    assert bar["ticktext"] == ["similar", "dissimilar"] and "rank" in bar["title"]["text"]
    assert fig["layout"]["xaxis"]["title"]["text"].startswith("stimulus")
    assert [a["text"] for a in fig["layout"]["annotations"]] == ["brain: V1", "text: reference"]


def test_bad_rdm_inputs_are_refused():
    block = np.ones((3, 3))
    with pytest.raises(ValueError):
        rdm_figure([block], ["a", "b"], [1, 2, 3])
    with pytest.raises(ValueError):
        rdm_figure([block], ["a"], [1, 2])
    with pytest.raises(ValueError):
        rdm_figure([block], ["a"], [1, 1, 2])
