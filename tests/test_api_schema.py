"""The backend against its own OpenAPI schema: schemathesis generates requests for every operation
(valid and invalid), and every answer must be documented there: no 5xx, statuses, content types
and bodies as declared. Bounded in examples per operation and in time."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

EXAMPLES_PER_OPERATION = 12


from backend.service.app import create_app  # noqa: E402  (after conftest has set the test cache)

# The demo world is made by the small_world fixture each test asks for, not by this app.
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(prepare_demo=False))
# A valid brain-captions request trains a real language model for minutes in the background: its
# job is tested in tests/test_brain_captions.py (with a tiny LM) instead of being fuzzed here.
schema = schema.exclude(path="/api/jobs/brain-captions", method="POST")


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_answer_is_declared_in_the_schema(case, small_world):
    case.call_and_validate()
