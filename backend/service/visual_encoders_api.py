"""The visual-encoders API: a job that trains the language-trained, category-trained and untrained
networks on a dataset's training images and compares them with the caption embeddings per region
(encoding and RSA), and reads of its results by id.

Requests are checked when submitted: an unknown dataset, embedder or backbone, a caption source that
is not complete, or a category control on a dataset without categories is a one-line 4xx at once.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.responses import Response
from pydantic import Field

from backend.data.schema import Dataset
from backend.models.registry import DEFAULTS
from backend.service.errors import error_responses
from backend.service.jobs import Job
from backend.service.stages_api import cancel_flag, checked_model, complete_captions, run_cancellable
from backend.service.state import ApiRequest, DatasetField, DatasetId,  Services, services
from backend.service.wire import array_headers
from backend.stages import visual_encoders as stage
from backend.stages.captions import REFERENCE

router = APIRouter(responses=error_responses(400, 404, 409, 503))

Network = Literal["language", "category", "untrained"]
#: A comparison's id: the store key of its table (64 hex digits).
ComparisonId = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="the id a visual-encoders job returned")]
JobId = Annotated[str, Path(pattern=r"^[0-9A-Za-z_-]{1,64}$", description="a job id")]


class VisualEncodersRequest(ApiRequest):
    dataset: DatasetField
    networks: list[Network] = Field(default_factory=lambda: list(stage.NETWORKS), min_length=1, max_length=3)
    source: str = Field(REFERENCE, description='"reference" or the captioner whose captions the language network learns')
    embedder: str = DEFAULTS["text_embedder"]
    backbone: str = Field("cnn", max_length=200, description='"cnn" (trained from scratch) or a CLIP-vision image embedder id (frozen, trained head)')
    objective: Literal["cosine", "infonce", "cosine+infonce"] = "cosine"
    input_size: int = Field(stage.Settings.input_size, ge=16, le=256, description="the CNN's input side in pixels")
    epochs: int = Field(stage.Settings.epochs, ge=0, le=200)
    alignment_weight: float = Field(1.0, ge=0, le=100, description="weight of InfoNCE when combined with the cosine loss")
    seed: int = Field(0, ge=0, le=2**31 - 1)


def _settings(request: VisualEncodersRequest) -> stage.Settings:
    return stage.Settings(source=request.source, embedder=request.embedder, backbone=request.backbone,
                          objective=request.objective, input_size=request.input_size, epochs=request.epochs,
                          alignment_weight=request.alignment_weight, seed=request.seed)


def _checked(s: Services, request: VisualEncodersRequest) -> tuple[Dataset, stage.Settings]:
    ds = s.dataset(request.dataset)
    checked_model(request.embedder, "text_embedder")
    complete_captions(s, ds, request.source)
    if request.backbone != "cnn":
        checked_model(request.backbone, "image_embedder")
        try:
            stage.check_backbone(request.backbone)
        except ValueError as err:
            raise HTTPException(404, str(err)) from None
    if "category" in request.networks:
        try:
            stage.check_categories(ds)
        except ValueError as err:
            raise HTTPException(409, str(err)) from None
    if len(ds.stimuli.indices("train")) < 2 or len(ds.stimuli.indices("test")) < 3:
        raise HTTPException(409, f"dataset {ds.id!r} needs at least 2 training and 3 test stimuli for this comparison")
    return ds, _settings(request)


@router.post("/api/jobs/visual-encoders", summary="Train visual encoders (language, category, untrained) and compare them per region")
def visual_encoders_job(request: VisualEncodersRequest, s: Services = Depends(services)) -> dict:
    ds, settings = _checked(s, request)
    networks = tuple(dict.fromkeys(request.networks))

    def work(job: Job) -> dict:
        result = run_cancellable(job, lambda: stage.compare_visual_encoders(
            ds, networks, settings, store=s.store, pool=s.pool, report=job.report, cancel=cancel_flag(job)))
        return {"dataset": ds.id, "comparison_id": stage.comparison_key(ds, networks, settings),
                "training_seconds": {n: t.get("seconds") for n, t in result["training"].items()},
                "trained": {n: not t.get("cached") for n, t in result["training"].items()}}

    return s.jobs.submit("visual-encoders", request.model_dump(), work).as_dict()


@router.get("/api/visual-encoders/jobs/{job_id}", summary="A visual-encoders job's state, and its comparison once done")
def visual_encoders_job_status(job_id: JobId, s: Services = Depends(services)) -> dict:
    try:
        job = s.jobs.get(job_id)
    except KeyError as err:
        raise HTTPException(404, str(err.args[0])) from None
    record = job if isinstance(job, dict) else job.as_dict()
    if record.get("kind") != "visual-encoders":
        raise HTTPException(404, f"job {job_id} is a {record.get('kind')} job, not a visual-encoders job")
    comparison_id = (record.get("result") or {}).get("comparison_id")
    text = s.store.get_text(comparison_id) if comparison_id else None
    return {**record, "comparison": None if text is None else _loads(text)}


def _comparison(s: Services, comparison_id: str) -> dict:
    text = s.store.get_text(comparison_id)
    if text is None:
        raise HTTPException(404, f"no visual-encoder comparison {comparison_id[:12]}...; run a visual-encoders job first")
    result = _loads(text)
    if not isinstance(result, dict) or "feature_sets" not in result:
        raise HTTPException(404, f"{comparison_id[:12]}... is not a visual-encoder comparison")
    return result


def _loads(text: str):
    import json

    try:
        return json.loads(text)
    except ValueError:
        return None


@router.get("/api/visual-encoders/{comparison_id}", summary="A comparison's per-region table (encoding r and RSA per network)")
def comparison(comparison_id: ComparisonId, s: Services = Depends(services)) -> dict:
    return _comparison(s, comparison_id)


@router.get("/api/visual-encoders/{comparison_id}/difference-map", response_class=Response,
            summary="Per-unit encoding r (or fraction of ceiling) of the language-trained minus the category-trained network: float32 bytes")
def difference(
    comparison_id: ComparisonId,
    layer: Literal["penultimate", "embedding"] = "penultimate",
    part: Literal["r", "fraction_of_ceiling"] = "r",
    s: Services = Depends(services),
) -> Response:
    result = _comparison(s, comparison_id)
    ds = s.dataset(result["dataset"])
    try:
        values = np.asarray(stage.difference_map(ds, result, s.store, layer=layer, part=part), dtype="<f4")
    except LookupError as err:
        raise HTTPException(404, str(err.args[0])) from None
    return Response(values.tobytes(), media_type="application/octet-stream", headers=array_headers(values))


@router.get("/api/datasets/{dataset_id}/visual-encoders", summary="Comparisons run on a dataset (their ids and settings)")
def comparisons(dataset_id: DatasetId, limit: int = Query(20, ge=1, le=200), s: Services = Depends(services)) -> list[dict]:
    ds = s.dataset(dataset_id)
    out = []
    for run in reversed(s.store.runs(ds.id, stage.STAGE)):
        params = dict(run["params"])
        networks = tuple(params.pop("networks", ()))
        try:
            settings = stage.Settings(**params)
            key = stage.comparison_key(ds, networks, settings)
        except (TypeError, ValueError, KeyError):
            continue  # a run recorded by an older version
        if key in s.store:
            out.append({"comparison": key, "networks": list(networks), "settings": settings.to_dict()})
    return out[:limit]
