"""The viewer's plotly figures, as the dicts the browser draws: axis titles in words, error bars
where there is spread, a chance line the legend can hide, identical sources kept apart."""

from __future__ import annotations

import json

import numpy as np
import pytest

from viewer.plots import comparison_figure, controls_figure, manifold_figure, message_figure, rsa_figure


def _dict(fig) -> dict:
    return json.loads(fig.to_json())  # what travels to the browser


def _points(fig: dict) -> list[dict]:
    return [t for t in fig["data"] if t.get("mode") == "markers"]


def test_rsa_has_word_axes_error_bars_and_a_chance_line():
    rows = [{"region": r, "source": s, "mean": m, "sd": 0.01 + m / 10}
            for r, base in (("V1", 0.1), ("FFA", 0.3)) for s, m in (("reference", base), ("sim-noisy-words", base / 2))]
    fig = _dict(rsa_figure(rows))
    assert "region" in fig["layout"]["xaxis"]["title"]["text"]
    assert "Spearman" in fig["layout"]["yaxis"]["title"]["text"]
    points = _points(fig)
    assert [t["name"] for t in points] == ["reference", "sim-noisy-words"]
    for trace, source in zip(points, ("reference", "sim-noisy-words")):
        expected = [r["sd"] for r in rows if r["source"] == source]
        np.testing.assert_allclose(trace["error_y"]["array"], expected)
        assert trace["error_y"]["visible"]
    chance = [t for t in fig["data"] if t.get("mode") == "lines"]
    assert len(chance) == 1 and chance[0]["y"] == [0.0, 0.0] and "no correlation" in chance[0]["name"]
    assert fig["layout"]["legend"]["itemclick"] == "toggle"
    assert fig["layout"]["xaxis"]["ticktext"] == ["V1", "FFA"]


def test_identical_sources_stay_distinguishable():
    """The reference and the simulated reference give the same numbers: different marker shapes,
    and side by side (offset) rather than on top of each other."""
    rows = [{"source": "reference", "encoding_r": 0.21, "image_two_way": 0.83},
            {"source": "sim-reference", "encoding_r": 0.21, "image_two_way": 0.83},
            {"source": "sim-one-object", "encoding_r": 0.12, "image_two_way": 0.64}]
    fig = _dict(comparison_figure(rows))
    points = _points(fig)
    ref, sim = points[0], points[1]
    assert ref["marker"]["symbol"] != sim["marker"]["symbol"]
    assert ref["x"][0] != sim["x"][0] and ref["y"][0] == sim["y"][0]
    assert abs(ref["x"][0] - sim["x"][0]) < 0.02, "a small offset, not a different value"
    assert ref["customdata"][0][0] == sim["customdata"][0][0] == 0.21  # hover gives the exact value
    assert "encoding accuracy" in fig["layout"]["xaxis"]["title"]["text"]
    assert "2-way" in fig["layout"]["yaxis"]["title"]["text"]
    chance = [t for t in fig["data"] if t.get("mode") == "lines"][0]
    assert chance["y"] == [0.5, 0.5]

    rsa_rows = [{"region": "V1", "source": s, "mean": 0.2, "sd": 0.01} for s in ("reference", "sim-reference")]
    a, b = _points(_dict(rsa_figure(rsa_rows)))
    assert a["x"][0] != b["x"][0] and a["marker"]["symbol"] != b["marker"]["symbol"]


def test_pixcorr_fallback_has_its_own_chance_and_title():
    rows = [{"source": "reference", "encoding_r": 0.2, "pixcorr": 0.1}]
    fig = _dict(comparison_figure(rows, y="pixcorr"))
    assert "PixCorr" in fig["layout"]["yaxis"]["title"]["text"]
    assert [t for t in fig["data"] if t.get("mode") == "lines"][0]["y"] == [0.0, 0.0]


def test_controls_figure_names_the_difference():
    rows = [{"region": "all units", "control": "nouns only", "mean_difference": 0.02},
            {"region": "V1", "control": "nouns only", "mean_difference": -0.01}]
    fig = _dict(controls_figure(rows))
    assert "full caption − control" in fig["layout"]["yaxis"]["title"]["text"]
    assert [t["name"] for t in _points(fig)] == ["nouns only"]


def _maps(n=30, labelled=True):
    rng = np.random.default_rng(0)
    return {"dataset": "demo-human", "indices": np.arange(0, 2 * n, 2), "brain": rng.normal(size=(n, 2)),
            "text": rng.normal(size=(n, 2)), "categories": [("dog", "car", None)[k % 3] for k in range(n)] if labelled else None,
            "groups": None, "region": "EVC", "n_units": 400, "source": "reference", "embedder": "x/MiniLM",
            "trustworthiness": {"brain": 0.9, "text": 0.8}, "shared_neighbours": 0.2, "chance": 0.05}


def test_manifold_points_carry_their_stimulus_and_caption():
    data = _maps()
    fig = _dict(manifold_figure(data, {0: "a dog on a beach", 2: "a red car"}))
    points = [t for t in fig["data"] if str(t.get("meta", "")).startswith("points")]
    brain = [t for t in points if t["meta"] == "points:brain"]
    text = [t for t in points if t["meta"] == "points:text"]
    shown = sorted(i for t in brain for i in t["customdata"])
    assert shown == list(range(0, 60, 2)) and sorted(i for t in text for i in t["customdata"]) == shown
    assert {t["legendgroup"] for t in brain} == {t["legendgroup"] for t in text} == {"dog", "car", "unlabelled"}
    assert all(t["showlegend"] for t in brain) and not any(t["showlegend"] for t in text)  # one legend toggles both maps
    hovers = {i: h for t in brain for i, h in zip(t["customdata"], t["hovertext"])}
    assert "a dog on a beach" in hovers[0] and "#2" in hovers[2]
    selected = [t for t in fig["data"] if t.get("meta") == "selected"]
    assert len(selected) == 2 and {t["xaxis"] for t in selected} == {"x", "x2"}
    assert fig["layout"]["xaxis"]["title"]["text"] == "UMAP 1" and fig["layout"]["meta"]["dataset"] == "demo-human"
    assert fig["layout"]["yaxis"]["scaleanchor"] == "x"  # equal aspect: distances mean the same both ways


def test_manifold_without_labels_and_message():
    fig = _dict(manifold_figure(_maps(labelled=False)))
    assert {t["name"].split(" (")[0] for t in _points(fig) if t.get("meta") != "selected"} == {"stimulus"}
    msg = _dict(message_figure("press Compute"))
    assert msg["layout"]["annotations"][0]["text"] == "press Compute"


def test_manifold_figure_is_fast_with_5000_points():
    import time

    data = _maps(n=5000)
    start = time.process_time()
    manifold_figure(data, {i: f"caption {i}" for i in range(0, 10000, 2)}).to_json()
    assert time.process_time() - start < 3.0


def test_empty_rows_are_refused_in_one_line():
    with pytest.raises(ValueError, match="no rows"):
        rsa_figure([])


def test_controls_that_cannot_apply_are_not_offered_and_say_why():
    import gradio as gr

    from viewer.controls_tab import control_choices, control_rows, inapplicable

    region = {"n_units": 10, "fraction_a_better": 0.6, "mean_difference": 0.01}
    summary = {
        "word-average": {"mean_difference": 0.02, "fraction_a_better": 0.7, "regions": {"V1": region}},
        "nouns": {"mean_difference": 0.01, "fraction_a_better": 0.6, "regions": {"V1": region}, "captions_with_words": 1.0},
        "verbs": {"mean_difference": float("nan"), "fraction_a_better": float("nan"), "regions": {}, "captions_with_words": 0.0},
    }
    assert inapplicable(summary) == {"verbs": "no caption has any verb"}
    with gr.Blocks():
        update = control_choices(summary, "verbs")
    assert [key for _, key in update["choices"]] == ["word-average", "nouns"]
    assert update["value"] == "word-average" and "verbs only: not available (no caption has any verb)" in update["info"]
    rows = control_rows({k: v for k, v in summary.items() if k not in inapplicable(summary)})
    assert "verbs only" not in set(rows["control"])
    fig = _dict(controls_figure(rows.to_dict("records")))
    assert {t["name"] for t in _points(fig)} == {"mean of word embeddings", "nouns only"}
