"""The backend against its own OpenAPI schema: schemathesis generates requests for every operation
(valid and invalid), and every answer must be documented there: no 5xx, statuses, content types
and bodies as declared. Bounded in examples per operation and in time."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

EXAMPLES_PER_OPERATION = 12


from backend.cache import Store  # noqa: E402  (after conftest has set the test cache)
from backend.service.app import create_app  # noqa: E402

# The demo world is made by the small_world fixture each test asks for, not by this app. Valid
# requests start real jobs that go on after their test: they write to a store of their own, so no
# other test finds their outputs.
_store = Store(Path(tempfile.mkdtemp(prefix="cortextual-schema-")) / "store.sqlite")
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(prepare_demo=False, store=_store))
# A valid brain-captions request trains a real language model for minutes in the background: its
# job is tested in tests/test_brain_captions.py (with a tiny LM) instead of being fuzzed here.
schema = schema.exclude(path="/api/jobs/brain-captions", method="POST")
schema = schema.exclude(path="/api/jobs/brain-qformer", method="POST")  # the same, through the Q-Former
# Likewise a valid visual-encoders request trains CNNs for minutes (tests/test_visual_encoders.py runs it small).
schema = schema.exclude(path="/api/jobs/visual-encoders", method="POST")


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_answer_is_declared_in_the_schema(case, small_world):
    case.call_and_validate()
