"""Visual encoders (backend/models/visual_encoders.py), their stage and API, on tiny problems: shapes
and determinism for each backbone and objective, the loss falls, the category control's refusal,
cache hits, cancel, and the API's 4xx. Whether the networks agree with the brain is the slow truth
tests' business (tests/test_visual_encoders_truth.py)."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from backend.cache import Store
from backend.models import visual_encoders as ve
from backend.models.device import Cancelled
from backend.stages import visual_encoders as stage
from tests.models_tiny import register_tiny, tiny_id

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TINY = dict(input_size=16, widths=(8, 16), head_hidden=16, batch_size=4, epochs=1)


def _images(n: int = 8, side: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 3, side, side), dtype=np.uint8))


@pytest.fixture(scope="module")
def tower():
    """The tiny random-weight CLIP's vision tower, registered by local path and loaded by the pool."""
    from backend.models.pool import ModelPool

    register_tiny("clip-vision")
    pool = ModelPool(budget_gb=4, device="cpu")
    return ve.FrozenTower(pool.get(tiny_id("clip-vision"))), pool


def _trained(config: ve.EncoderConfig, tower, targets: np.ndarray, seed: int = 0):
    model = ve.build_encoder(config, targets.shape[1], seed, tower)
    record = ve.train_encoder(model, _images(), targets, seed=seed)
    return model, record


@pytest.mark.parametrize("objective", ve.OBJECTIVES)
@pytest.mark.parametrize("backbone", ve.BACKBONES)
def test_shapes_and_determinism_for_each_backbone_and_objective(backbone, objective, tower):
    frozen = tower[0] if backbone == "tower" else None
    config = ve.EncoderConfig(backbone=backbone, objective=objective, **TINY)
    rng = np.random.default_rng(1)
    targets = (rng.random((8, 5)) > 0.5).astype(np.float32) if objective == "category" else rng.standard_normal((8, 6)).astype(np.float32)
    a, record = _trained(config, frozen, targets)
    b, _ = _trained(config, frozen, targets)
    c, _ = _trained(config, frozen, targets, seed=1)
    assert record["steps"] == 2 and len(record["loss"]) == 1 and np.isfinite(record["loss"][0])
    images = _images(5, seed=3)
    fa, fb, fc = (ve.encoder_features(m, images) for m in (a, b, c))
    width = 16 if backbone == "tower" else TINY["widths"][-1]
    assert fa["penultimate"].shape == (5, width) and fa["embedding"].shape == (5, targets.shape[1])
    assert fa["penultimate"].dtype == np.float32
    for layer in ve.LAYERS:
        np.testing.assert_array_equal(fa[layer], fb[layer])  # same seed, same data: the same network
        assert not np.allclose(fa[layer], fc[layer])  # another seed: another network
    # Batched inference equals one by one (GroupNorm has no batch statistics).
    one = np.concatenate([ve.encoder_features(a, images[i : i + 1])["embedding"] for i in range(5)])
    np.testing.assert_allclose(one, fa["embedding"], rtol=1e-4, atol=1e-5)
    # Saved and read back: the same features (the tower itself is never saved).
    again, extra = ve.encoder_from_bytes(ve.encoder_to_bytes(a, {"x": 1}), frozen)
    np.testing.assert_array_equal(ve.encoder_features(again, images)["embedding"], fa["embedding"])
    assert extra == {"x": 1}
    if backbone == "tower":
        assert not any(k.startswith("_tower") or "vision_model" in k for k in a.state_dict())


def test_untrained_network_depends_on_its_seed_alone():
    config = ve.EncoderConfig(epochs=0, **{k: v for k, v in TINY.items() if k != "epochs"})
    a, b = ve.build_encoder(config, 6, 7), ve.build_encoder(config, 6, 7)
    record = ve.train_encoder(a, _images(), np.zeros((8, 6), np.float32), seed=7)
    assert record["steps"] == 0
    np.testing.assert_array_equal(ve.encoder_features(a, _images())["embedding"], ve.encoder_features(b, _images())["embedding"])


@pytest.mark.parametrize("objective", ["cosine", "infonce", "category"])
def test_loss_falls_on_a_tiny_problem(objective):
    """Images whose colour says their target: each objective's loss falls well below where it starts."""
    rng = np.random.default_rng(0)
    n, k = 32, 4
    classes = np.arange(n) % k
    colours = rng.integers(0, 256, (k, 3))
    images = np.broadcast_to(colours[classes][:, :, None, None], (n, 3, 16, 16)).astype(np.uint8).copy()
    images = np.clip(images + rng.integers(-20, 20, images.shape), 0, 255).astype(np.uint8)
    if objective == "category":
        targets = np.eye(k, dtype=np.float32)[classes]
    else:
        targets = rng.standard_normal((k, 12)).astype(np.float32)[classes] + 0.1 * rng.standard_normal((n, 12)).astype(np.float32)
    config = ve.EncoderConfig(objective=objective, input_size=16, widths=(8, 16), batch_size=8, epochs=15, lr=1e-2, augment=False)
    model = ve.build_encoder(config, targets.shape[1], 0)
    record = ve.train_encoder(model, torch.from_numpy(images), targets, seed=0)
    assert record["loss"][-1] < 0.5 * record["loss"][0], record["loss"]


def test_augmentation_keeps_shape_and_range_and_follows_its_generator():
    images = _images(6, 32)
    a = ve.augment(images, torch.Generator().manual_seed(0))
    b = ve.augment(images, torch.Generator().manual_seed(0))
    assert a.shape == images.shape and float(a.min()) >= 0 and float(a.max()) <= 255
    assert torch.equal(a, b) and not torch.equal(a, images.float())


def test_config_refuses_what_it_cannot_train():
    for bad in (dict(backbone="resnet"), dict(objective="mse"), dict(input_size=8), dict(epochs=-1)):
        with pytest.raises(ValueError) as err:
            ve.EncoderConfig(**bad)
        assert "\n" not in str(err.value)


def test_category_targets_are_multi_hot_and_the_control_refuses_a_dataset_without_categories(human):
    labels, names = ve.category_targets(["dog", "cat, dog", None])
    assert names == ["cat", "dog"] and labels.tolist() == [[0, 1], [1, 1], [0, 0]]
    without = replace(human, stimuli=replace(human.stimuli, categories=(None,) * human.n_stimuli))
    with pytest.raises(ValueError) as err:
        stage.compare_visual_encoders(without, ("category",), stage.Settings(epochs=1), store=None, pool=None)
    message = str(err.value)
    assert "no stimulus categories" in message and "category-trained control" in message and "\n" not in message


SMALL = stage.Settings(input_size=16, epochs=1, subset_size=20, n_subsets=3)


def _small(**kw) -> stage.Settings:
    return replace(SMALL, **kw)


def test_cache_hit_skips_training(human, tmp_path, monkeypatch):
    from backend.models.pool import ModelPool

    store, pool = Store(tmp_path / "store.sqlite"), ModelPool(device="cpu")
    settings = _small()
    _, first, key = stage.trained_network(human, "language", settings, store=store, pool=pool)
    assert first["cached"] is False and key in store
    calls = []
    monkeypatch.setattr(ve, "train_encoder", lambda *a, **k: calls.append(1) or pytest.fail("trained again"))
    _, second, key2 = stage.trained_network(human, "language", settings, store=store, pool=pool)
    assert second["cached"] is True and key2 == key and not calls
    assert second["loss"] == first["loss"]
    # Another seed is another network: trained, under another key.
    monkeypatch.undo()
    _, third, key3 = stage.trained_network(human, "language", _small(seed=1), store=store, pool=pool)
    assert third["cached"] is False and key3 != key


def test_cancel_leaves_nothing_half_written(human, tmp_path):
    from backend.models.pool import ModelPool

    store, pool = Store(tmp_path / "store.sqlite"), ModelPool(device="cpu")
    settings = _small(epochs=3)
    stage.embed_texts_cached(list(human.stimuli.captions), MINILM, store=store, pool=pool)  # written before: not the job's
    before = len(store)
    steps: list[str] = []

    def cancel() -> bool:
        return len([m for m in steps if "step" in m]) >= 2

    with pytest.raises(Cancelled):
        stage.compare_visual_encoders(human, ("language",), settings, store=store, pool=pool,
                                      report=lambda d, t, m: steps.append(m), cancel=cancel)
    assert len(store) == before, "a cancelled training wrote something"
    targets, digest = stage._targets(human, "language", settings, store, pool, None)
    assert stage.weights_key(human, "language", settings, digest) not in store
    assert stage.cached_comparison(human, ("language",), settings, store) is None


def test_comparison_table_difference_map_and_cached_rerun(human, tmp_path):
    from backend.models.pool import ModelPool

    store, pool = Store(tmp_path / "store.sqlite"), ModelPool(device="cpu")
    messages: list[str] = []
    result = stage.compare_visual_encoders(human, stage.NETWORKS, SMALL, store=store, pool=pool,
                                           report=lambda d, t, m: messages.append(m))
    assert any("language network: epoch 1 of 1, step" in m and "loss" in m for m in messages)
    regions = result["regions"]
    assert regions == ["EVC", "animate", "food", "place", "caption"]
    combos = {(r["network"], r["layer"], r["region"]) for r in result["rows"]}
    for network in stage.NETWORKS:
        for layer in ve.LAYERS:
            assert {(network, layer, region) for region in regions} <= combos
    assert {("text", "caption embedding", region) for region in regions} <= combos
    for row in result["rows"]:
        assert -1 <= row["encoding_r"] <= 1 and -1 <= row["rsa_mean"] <= 1 and row["rsa_sd"] >= 0
    diff = stage.difference_map(human, result, store)
    assert diff.shape == (human.n_units,) and diff.dtype == np.float32 and np.isfinite(diff).all()
    started = time.perf_counter()
    again = stage.compare_visual_encoders(human, stage.NETWORKS, SMALL, store=store, pool=None)
    assert again == result and time.perf_counter() - started < 2
    lines = stage.table_lines(result)
    assert len(lines) == 1 + len(regions) and "caption" in lines[-1]
    # The analyze report's section reads the same comparison (from the store: nothing trains).
    from backend.stages.report import visual_encoder_report

    section = visual_encoder_report(human, stage.NETWORKS, SMALL, store=store, pool=None)
    assert set(section["by_region"]) == set(regions) and section["table"] == lines
    cell = section["by_region"]["caption"]["language"]["penultimate"]
    row = next(r for r in result["rows"] if (r["network"], r["layer"], r["region"]) == ("language", "penultimate", "caption"))
    assert cell["encoding_r"] == row["encoding_r"] and cell["rsa_mean"] == row["rsa_mean"]
    assert set(section["by_region"]["caption"]) == {"language", "category", "untrained", "text"}


def test_analyze_option_selects_the_networks():
    import launch

    assert launch.visual_networks("language,untrained") == ("language", "untrained")
    assert launch.visual_networks("none") == ()
    with pytest.raises(ValueError, match="unknown network 'vgg'"):
        launch.visual_networks("language,vgg")


# ------------------------------------------------------------------------------------- API


def _wait(client, job_id: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client._json(f"/api/visual-encoders/jobs/{job_id}")
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.3)


def test_api_job_status_result_and_difference_map(client):
    submitted = client.visual_encoders_job("demo-mouse", networks=["language", "category"], input_size=16, epochs=1)
    job = _wait(client, submitted["id"])
    assert job["state"] == "done", job
    comparison_id = job["result"]["comparison_id"]
    assert job["comparison"]["networks"] == ["language", "category"]
    table = client.visual_encoder_comparison(comparison_id)
    assert {r["region"] for r in table["rows"]} == {"VISp", "VISl", "VISrl", "VISal", "VISpm", "VISam"}
    values = client.visual_encoder_difference_map(comparison_id, "penultimate")
    assert values.shape == (client.dataset("demo-mouse")["n_units"],) and np.isfinite(values).all()
    listed = client._json("/api/datasets/demo-mouse/visual-encoders")
    assert comparison_id in [c["comparison"] for c in listed]


def test_api_answers_bad_ids_with_one_line_4xx(client, backend_url, small_world):
    import httpx

    from backend.config import datasets_dir

    def status(method: str, path: str, **kw) -> tuple[int, str]:
        response = httpx.request(method, backend_url + path, timeout=30, **kw)
        detail = response.json().get("detail")
        return response.status_code, detail if isinstance(detail, str) else json.dumps(detail)

    missing = "0" * 64
    cases = [
        ("GET", f"/api/visual-encoders/{missing}", {}, 404),
        ("GET", f"/api/visual-encoders/{missing}/difference-map", {}, 404),
        ("GET", "/api/visual-encoders/not-an-id", {}, 422),
        ("GET", "/api/visual-encoders/jobs/nojob", {}, 404),
        ("GET", "/api/datasets/nope/visual-encoders", {}, 404),
        ("POST", "/api/jobs/visual-encoders", {"json": {"dataset": "nope"}}, 404),
        ("POST", "/api/jobs/visual-encoders", {"json": {"dataset": "demo-human", "embedder": "nope"}}, 404),
        ("POST", "/api/jobs/visual-encoders", {"json": {"dataset": "demo-human", "backbone": "nope"}}, 404),
        ("POST", "/api/jobs/visual-encoders", {"json": {"dataset": "demo-human", "backbone": MINILM}}, 404),
        ("POST", "/api/jobs/visual-encoders", {"json": {"dataset": "demo-human", "source": "nope"}}, 404),
        ("POST", "/api/jobs/visual-encoders", {"json": {"dataset": "demo-human", "networks": ["vgg"]}}, 422),
        ("POST", "/api/jobs/visual-encoders", {"json": {"dataset": "../etc"}}, 422),
    ]
    for method, path, kw, expected in cases:
        code, detail = status(method, path, **kw)
        assert code == expected, (path, kw, code, detail)
        if code != 422:
            assert detail and "\n" not in detail, detail
    # A job id of another kind is not a visual-encoders job.
    other = client.encode("demo-mouse")
    code, detail = status("GET", f"/api/visual-encoders/jobs/{other['id']}")
    assert code == 404 and "not a visual-encoders job" in detail
    # A dataset without categories: the category control is refused at once, in one line.
    folder = datasets_dir() / "nocat-mouse"
    if not folder.exists():
        shutil.copytree(small_world["demo-mouse"], folder)
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["id"] = "nocat-mouse"
        for stimulus in manifest["stimuli"]:
            stimulus.pop("category", None)
        (folder / "manifest.json").write_text(json.dumps(manifest))
    code, detail = status("POST", "/api/jobs/visual-encoders", json={"dataset": "nocat-mouse", "networks": ["category"]})
    assert code == 409 and "no stimulus categories" in detail, (code, detail)


def test_viewer_figure_has_bars_with_spread_axis_titles_and_a_legend():
    from viewer.visual_encoders_tab import comparison_figure, comparison_table

    regions = ["EVC", "caption"]
    rows = [{"network": n, "layer": layer, "region": g, "encoding_r": 0.1 * k + 0.01 * j, "rsa_mean": 0.02 * k, "rsa_sd": 0.01}
            for k, n in enumerate(stage.NETWORKS) for layer in ve.LAYERS for j, g in enumerate(regions)]
    rows += [{"network": "text", "layer": "caption embedding", "region": g, "encoding_r": 0.5, "rsa_mean": 0.1, "rsa_sd": 0.02}
             for g in regions]
    comparison = {"networks": list(stage.NETWORKS), "regions": regions, "rows": rows}
    figure = comparison_figure(comparison, "embedding")
    bars = [t for t in figure.data if t.type == "bar"]
    assert len(bars) == 8  # four networks x (encoding, RSA)
    assert [t.name for t in bars if t.showlegend is not False] == [
        "language-trained network", "category-trained network", "untrained network", "caption text embedding"]
    rsa_bars = [t for t in bars if t.error_y.array is not None]
    assert len(rsa_bars) == 4 and all(list(t.error_y.array) in ([0.01, 0.01], [0.02, 0.02]) for t in rsa_bars)
    assert list(bars[0].y) == [0.0, 0.01]  # the language network's embedding layer, per region
    titles = [figure.layout.xaxis.title.text, figure.layout.yaxis.title.text, figure.layout.yaxis2.title.text]
    assert titles == ["brain region", "mean Pearson r on the test stimuli", "Spearman correlation of RDMs"]
    table = comparison_table(comparison, "penultimate")
    assert list(table["region"]) == regions and "caption text embedding: RSA" in table.columns


def test_viewer_default_epochs_are_the_stages():
    from viewer.visual_encoders_tab import DEFAULT_EPOCHS

    assert DEFAULT_EPOCHS == stage.Settings.epochs == ve.EncoderConfig.epochs
