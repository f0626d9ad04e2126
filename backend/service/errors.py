"""The API's error responses, as the OpenAPI schema declares them.

Every error the backend itself raises is ``{"detail": "one line"}`` with one of these statuses.
422 means the request itself is invalid, and its body is FastAPI's list of problems (as the schema
says), also for the checks a schema cannot express (:func:`invalid`). A request the schema allows
is never answered 400 or 422 for what the backend holds: a missing thing is 404, a thing not in
the state the request needs (weights not downloaded, captions not finished) is 409.
"""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel


class ErrorDetail(BaseModel):
    detail: str


DESCRIPTIONS = {
    400: "The body is not JSON that can be parsed",
    404: "No such dataset, stimulus, model (of the kind needed), caption source, region, job or cached result "
    "(run its job first)",
    409: "Not in the state the request needs: weights not downloaded, captions not finished, a dataset whose files "
    "fail their checks",
    413: "The request body is larger than the backend accepts",
    503: "The demo world is still being generated; try again shortly",
}


def error_responses(*codes: int) -> dict:
    """``responses=`` for a route or router: each status with its description and body schema."""
    return {code: {"model": ErrorDetail, "description": DESCRIPTIONS[code]} for code in codes}


def invalid(field: str, message: str) -> RequestValidationError:
    """A 422 about one body field, in the shape of FastAPI's own validation errors."""
    return RequestValidationError([{"type": "value_error", "loc": ("body", field), "msg": message, "input": None}])
