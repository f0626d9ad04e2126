"""The manifolds API: a job that lays the stimuli out on 2-D UMAP maps of the brain responses and of
the caption embeddings (aligned), and a quick read of the cached maps for the viewer.

The maps travel as base64 float32 inside JSON (see backend/service/wire.py): 5,000 stimuli are
about 110 kB. Categories travel as a list of names and one int16 code per stimulus (-1: none).
"""

from __future__ import annotations

import numpy as np

from fastapi import APIRouter, Depends, HTTPException
from pydantic import Field

from backend.models.registry import DEFAULTS
from backend.service.jobs import Job, JobCancelled
from backend.service.stages_api import cancel_flag, checked_model, run_cancellable, complete_captions
from backend.service.state import ApiRequest, DatasetField, DatasetId,  Services, services
from backend.service.wire import encode_array
from backend.stages.captions import REFERENCE
from backend.stages.encoding import unit_regions
from backend.stages.manifolds import cached_manifolds, region_units, stimulus_manifolds
from backend.service.errors import error_responses

router = APIRouter(responses=error_responses(400, 404, 409, 413, 503))


class ManifoldsRequest(ApiRequest):
    dataset: DatasetField
    source: str = Field(REFERENCE, description='"reference" or the captioner whose captions to embed')
    embedder: str = DEFAULTS["text_embedder"]
    region: str | None = Field(None, description="a ROI or area name; default: every unit with explainable variance")


def _region(ds, region: str | None) -> str | None:
    region = region or None
    try:
        region_units(ds, region)
    except ValueError as err:
        raise HTTPException(404, str(err)) from None
    return region


def _what(source: str, embedder: str, region: str | None) -> str:
    where = f"region {region}" if region else "all units with signal"
    return f"{source!r} captions embedded by {embedder}, {where}"


@router.post("/api/jobs/manifolds", summary="UMAP maps of the brain responses and of the caption embeddings, aligned")
def manifolds_job(request: ManifoldsRequest, s: Services = Depends(services)) -> dict:
    ds = s.dataset(request.dataset)
    checked_model(request.embedder, "text_embedder")
    complete_captions(s, ds, request.source)
    region = _region(ds, request.region)

    def work(job: Job) -> dict:
        result = run_cancellable(
            job,
            lambda: stimulus_manifolds(
                ds, request.source, request.embedder, region=region, store=s.store, pool=s.pool, report=job.report, cancel=cancel_flag(job)
            ),
        )
        if job.cancel_requested:
            raise JobCancelled()
        return {
            "dataset": ds.id,
            "stimuli": len(result["indices"]),
            "units": result["n_units"],
            "trust_brain": result["trustworthiness"]["brain"],
            "trust_text": result["trustworthiness"]["text"],
            "shared_neighbours": result["shared_neighbours"],
            "chance": result["chance"],
            "cached": result["cached"],
        }

    return s.jobs.submit("manifolds", request.model_dump(), work).as_dict()


@router.get("/api/datasets/{dataset_id}/manifolds", summary="The cached brain and text maps (run the manifolds job first)")
def manifolds(
    dataset_id: DatasetId,
    source: str = REFERENCE,
    embedder: str = DEFAULTS["text_embedder"],
    region: str | None = None,
    s: Services = Depends(services),
) -> dict:
    ds = s.dataset(dataset_id)
    region = _region(ds, region)
    try:
        result = cached_manifolds(ds, source, embedder, region=region, store=s.store)
    except LookupError as err:
        raise HTTPException(404, str(err.args[0])) from None
    if result is None:
        raise HTTPException(404, f"no manifolds of {_what(source, embedder, region)} yet; run a manifolds job first (POST /api/jobs/manifolds)")
    payload = {
        key: result[key]
        for key in ("dataset", "source", "embedder", "region", "n_units", "trustworthiness", "shared_neighbours", "chance", "params")
    }
    payload["indices"] = encode_array(np.asarray(result["indices"], np.int32))
    payload["brain"] = encode_array(result["brain"])
    payload["text"] = encode_array(result["text"])
    for key in ("categories", "groups"):
        payload[key] = None if result[key] is None else _coded(result[key])
    return payload


@router.get("/api/datasets/{dataset_id}/manifolds/regions", summary="Regions (ROIs or areas) a brain map can be drawn from")
def manifold_regions(dataset_id: DatasetId, s: Services = Depends(services)) -> list[dict]:
    ds = s.dataset(dataset_id)
    labels, names = unit_regions(ds)
    counts = np.bincount(np.asarray(labels, np.int64), minlength=len(names))
    return [{"name": str(name), "units": int(counts[code])} for code, name in enumerate(names) if code > 0 and counts[code] >= 2]


def _coded(labels: list[str | None]) -> dict:
    """{"names": [...], "codes": int16 base64 array (-1 where a stimulus has no label)}."""
    names = sorted({str(x) for x in labels if x is not None})
    index = {name: k for k, name in enumerate(names)}
    codes = np.array([index[str(x)] if x is not None else -1 for x in labels], np.int16)
    return {"names": names, "codes": encode_array(codes)}
