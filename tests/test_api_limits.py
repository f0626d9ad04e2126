"""Request limits and protocol details of the backend: body size caps (413), truthful OPTIONS."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient

CAP = 4096


@pytest.fixture(scope="module")
def capped(small_world):
    from backend.service.app import create_app

    with TestClient(create_app(prepare_demo=False, max_body=CAP)) as client:
        yield client


def test_a_declared_body_over_the_cap_is_413_before_it_is_read(capped):
    body = {"dataset": "demo-human", "corpus": ["a caption that repeats"] * 400}
    response = capped.post("/api/jobs/decode", json=body)
    assert response.status_code == 413 and "larger than" in response.json()["detail"]
    assert capped.get("/api/health").status_code == 200


def test_a_chunked_body_over_the_cap_is_413(capped):
    def chunks():
        for _ in range(20):
            yield b"x" * 1024

    response = capped.post("/api/jobs/decode", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_bodies_within_the_cap_reach_the_route(capped):
    response = capped.post("/api/jobs/decode", json={"dataset": "no-such-dataset"})
    assert response.status_code == 404 and "unknown dataset" in response.json()["detail"]


def test_the_real_backend_caps_bodies_at_32_mib(backend_url):
    from backend.service.limits import MAX_BODY_BYTES

    assert MAX_BODY_BYTES == 32 * 2**20
    payload = b'{"dataset": "demo-human", "corpus": ["' + b"x" * (MAX_BODY_BYTES + 10) + b'"]}'
    try:
        response = httpx.post(f"{backend_url}/api/jobs/decode", content=payload, headers={"content-type": "application/json"}, timeout=60)
        assert response.status_code == 413
    except httpx.TransportError:  # the server may close while the client still sends: refused all the same
        pass
    assert httpx.get(f"{backend_url}/api/health", timeout=10).json()["status"] == "ok"


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/api/jobs/caption", {"POST"}),  # not GET, though /api/jobs/{job_id} matches the path too
        ("/api/jobs/job-0123456789ab", {"GET"}),
        ("/api/jobs/job-0123456789ab/cancel", {"POST"}),
        ("/api/datasets/demo-human/text-to-brain", {"POST"}),
        ("/api/datasets/demo-human", {"GET"}),
    ],
)
@pytest.mark.parametrize("method", ["OPTIONS", "PUT", "DELETE", "PATCH"])
def test_an_undeclared_method_is_405_naming_the_routes_methods(backend_url, path, methods, method):
    response = httpx.request(method, backend_url + path, timeout=10)
    assert response.status_code == 405
    assert {m.strip() for m in response.headers["allow"].split(",")} == methods


def test_undeclared_methods_on_no_route_are_404(backend_url):
    assert httpx.options(f"{backend_url}/api/nothing-here", timeout=10).status_code == 404


@pytest.mark.parametrize(
    "seed, accepted",
    [(3, True), (3.0, True), (2**32 - 1, True), (False, False), ("3", False), (3.5, False), (-1, False), (2**32, False), (2**70, False)],
)
def test_job_bodies_take_what_the_schema_declares(capped, seed, accepted):
    """Strict types: a boolean or a string is no seed (pydantic's lax mode would take both), an
    integral float is (JSON Schema counts 3.0 as an integer), and seeds stay in numpy's and torch's range."""
    body = {"dataset": "demo-human", "model": "no-such-model", "sources": ["reference"], "stimuli": [0.0, 1], "seed": seed}
    response = capped.post("/api/jobs/generate-images", json=body)
    if accepted:  # validation passed: the unknown model is what is refused
        assert response.status_code == 404 and "no-such-model" in response.json()["detail"], response.text
    else:
        assert response.status_code == 422, response.text
        assert "seed" in response.text
