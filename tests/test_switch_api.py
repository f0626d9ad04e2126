"""The stimulus switch: one request carries what the separate reads give, and bad ids are one-line 4xx."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from backend.service.client import BackendError
from tests.test_stages_api import wait_job

RENDERER = "sim-scene-renderer"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def _counting(client) -> list[str]:
    sent: list[str] = []
    client._http.event_hooks["request"].append(lambda request: sent.append(request.url.path))
    return sent


def test_switch_is_one_request_and_equals_the_separate_reads(client, human):
    row = int(human.stimuli.indices("train")[3])
    sent = _counting(client)
    switch = client.switch("demo-human", row, size=320)
    assert sent == [f"/api/datasets/demo-human/stimuli/{row}/switch"]
    assert switch["stimulus"] == client.stimulus("demo-human", row)
    assert switch["image"] == client.stimulus_image("demo-human", row, size=320)
    full = client.responses("demo-human", row)
    assert switch["responses"].shape == full.shape == (human.n_units,)
    # float16 on the wire: within half-precision rounding of the float32 read
    np.testing.assert_allclose(switch["responses"], full, rtol=1e-3, atol=1e-3)
    assert switch["captions"] == client.captions("demo-human", row)
    assert switch["captioners"] == client.captioners("demo-human")
    assert switch["decoded"] is None and switch["generated"] is None  # a training stimulus, nothing run
    assert switch["reconstructions"] == []  # no text-to-image model asked for


def test_switch_values_fit_the_budget(client, backend_url):
    raw = httpx.get(f"{backend_url}/api/datasets/demo-human/stimuli/0/switch").json()
    values_bytes = len(raw["responses"]["data"])  # base64 of float16
    assert raw["responses"]["dtype"] == "float16"
    assert values_bytes < 100_000, values_bytes


@pytest.mark.slow
def test_switch_lists_reconstructions_and_the_decoded_caption(client, human):
    row = int(human.stimuli.indices("test")[1])
    job = wait_job(client, client.decode("demo-human", "reference", MINILM), timeout=300)
    assert job["state"] == "done", job
    job = wait_job(client, client.generate_images("demo-human", RENDERER, ["reference"], [row], with_decoded=True))
    assert job["state"] == "done", job
    switch = client.switch("demo-human", row, model=RENDERER)
    assert switch["decoded"] == client.decoded("demo-human", row)
    listing = client.reconstructions("demo-human", row, RENDERER)
    assert [{k: v for k, v in e.items() if k != "image"} for e in switch["reconstructions"]] == listing
    present = [e for e in switch["reconstructions"] if e["present"]]
    assert {e["source"] for e in present} >= {"reference", "decoded from the brain"}
    for entry in present:
        assert entry["image"] == client.output_image(entry["key"])
    without = client.switch("demo-human", row, model=RENDERER, images=False)
    assert all(e["image"] is None for e in without["reconstructions"])


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/datasets/demo-human/stimuli/99999/switch", 404),
        ("/api/datasets/demo-human/stimuli/-1/switch", 404),
        ("/api/datasets/no-such-set/stimuli/0/switch", 404),
        ("/api/datasets/demo-human/stimuli/zero/switch", 422),
        ("/api/datasets/demo-human/stimuli/0/switch?model=no-such-model", 404),
        ("/api/datasets/demo-human/stimuli/0/switch?size=99999", 422),
    ],
)
def test_bad_switches_are_one_line_4xx(client, backend_url, path, status):
    response = httpx.get(backend_url + path)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    if status == 404:
        assert isinstance(detail, str) and "\n" not in detail and detail
    with pytest.raises(BackendError) as err:
        client._json(path.split("?")[0], **dict(p.split("=") for p in path.partition("?")[2].split("&") if p))
    assert err.value.status == status and "\n" not in str(err.value)
