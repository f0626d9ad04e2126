"""The models API: every registered model, whether its weights are here, and how to get them."""

from __future__ import annotations

from fastapi import APIRouter, Query

from backend.models.registry import KINDS, ModelSpec, get_model, list_models
from backend.models.weights import pull_command, weights_present
from backend.service.errors import error_responses

router = APIRouter(responses=error_responses(404))


def describe(spec: ModelSpec) -> dict:
    present = weights_present(spec)
    return {**spec.to_dict(), "present": present, "pull": None if present or spec.simulated else pull_command(spec)}


@router.get("/api/models", summary="Registered models, with whether their weights are present")
def models(kind: str | None = Query(None, pattern="^(" + "|".join(KINDS) + ")$")) -> list[dict]:
    return [describe(spec) for spec in list_models(kind)]


@router.get("/api/models/{model_id:path}", summary="One model's spec and presence")
def model(model_id: str) -> dict:
    return describe(get_model(model_id))
