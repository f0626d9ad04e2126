"""One request per stimulus switch: everything the explorer shows for a newly selected stimulus.

The route calls the functions that serve the separate reads (metadata, image, responses,
captions and their labels, the caption decoded from the brain, the caption generated from the
brain, the reconstructions listing and its images), so the switch and those reads cannot drift
apart: only the packing differs. Responses travel as float16 (half the bytes of the float32 read;
display precision), images as base64 PNG.
"""

from __future__ import annotations

import base64

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query

from backend.models.registry import DEFAULTS
from backend.models.weights import ModelUnavailable
from backend.service import brain_captions_api, datasets_api, stages_api
from backend.service.errors import error_responses
from backend.service.state import DatasetId, SeedQuery, Services, services, stimulus_row
from backend.service.wire import encode_array

router = APIRouter(responses=error_responses(404, 409, 503))
DEFAULT_IMAGE_SIZE = 320


def _optional(read):
    """``read()``, or None where the separate endpoint answers 404/409 (nothing computed yet,
    a training stimulus, weights removed since the run)."""
    try:
        return read()
    except HTTPException as err:
        if err.status_code in (404, 409):
            return None
        raise
    except (LookupError, ModelUnavailable):
        return None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@router.get("/api/datasets/{dataset_id}/stimuli/{index}/switch", summary="Everything a stimulus switch shows, in one answer")
def stimulus_switch(
    dataset_id: DatasetId,
    index: int,
    size: int = Query(DEFAULT_IMAGE_SIZE, ge=0, le=datasets_api.MAX_IMAGE_SIZE, description="longer side of the stimulus image, px (0: as stored)"),
    model: str | None = Query(None, description="text-to-image model whose reconstructions to list (none: no reconstructions)"),
    seed: SeedQuery = 0,
    embedder: str = Query(DEFAULTS["text_embedder"], description="text embedder of the brain decoding to show"),
    decoded_corpus: str | None = Query(None, pattern="^[0-9a-f]{64}$", description="user corpus id of that decoding"),
    images: bool = Query(True, description="include the PNGs of the reconstructions that exist"),
    s: Services = Depends(services),
) -> dict:
    """{stimulus: {index, id, caption, category, split}, image: base64 PNG, responses: float16
    array [n_units] (wire format), captions: {source: text | None}, captioners: [{id, label,
    simulated}], decoded: {caption, similarity, corpus, ...} | None, generated: {generated,
    similarity, language_model, ...} | None, reconstructions: [{source, caption, key, present,
    image: base64 PNG | None}]}."""
    ds = s.dataset(dataset_id)
    i = stimulus_row(ds, index)
    if model:
        stages_api.checked_model(model, "text_to_image")  # a wrong model is the request's fault: 404/409 at once
    png = datasets_api.stimulus_image(dataset_id, i, size=size, s=s).body
    responses = np.asarray(ds.responses[i], np.float32).astype(np.float16)
    decoded = _optional(lambda: stages_api.decoded_caption(dataset_id, i, source=stages_api.REFERENCE, embedder=embedder,
                                                           corpus=decoded_corpus, s=s))
    query = brain_captions_api._query(embedder=embedder, steps=brain_captions_api.DEFAULT_STEPS, num_beams=1, max_new_tokens=30)
    generated = _optional(lambda: brain_captions_api.brain_caption(dataset_id, i, q=query, s=s))
    recon = []
    if model:
        listing = stages_api.reconstructions(dataset_id, i, model=model, seed=seed, decoded_embedder=embedder,
                                             decoded_corpus=decoded_corpus, s=s)
        for entry in listing:
            image = None
            if images and entry["present"]:
                image = _b64(stages_api.output_image(entry["key"], s=s).body)
            recon.append({**entry, "image": image})
    return {
        "stimulus": datasets_api.stimulus(dataset_id, i, s=s),
        "image": _b64(png),
        "responses": encode_array(responses),
        "captions": stages_api.stimulus_captions(dataset_id, i, s=s)["captions"],
        "captioners": stages_api.captioners(dataset_id, s=s),
        "decoded": decoded,
        "generated": generated,
        "reconstructions": recon,
    }
