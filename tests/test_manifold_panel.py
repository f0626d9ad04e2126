"""The manifolds stage, its API and the viewer's manifold panel.

UMAP compiles numba kernels on its first call in a process (15-60 s), so the tests that run the
real UMAP are marked slow; the plumbing (job, cache, wire format, 404s) and the renderer are also
tested fast, with a PCA stand-in for UMAP under a separate cache key.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest

from backend.service.client import BackendError

EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
ANIMATE = ("animals", "people")


@pytest.fixture(autouse=True)
def _numba_cache(numba_cache_dir):
    """Compiled UMAP kernels are kept across test sessions (as tests/test_manifolds.py does)."""
    if "numba" not in sys.modules and not os.environ.get("NUMBA_CACHE_DIR"):
        os.environ["NUMBA_CACHE_DIR"] = str(numba_cache_dir)


def _wait(client, job: dict, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while job["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, f"job did not finish: {job}"
        time.sleep(0.1)
        job = client.job(job["id"])
    return job


def _silhouette(points: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import silhouette_score

    return float(silhouette_score(points, labels))


def _stand_in_umap(x, *, n_neighbors=15, min_dist=0.1, metric="euclidean", seed=0, cache_dir=None):
    """The first two principal components: quick, deterministic, shaped like UMAP's output."""
    x = np.asarray(x, np.float64)
    x = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    return (u[:, :2] * s[:2]).astype(np.float32)


@pytest.fixture()
def stand_in(monkeypatch):
    """Replace UMAP by the PCA stand-in, under cache keys of its own."""
    import backend.stages.manifolds as stage

    monkeypatch.setattr(stage, "umap_embedding", _stand_in_umap)
    monkeypatch.setitem(stage.PARAMS, "stand_in", "pca (tests)")
    return stage


# --------------------------------------------------------------------------------- the stage


def test_rows_keep_every_test_stimulus_and_are_deterministic(human):
    from backend.stages.manifolds import manifold_rows

    np.testing.assert_array_equal(manifold_rows(human), np.arange(human.n_stimuli))
    rows = manifold_rows(human, cap=60)
    assert len(rows) == 60 and np.all(np.diff(rows) > 0)
    assert set(human.stimuli.indices("test")) <= set(rows.tolist())
    np.testing.assert_array_equal(rows, manifold_rows(human, cap=60))


def test_chunked_randomised_pca_matches_exact(human, monkeypatch):
    import backend.stages.manifolds as stage

    rows, units = stage.manifold_rows(human), stage.region_units(human, None)
    exact = stage.brain_components(human, rows, units, n_components=10)
    monkeypatch.setattr(stage, "EXACT_PCA", 0)  # force the randomised path,
    monkeypatch.setattr(stage, "MAX_IN_MEMORY", 0)  # re-reading the responses
    monkeypatch.setattr(stage, "UNIT_CHUNK", max(2, len(units) // 3))  # in several chunks
    randomised = stage.brain_components(human, rows, units, n_components=10)
    assert exact.shape == randomised.shape == (len(rows), 10)
    # Same variance captured and the same leading subspace (signs of components are arbitrary).
    np.testing.assert_allclose(np.linalg.norm(randomised, axis=0)[:5], np.linalg.norm(exact, axis=0)[:5], rtol=0.02)
    qa, _ = np.linalg.qr(exact[:, :5])
    qb, _ = np.linalg.qr(randomised)
    assert np.linalg.svd(qa.T @ qb, compute_uv=False).min() > 0.98


def test_unknown_region_is_one_line_naming_the_choices(human):
    from backend.stages.manifolds import region_units

    with pytest.raises(ValueError, match="no region 'V99'.*animate"):
        region_units(human, "V99")
    assert len(region_units(human, "animate")) > 2


def test_text_map_is_turned_onto_the_brain_map_and_keeps_its_shape():
    from backend.stages.manifolds import aligned_to

    rng = np.random.default_rng(0)
    brain = rng.normal(size=(100, 2)) * [3.0, 1.0]
    theta = 2.0
    turn = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]) @ np.diag([1.0, -1.0])
    text = 0.1 * brain @ turn + [5.0, -2.0]
    np.testing.assert_allclose(aligned_to(brain, text), brain, atol=1e-4)  # planted similarity undone
    # A map unrelated to the brain's keeps the brain map's spread instead of shrinking to a point.
    unrelated = aligned_to(brain, rng.normal(size=(100, 2)))
    assert np.std(unrelated - unrelated.mean(0)) == pytest.approx(np.std(brain - brain.mean(0)), rel=1e-4)
    np.testing.assert_allclose(unrelated.mean(0), brain.mean(0), atol=1e-4)


def test_shared_neighbours_is_one_for_the_same_space_and_near_chance_for_noise():
    from backend.stages.manifolds import shared_neighbours

    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 5))
    assert shared_neighbours(a, a * 3 + 1, k=10) == pytest.approx(1.0)
    assert shared_neighbours(a, rng.normal(size=(200, 5)), k=10) < 0.15


@pytest.mark.slow
def test_brain_map_of_a_category_region_groups_by_category_and_is_cached(human, backend_services):
    """The demo world's "animate" region responds to animals and people, its "food" region to
    food, early visual cortex to neither: stimuli of a kind sit together only in their region's map."""
    from scipy.linalg import orthogonal_procrustes

    from backend.stages.manifolds import stimulus_manifolds

    s = backend_services
    maps = {}
    for region in ("animate", "food", "EVC"):
        maps[region] = stimulus_manifolds(human, "reference", EMBEDDER, region=region, store=s.store, pool=s.pool)
    result = maps["animate"]
    n = human.n_stimuli
    assert result["brain"].shape == result["text"].shape == (n, 2) and result["brain"].dtype == np.float32
    np.testing.assert_array_equal(result["indices"], np.arange(n))
    assert result["categories"] == list(human.stimuli.categories)
    assert result["groups"] is not None and len(result["groups"]) == n
    groups = np.array(result["groups"], dtype=object)
    animate, food = np.isin(groups, ANIMATE), groups == "food"
    separation = {region: _silhouette(m["brain"], animate) for region, m in maps.items()}
    assert separation["animate"] > 0.15 and separation["animate"] > separation["EVC"] + 0.1, separation
    # ... and the food region's map separates food instead (each region its own category).
    food_separation = {region: _silhouette(m["brain"], food) for region, m in maps.items()}
    assert food_separation["food"] > 0.15 and food_separation["food"] > food_separation["animate"] + 0.1, food_separation
    assert separation["food"] < separation["animate"] - 0.1
    # The text map is already rotated onto the brain map (the best rotation now is the identity),
    # shares its centre and has its spread.
    brain, text = result["brain"].astype(np.float64), result["text"].astype(np.float64)
    rotation, _ = orthogonal_procrustes(text - text.mean(axis=0), brain - brain.mean(axis=0))
    np.testing.assert_allclose(rotation, np.eye(2), atol=1e-3)
    np.testing.assert_allclose(text.mean(axis=0), brain.mean(axis=0), atol=1e-3 * np.ptp(brain))
    assert np.std(text - text.mean(axis=0)) == pytest.approx(np.std(brain - brain.mean(axis=0)), rel=1e-3)
    assert 0.5 < result["trustworthiness"]["brain"] <= 1 and 0.5 < result["trustworthiness"]["text"] <= 1
    assert 0 <= result["shared_neighbours"] <= 1 and not result["cached"]

    start = time.perf_counter()
    again = stimulus_manifolds(human, "reference", EMBEDDER, region="animate", store=s.store, pool=s.pool)
    assert time.perf_counter() - start < 1.0
    assert again["cached"]
    for key in ("indices", "brain", "text"):
        np.testing.assert_array_equal(again[key], result[key])
    assert again["trustworthiness"] == result["trustworthiness"]


@pytest.mark.slow
def test_real_job_and_read_back(client):
    job = _wait(client, client.compute_manifolds("demo-mouse", embedder=EMBEDDER))
    assert job["state"] == "done", job
    assert job["result"]["stimuli"] == 150 and job["result"]["units"] > 2
    got = client.manifolds("demo-mouse", embedder=EMBEDDER)
    assert got["brain"].shape == (150, 2) and np.isfinite(got["text"]).all()
    assert 0.5 < got["trustworthiness"]["text"] <= 1


# ----------------------------------------------------------------------------------- the API


def test_absent_maps_are_a_404_naming_the_job(client):
    with pytest.raises(BackendError) as err:
        client.manifolds("demo-human", embedder=EMBEDDER, region="place")
    assert err.value.status == 404
    message = str(err.value)
    assert "no manifolds" in message and "region place" in message and "manifolds job" in message and "\n" not in message


def test_bad_requests_are_one_line_4xx(client):
    with pytest.raises(BackendError, match="no region 'V99'") as err:
        client.manifolds("demo-human", region="V99")
    assert err.value.status == 404
    with pytest.raises(BackendError, match="no region 'V99'"):
        client.compute_manifolds("demo-human", region="V99")
    with pytest.raises(BackendError, match="has not captioned"):
        client.compute_manifolds("demo-human", source="no-such-captioner")
    names = [r["name"] for r in client.manifold_regions("demo-mouse")]
    assert names == ["VISp", "VISl", "VISrl", "VISal", "VISpm", "VISam"]


def test_job_then_read_back_round_trip(client, stand_in):
    first = _wait(client, client.compute_manifolds("demo-human", embedder=EMBEDDER, region="caption"))
    assert first["state"] == "done", first
    assert first["result"]["stimuli"] == 150 and first["result"]["cached"] is False
    got = client.manifolds("demo-human", embedder=EMBEDDER, region="caption")
    assert got["region"] == "caption" and got["embedder"] == EMBEDDER and got["source"] == "reference"
    assert got["brain"].dtype == np.float32 and got["brain"].shape == got["text"].shape == (150, 2)
    np.testing.assert_array_equal(got["indices"], np.arange(150))
    assert len(got["categories"]) == 150 and all(isinstance(c, str) for c in got["categories"])
    assert set(got["groups"]) <= {"animals", "people", "food", "vehicles", "plants", "buildings", "objects"}
    assert got["trustworthiness"]["brain"] == first["result"]["trust_brain"]

    second = _wait(client, client.compute_manifolds("demo-human", embedder=EMBEDDER, region="caption"))
    assert second["state"] == "done" and second["result"]["cached"] is True
    np.testing.assert_array_equal(client.manifolds("demo-human", embedder=EMBEDDER, region="caption")["text"], got["text"])


def test_cancelled_job_stores_nothing(client, stand_in, monkeypatch, backend_services):
    import backend.stages.manifolds as stage

    started = []

    def slow_pca(*args, **kwargs):
        started.append(1)
        time.sleep(0.5)
        return _stand_in_umap(*args, **kwargs)

    monkeypatch.setattr(stage, "umap_embedding", slow_pca)
    job = client.compute_manifolds("demo-human", embedder=EMBEDDER, region="food")
    deadline = time.monotonic() + 60
    while not started:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    client.cancel_job(job["id"])
    assert _wait(client, client.job(job["id"]))["state"] == "cancelled"
    with pytest.raises(BackendError) as err:
        client.manifolds("demo-human", embedder=EMBEDDER, region="food")
    assert err.value.status == 404


# ------------------------------------------------------------------------------- the viewer


class _FakeClient:
    """Serves synthetic maps of ``n`` stimuli in three categories (and 404 for other datasets)."""

    def __init__(self, n: int = 300) -> None:
        rng = np.random.default_rng(0)
        centres = np.array([[0, 0], [6, 0], [3, 5]], np.float32)
        labels = np.arange(n) % 3
        brain = centres[labels] + rng.normal(size=(n, 2)).astype(np.float32)
        self.calls = 0
        self.data = {
            "dataset": "fake",
            "source": "reference",
            "embedder": EMBEDDER,
            "region": None,
            "n_units": 42,
            "indices": np.arange(0, 2 * n, 2, dtype=np.int32),  # every other stimulus is mapped
            "brain": brain,
            "text": (brain + rng.normal(scale=0.5, size=(n, 2))).astype(np.float32),
            "categories": [("dog", "car", None)[k] for k in labels],
            "groups": None,
            "trustworthiness": {"brain": 0.9, "text": 0.8},
            "shared_neighbours": 0.2,
            "chance": 0.01,
            "params": {},
        }

    def stimuli(self, dataset_id, query="", split=None, offset=0, limit=48):
        n = 2 * len(self.data["indices"])
        rows = range(offset, min(n, offset + limit))
        return {"total": n, "offset": offset, "items": [{"index": i, "id": f"s{i}", "caption": f"caption {i}"} for i in rows]}

    def stimulus_image(self, dataset_id, index, size=0):
        return b"PNG" + bytes([index % 256])

    def manifolds(self, dataset_id, source="reference", embedder=EMBEDDER, region=None):
        self.calls += 1
        if dataset_id != "fake":
            raise BackendError("no manifolds of 'reference' captions yet; run a manifolds job first", 404)
        return self.data


def _panel(client):
    import gradio as gr

    from viewer.manifold_panel import ManifoldPanel

    with gr.Blocks():
        return ManifoldPanel(client)


def _figure(update: dict) -> dict:
    from viewer.plotly_view import figure_of

    return figure_of(update["value"])


def test_render_sends_the_figure_once_and_marks_the_selected_stimulus():
    client = _FakeClient()
    panel = _panel(client)
    first, second = panel.render("fake", 10), panel.render("fake", 40)
    assert client.calls == 1, "the maps are fetched once, then served from the cache"
    assert first["value"] == second["value"] and (first["selected"], second["selected"]) == (10, 40)
    fig = _figure(first)
    points = [t for t in fig["data"] if str(t.get("meta", "")).startswith("points")]
    indices = sorted(i for t in points if t["meta"] == "points:brain" for i in t["customdata"])
    assert indices == list(range(0, 600, 2)), "every mapped stimulus is a point carrying its index"
    hover = {i: h for t in points for i, h in zip(t["customdata"], t["hovertext"])}
    assert "caption 10" in hover[10], "hover names the stimulus's caption"
    assert panel.select(11) == {"__type__": "update", "selected": 11}  # a switch sends one number
    assert panel.thumbnail("fake", 3).startswith("data:image/png;base64,")


def test_render_is_fast_with_5000_points():
    client = _FakeClient(n=5000)
    panel = _panel(client)
    start = time.perf_counter()
    panel.render("fake", 0)
    first = time.perf_counter() - start
    times = []
    for index in range(2, 40, 2):
        start = time.perf_counter()
        panel.render("fake", index)
        times.append(time.perf_counter() - start)
    assert first < 5.0 and np.median(times) < 0.05, (first, times)


def test_render_without_maps_says_what_to_run():
    panel = _panel(_FakeClient())
    fig = _figure(panel.render("other", 0))
    assert "Compute manifolds" in fig["layout"]["annotations"][0]["text"]
    assert panel.render(None, 0)["value"] == ""


def test_render_against_the_backend(client, stand_in):
    """The panel through the real client: the message until the job runs, then the maps."""
    panel = _panel(client)
    before = _figure(panel.render("demo-human", 3, EMBEDDER, "EVC"))
    status, after = panel.compute("demo-human", 3, EMBEDDER, "EVC", progress=lambda *args, **kwargs: None)  # the button
    assert status.startswith("Mapped 150 stimuli") and "trustworthiness" in status, status
    assert "annotations" in before["layout"] and after["selected"] == 3
    fig = _figure(after)
    assert sum(len(t["customdata"]) for t in fig["data"] if t.get("meta") == "points:brain") == 150
    assert panel.render("demo-human", 4, EMBEDDER, "EVC")["value"] == after["value"]


def test_panel_wires_into_a_page(client):
    import gradio as gr

    from viewer.manifold_panel import ALL_UNITS, ManifoldPanel

    with gr.Blocks() as page:
        dataset_state, stimulus_state = gr.State("demo-mouse"), gr.State(0)
        embedder = gr.Dropdown([EMBEDDER], value=EMBEDDER)
        panel = ManifoldPanel(client)
        panel.wire(dataset_state, stimulus_state, embedder)
    assert panel.plot.elem_id == "ctx-manifold"
    assert len(page.fns) >= 4  # the button, the region list, the region choice, the embedder
    update = panel.region_choices("demo-mouse", "animate")
    assert update["choices"][0] == ALL_UNITS and "VISam" in update["choices"] and update["value"] == ALL_UNITS
