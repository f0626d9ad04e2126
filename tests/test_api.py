"""Every backend endpoint, through the client the viewer uses, against a real server."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from backend.service.client import BackendClient, BackendError, BackendUnavailable


def test_health(client):
    health = client.health()
    assert health["status"] == "ok"
    assert health["demo"]["state"] == "ready"


def test_openapi_schema_lists_every_endpoint(backend_url):
    paths = httpx.get(f"{backend_url}/openapi.json").json()["paths"]
    for path in (
        "/api/health",
        "/api/datasets",
        "/api/datasets/{dataset_id}",
        "/api/datasets/{dataset_id}/stimuli",
        "/api/datasets/{dataset_id}/stimuli/{index}",
        "/api/datasets/{dataset_id}/stimuli/{index}/image",
        "/api/datasets/{dataset_id}/stimuli/{index}/responses",
        "/api/datasets/{dataset_id}/stimuli/{index}/captions",
        "/api/datasets/{dataset_id}/space",
        "/api/surfaces/{mesh}",
        "/api/datasets/{dataset_id}/truth",
        "/api/datasets/{dataset_id}/truth/{name}",
        "/api/datasets/{dataset_id}/noise-ceiling",
    ):
        assert path in paths, path


def test_datasets_lists_the_demo_world_with_sizes(client, human):
    listed = {d["id"]: d for d in client.datasets()}
    assert listed["demo-human"]["ready"] and listed["demo-mouse"]["ready"]
    assert listed["demo-human"]["n_stimuli"] == human.n_stimuli
    assert listed["demo-human"]["n_units"] == 20484
    assert listed["demo-human"]["size_bytes"] > human.responses.nbytes


def test_dataset_detail(client, human):
    detail = client.dataset("demo-human")
    assert detail["space"] == "surface"
    assert detail["splits"] == {"train": 120, "test": 30}
    assert detail["n_repeats"] == 3
    assert "signal_caption" in detail["truth"]
    sources = client.captioners("demo-human")
    assert sources[0]["id"] == "reference" and not sources[0]["simulated"]
    noisy = next(c for c in sources if c["id"] == "sim-noisy-words")
    assert noisy["simulated"] and noisy["label"] != "sim-noisy-words"


def test_stimulus_page_and_search(client, human):
    page = client.stimuli("demo-human", offset=10, limit=5)
    assert page["total"] == human.n_stimuli
    assert [item["index"] for item in page["items"]] == list(range(10, 15))
    assert page["items"][0]["caption"] == human.stimuli.captions[10]

    word = human.stimuli.captions[0].split()[2]  # an object name of the first scene
    found = client.stimuli("demo-human", query=word.upper(), limit=500)
    expected = [i for i, c in enumerate(human.stimuli.captions) if word in c or word in (human.stimuli.categories[i] or "")]
    assert [item["index"] for item in found["items"]] == expected
    assert found["total"] == len(expected) > 0

    test_only = client.stimuli("demo-human", split="test", limit=500)
    assert test_only["total"] == 30 and all(item["split"] == "test" for item in test_only["items"])
    assert client.stimuli("demo-human", query="zebra-unicorn-xyz")["total"] == 0


def test_stimulus_image_is_the_stored_png(client, human):
    png = client.stimulus_image("demo-human", 3)
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    stored = np.asarray(Image.open(human.stimuli.image_paths[3]).convert("RGB"))
    np.testing.assert_array_equal(image, stored)
    thumb = Image.open(io.BytesIO(client.stimulus_image("demo-human", 3, size=64)))
    assert thumb.size == (64, 64)


def test_responses_are_exact(client, human, mouse):
    np.testing.assert_array_equal(client.responses("demo-human", 7), human.responses[7])
    np.testing.assert_array_equal(client.responses("demo-mouse", 7), mouse.responses[7])


def test_captions_of_a_stimulus(client, human):
    captions = client.captions("demo-human", 5)
    assert captions["reference"] == human.stimuli.captions[5]
    assert captions["sim-reference"] == human.stimuli.captions[5]
    assert captions["sim-one-object"] == human.captions["sim-one-object"][5]
    assert list(captions)[0] == "reference"


def test_surface_unit_space_and_geometry(client, human):
    space = client.unit_space("demo-human")
    assert space["kind"] == "surface" and space["mesh"] == "fsaverage5" and space["vertices"] is None
    np.testing.assert_array_equal(space["roi_labels"], human.space.roi_labels)
    assert space["roi_names"][0] == "none" and "caption" in space["roi_names"]
    geometry = client.surface_geometry("fsaverage5")
    assert set(geometry) == {"lh", "rh"}
    assert geometry["lh"]["coords"].shape == (10242, 3) and geometry["rh"]["faces"].shape == (20480, 3)
    assert geometry["lh"]["faces"].max() == 10241
    assert geometry["lh"]["sulc"].shape == (10242,)


def test_neuron_unit_space(client, mouse):
    space = client.unit_space("demo-mouse")
    assert space["kind"] == "neurons"
    assert space["areas"] == ["VISp", "VISl", "VISrl", "VISal", "VISpm", "VISam"]
    np.testing.assert_array_equal(space["x"], mouse.space.x)
    np.testing.assert_array_equal(space["area"], mouse.space.area)
    assert space["area_outlines"]["VISp"].shape[1] == 2


def test_truth_maps(client, human):
    maps = client.truth("demo-human")
    assert "expected_test_r" in maps
    np.testing.assert_array_equal(client.truth_map("demo-human", "ncsnr"), human.truth_map("ncsnr"))
    np.testing.assert_allclose(client.noise_ceiling("demo-human"), human.noise_ceiling)


@pytest.mark.parametrize(
    ("call", "status", "words"),
    [
        (lambda c: c.dataset("no-such-dataset"), 404, "unknown dataset 'no-such-dataset'"),
        (lambda c: c.responses("demo-human", 10**6), 404, "has stimuli 0.."),
        (lambda c: c.captions("demo-mouse", -1), 404, "has stimuli 0.."),
        (lambda c: c.truth_map("demo-human", "nope"), 404, "no truth map 'nope'"),
        (lambda c: c.stimuli("demo-human", limit=10**6), 422, "limit"),
        (lambda c: c.stimuli("demo-human", split="validation"), 422, "split"),
        (lambda c: c.stimulus_image("demo-human", 0, size=10**5), 422, "size"),
        (lambda c: c.surface_geometry("fsaverage7"), 404, "not available offline"),
    ],
)
def test_bad_requests_get_one_line_errors(client, call, status, words):
    with pytest.raises(BackendError) as info:
        call(client)
    assert info.value.status == status
    assert words in str(info.value)
    assert "\n" not in str(info.value)
    assert client.health()["status"] == "ok", "the backend survives bad requests"


def test_unavailable_backend_is_a_clear_error():
    from tests.conftest import free_port

    client = BackendClient(f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(BackendUnavailable, match="is not answering"):
        client.health()
