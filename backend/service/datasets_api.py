"""The dataset API: listing, pages of stimuli with caption search, one stimulus's image,
responses and captions, unit spaces, display meshes and planted truth."""

from __future__ import annotations

import functools
import io
import os

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import Response

import backend
from backend.data import catalog
from backend.data.folder import shown_path
from backend.data.schema import Dataset, DatasetError, NeuronSpace
from backend.data.surface import display_vertices, load_hemispheres
from backend.service.state import DatasetId, Services, services, stimulus_row
from backend.service.wire import array_headers, encode_array
from backend.service.errors import error_responses

router = APIRouter(responses=error_responses(404, 409, 503))
MAX_PAGE = 500
MAX_IMAGE_SIZE = 1024


@router.get("/api/health", summary="Liveness and demo-world preparation state")
def health(s: Services = Depends(services)) -> dict:
    return {"status": "ok", "version": backend.__version__, "pid": os.getpid(), "demo": s.demo.as_dict()}


@router.get("/api/datasets", summary="Every dataset the backend can open")
def datasets(s: Services = Depends(services)) -> list[dict]:
    return [info.to_dict() for info in catalog.list_datasets()]


@router.get("/api/datasets/{dataset_id}", summary="One dataset's description, splits and planted truth")
def dataset_detail(dataset_id: DatasetId, s: Services = Depends(services)) -> dict:
    ds = s.dataset(dataset_id)
    return {
        "id": ds.id,
        "name": ds.name,
        "description": ds.description,
        "simulated": ds.simulated,
        "space": ds.space.kind,
        "n_stimuli": ds.n_stimuli,
        "n_units": ds.n_units,
        "splits": {split: int(len(ds.stimuli.indices(split))) for split in ("train", "test")},
        "n_repeats": None if ds.trials is None else int(ds.trials.shape[0]),
        "has_noise_ceiling": ds.noise_ceiling is not None,
        "truth": ds.truth,
    }


@router.get("/api/datasets/{dataset_id}/stimuli", summary="A page of stimuli, optionally filtered by caption words")
def stimuli(
    dataset_id: DatasetId,
    q: str = Query("", max_length=200, description="words that must all appear in the caption or category"),
    split: str | None = Query(None, pattern="^(train|test)$"),
    offset: int = Query(0, ge=0),
    limit: int = Query(48, ge=1, le=MAX_PAGE),
    s: Services = Depends(services),
) -> dict:
    ds = s.dataset(dataset_id)
    matches = _search(ds, q, split)
    page = matches[offset : offset + limit]
    return {"total": len(matches), "offset": offset, "items": [_stimulus_item(ds, int(i)) for i in page]}


@router.get("/api/datasets/{dataset_id}/stimuli/{index}", summary="One stimulus's metadata")
def stimulus(dataset_id: DatasetId, index: int, s: Services = Depends(services)) -> dict:
    ds = s.dataset(dataset_id)
    return _stimulus_item(ds, stimulus_row(ds, index))


@router.get(
    "/api/datasets/{dataset_id}/stimuli/{index}/image",
    summary="The stimulus image as PNG",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def stimulus_image(dataset_id: DatasetId, index: int, size: int = Query(0, ge=0, le=MAX_IMAGE_SIZE), s: Services = Depends(services)) -> Response:
    ds = s.dataset(dataset_id)
    path = ds.stimuli.image_paths[stimulus_row(ds, index)]
    png = _image_png(str(path), size, shown_path(ds.root, path))
    return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})


@router.get(
    "/api/datasets/{dataset_id}/stimuli/{index}/responses",
    summary="The stimulus's response of every unit: float32 little-endian bytes",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def stimulus_responses(dataset_id: DatasetId, index: int, s: Services = Depends(services)) -> Response:
    ds = s.dataset(dataset_id)
    return _array_response(ds.responses[stimulus_row(ds, index)])


@router.get("/api/datasets/{dataset_id}/space", summary="The unit space: mesh and ROIs, or neurons and areas")
def unit_space(dataset_id: DatasetId, s: Services = Depends(services)) -> dict:
    space = s.dataset(dataset_id).space
    if isinstance(space, NeuronSpace):
        return {
            "kind": "neurons",
            "areas": list(space.areas),
            "cell_types": list(space.cell_types),
            "area_outlines": {k: v.tolist() for k, v in space.area_outlines.items()},
            "arrays": {
                name: encode_array(getattr(space, name)) for name in ("area", "x", "y", "depth", "cell_type")
            },
        }
    arrays = {
        "roi_labels": encode_array(space.roi_labels),
        # where each unit lies on the fsaverage5 display mesh (-1: not shown there)
        "display_vertices": encode_array(display_vertices(space.mesh, space.vertices)),
    }
    if space.vertices is not None:
        arrays["vertices"] = encode_array(space.vertices)
    return {"kind": "surface", "mesh": space.mesh, "roi_names": list(space.roi_names), "arrays": arrays}


@router.get("/api/surfaces/{mesh}", summary="A display mesh: both hemispheres' coordinates, faces and sulcal depth")
def surface(mesh: str, kind: str = Query("inflated", pattern="^(inflated|pial|white_matter|sphere|flat)$"), s: Services = Depends(services)) -> dict:
    return _surface_payload(mesh, kind)


@router.get("/api/datasets/{dataset_id}/truth", summary="The planted ground-truth maps (simulated datasets)")
def truth(dataset_id: DatasetId, s: Services = Depends(services)) -> dict:
    return {"maps": s.dataset(dataset_id).truth}


@router.get(
    "/api/datasets/{dataset_id}/truth/{name}",
    summary="One planted map over units: float32 little-endian bytes",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def truth_map(dataset_id: DatasetId, name: str, s: Services = Depends(services)) -> Response:
    ds = s.dataset(dataset_id)
    try:
        return _array_response(ds.truth_map(name))
    except KeyError as err:
        raise HTTPException(404, str(err.args[0])) from None


@router.get("/api/datasets/{dataset_id}/noise-ceiling", response_class=Response, summary="Per-unit noise ceiling, percent: float32 bytes")
def noise_ceiling(dataset_id: DatasetId, s: Services = Depends(services)) -> Response:
    ds = s.dataset(dataset_id)
    if ds.noise_ceiling is None:
        raise HTTPException(404, f"dataset {ds.id!r} has no noise ceiling")
    return _array_response(ds.noise_ceiling)


def _array_response(values: np.ndarray) -> Response:
    """One per-unit vector as little-endian float32 bytes, dtype and shape in headers."""
    values = np.asarray(values, dtype="<f4")
    return Response(values.tobytes(), media_type="application/octet-stream", headers=array_headers(values))


def _stimulus_item(ds: Dataset, i: int) -> dict:
    return {
        "index": i,
        "id": ds.stimuli.ids[i],
        "caption": ds.stimuli.captions[i],
        "category": ds.stimuli.categories[i],
        "split": ds.stimuli.splits[i],
    }


def _search(ds: Dataset, query: str, split: str | None) -> np.ndarray:
    words = query.lower().split()
    keep = np.ones(ds.n_stimuli, bool)
    if split:
        keep &= np.asarray(ds.stimuli.splits) == split
    if words:
        haystack = _search_texts(ds)
        keep &= np.array([all(w in text for w in words) for text in haystack])
    return np.flatnonzero(keep)


@functools.lru_cache(maxsize=16)
def _search_texts_cached(key: tuple) -> tuple[str, ...]:
    captions, categories = key
    return tuple(f"{c or ''} {k or ''}".lower() for c, k in zip(captions, categories, strict=True))


def _search_texts(ds: Dataset) -> tuple[str, ...]:
    return _search_texts_cached((ds.stimuli.captions, ds.stimuli.categories))


@functools.lru_cache(maxsize=512)
def _image_png(path: str, size: int, shown: str) -> bytes:
    """PNG bytes of the image at ``path``; errors name it as ``shown`` (relative to its dataset)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            scale = size / max(image.size) if size else 1.0
            if scale != 1.0:
                target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
                image = image.resize(target, Image.Resampling.LANCZOS)
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            return buffer.getvalue()
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as err:
        raise DatasetError(f"{shown}: not a readable image ({type(err).__name__})") from None


@functools.lru_cache(maxsize=4)
def _surface_payload(mesh: str, kind: str) -> dict:
    try:
        hemispheres = load_hemispheres(mesh, kind)
    except ValueError as err:
        raise HTTPException(404, str(err)) from None
    return {
        "mesh": mesh,
        "kind": kind,
        "hemispheres": {
            hemi: {"coords": encode_array(h.coords), "faces": encode_array(h.faces), "sulc": encode_array(h.sulc)}
            for hemi, h in hemispheres.items()
        },
    }
