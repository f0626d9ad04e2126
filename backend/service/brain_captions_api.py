"""The brain-captions API: a job that trains the embedding-prefix decoder behind a frozen language
model and writes a caption from the brain for every test stimulus, and reads of its results
(the metric table beside retrieval, one stimulus's generated captions).

Requests are checked when submitted: an unknown or absent model, a model of the wrong kind or a
caption source that is not complete is a one-line 4xx at once, not a job that fails later.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import Field

from backend.models.brain_qformer import QFormerConfig
from backend.models.prefix_decoder import PrefixConfig
from backend.models.registry import DEFAULTS
from backend.service.errors import error_responses
from backend.service.jobs import Job
from backend.service.stages_api import cancel_flag, checked_model, complete_captions, run_cancellable
from backend.service.state import ApiRequest, DatasetField, DatasetId, SeedField, SeedQuery,  Services, services, stimulus_row
from backend.stages.brain_captions import CANDIDATES, DEFAULT_LM, brain_captions, brainhub_candidates, cached_brain_captions, quick_config
from backend.stages.brain_qformer import cached_qformer_captions, qformer_captions
from backend.stages.captions import REFERENCE
from backend.stages.decoding import cached_decoding

router = APIRouter(responses=error_responses(400, 404, 409, 503))

DEFAULT_STEPS = PrefixConfig().steps
DEFAULT_ALIGN_STEPS = PrefixConfig().align_steps
Inputs = Literal["captions", "captions+brain"]


class BrainCaptionsRequest(ApiRequest):
    dataset: DatasetField
    source: str = Field(REFERENCE, description='"reference" or the captioner whose captions to learn and decode')
    embedder: str = DEFAULTS["text_embedder"]
    language_model: str = DEFAULT_LM
    inputs: Inputs = Field("captions+brain", description="train the prefix decoder on caption embeddings alone, "
                           "or also on out-of-fold ridge predictions of the training stimuli")
    steps: int = Field(DEFAULT_STEPS, ge=1, le=20000, description="training steps through the LM (batches of 16 captions)")
    align_steps: int = Field(DEFAULT_ALIGN_STEPS, ge=0, le=100000,
                             description="alignment steps of the soft-token prefix before the LM steps (no LM pass)")
    num_beams: int = Field(1, ge=1, le=8)
    candidates: int = Field(CANDIDATES, ge=1, le=32, description="wordings the decoder proposes per caption; "
                            "it keeps the one whose embedding is closest to its input")
    max_new_tokens: int = Field(30, ge=1, le=100)
    seed: SeedField = 0


def _settings(request_or_query: dict) -> dict:
    return dict(language_model=request_or_query["language_model"], config=quick_config(request_or_query["steps"], request_or_query["align_steps"]),
                inputs=request_or_query["inputs"], max_new_tokens=request_or_query["max_new_tokens"],
                num_beams=request_or_query["num_beams"], candidates=request_or_query["candidates"], seed=request_or_query["seed"])


def _summary(result: dict) -> dict:
    """The result without its per-stimulus rows and loss curve (those have their own reads)."""
    training = {k: v for k, v in result["training"].items() if k != "loss"}
    return {**{k: v for k, v in result.items() if k not in ("stimuli", "training")}, "training": training}


@router.post("/api/jobs/brain-captions", summary="Train the prefix decoder and caption the test stimuli from the brain")
def brain_captions_job(request: BrainCaptionsRequest, s: Services = Depends(services)) -> dict:
    ds = s.dataset(request.dataset)
    checked_model(request.embedder, "text_embedder")
    checked_model(request.language_model, "language_model")
    complete_captions(s, ds, request.source)
    settings = _settings(request.model_dump())

    def work(job: Job) -> dict:
        result = run_cancellable(job, lambda: brain_captions(
            ds, request.source, request.embedder, store=s.store, pool=s.pool, report=job.report,
            cancel=cancel_flag(job), **settings))
        brain, ceiling = result["metrics"]["brain"], result["metrics"]["ceiling"]
        return {"dataset": ds.id, "language_model": request.language_model,
                "training_seconds": result["training"].get("seconds"), "trained": not result["training"].get("cached"),
                "similarity": round(brain["similarity"], 3), "cider": round(brain["cider"], 3),
                "ceiling_similarity": round(ceiling["similarity"], 3)}

    return s.jobs.submit("brain-captions", request.model_dump(), work).as_dict()


def _query(source: str = REFERENCE, embedder: str = DEFAULTS["text_embedder"], language_model: str = DEFAULT_LM,
           inputs: Inputs = "captions+brain", steps: int = Query(DEFAULT_STEPS, ge=1, le=20000),
           align_steps: int = Query(DEFAULT_ALIGN_STEPS, ge=0, le=100000),
           num_beams: int = Query(1, ge=1, le=8), candidates: int = Query(CANDIDATES, ge=1, le=32),
           max_new_tokens: int = Query(30, ge=1, le=100), seed: SeedQuery = 0) -> dict:
    # Called as a function (the switch read), not through a request, the defaults are Query objects.
    if not isinstance(align_steps, int):
        align_steps = DEFAULT_ALIGN_STEPS
    if not isinstance(candidates, int):
        candidates = CANDIDATES
    return dict(source=source, embedder=embedder, language_model=language_model, inputs=inputs, steps=steps,
                align_steps=align_steps, num_beams=num_beams, candidates=candidates, max_new_tokens=max_new_tokens, seed=seed)


def _cached(s: Services, dataset_id: str, q: dict) -> tuple:
    ds = s.dataset(dataset_id)
    try:
        result = cached_brain_captions(ds, q["source"], q["embedder"], s.store, **_settings(q))
    except LookupError as err:
        raise HTTPException(404, str(err.args[0])) from None
    if result is None:
        raise HTTPException(404, f"no brain captions of {q['source']!r} by {q['language_model']} with these settings yet; "
                                 f"run a brain-captions job first")
    return ds, result


@router.get("/api/datasets/{dataset_id}/brain-captions", summary="Scores of captions generated from the brain, beside retrieval")
def brain_captions_table(dataset_id: DatasetId, q: dict = Depends(_query), s: Services = Depends(services)) -> dict:
    """Metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, sentence similarity) of the generated captions,
    their ceiling, and retrieval from the same ridge when a decode job has run; plus training facts."""
    ds, result = _cached(s, dataset_id, q)
    out = _summary(result)
    retrieval = cached_decoding(ds, q["source"], q["embedder"], s.store)
    if retrieval is not None:
        from backend.stages.brain_captions import caption_scores

        rows = sorted(int(r) for r in result["stimuli"])
        texts = [retrieval["stimuli"][str(r)]["caption"] for r in rows]
        refs = [[ds.stimuli.captions[r] or ""] for r in rows]
        sims = [retrieval["stimuli"][str(r)]["similarity"] for r in rows]
        out["metrics"] = {"retrieval": {**caption_scores(texts, refs), "similarity": sum(sims) / len(sims)}, **out["metrics"]}
    return out


@router.get("/api/datasets/{dataset_id}/brain-captions/stimuli", summary="Per-stimulus rows: reference, retrieved, generated")
def brain_captions_rows(dataset_id: DatasetId, q: dict = Depends(_query), limit: int = Query(50, ge=1, le=1000),
                        s: Services = Depends(services)) -> list[dict]:
    ds, result = _cached(s, dataset_id, q)
    retrieval = cached_decoding(ds, q["source"], q["embedder"], s.store) or {"stimuli": {}}
    rows = sorted(int(r) for r in result["stimuli"])[:limit]
    return [{"index": r, "reference": ds.stimuli.captions[r], "retrieved": retrieval["stimuli"].get(str(r), {}).get("caption"),
             **result["stimuli"][str(r)]} for r in rows]


@router.get("/api/datasets/{dataset_id}/stimuli/{index}/brain-caption", summary="The caption generated from the brain for a test stimulus")
def brain_caption(dataset_id: DatasetId, index: int, q: dict = Depends(_query), s: Services = Depends(services)) -> dict:
    ds, result = _cached(s, dataset_id, q)
    i = stimulus_row(ds, index)
    entry = result["stimuli"].get(str(i))
    if entry is None:
        raise HTTPException(404, f"stimulus {i} is a training stimulus; captions are generated for test stimuli only")
    return {"index": i, "language_model": result["language_model"], **entry}


@router.get("/api/datasets/{dataset_id}/brain-captions/brainhub", summary="Generated captions in BrainHub's candidate JSON")
def brain_captions_brainhub(dataset_id: DatasetId, q: dict = Depends(_query),
                            which: Literal["generated", "ceiling"] = "generated", s: Services = Depends(services)) -> dict[str, str]:
    """{"0": caption, "1": ...}: one caption per test stimulus, keyed by its position in the test
    split, as BrainHub's eval_caption.py reads candidates (score NSD subject 1 against the leaderboard)."""
    ds, result = _cached(s, dataset_id, q)
    return brainhub_candidates(ds, result, which)


# ------------------------------------------------------------------------- the Brain Q-Former


class QFormerRequest(ApiRequest):
    dataset: DatasetField
    source: str = Field(REFERENCE, description='"reference" or the captioner whose captions to learn')
    embedder: str = Field(DEFAULTS["text_embedder"], description="caption embeddings: contrastive targets and scores")
    language_model: str = DEFAULT_LM
    steps: int = Field(QFormerConfig().steps, ge=1, le=20000, description="training steps (batches of 16 pairs)")
    pretrain_steps: int = Field(0, ge=0, le=20000, description="masked-unit pretraining steps of the brain encoder")
    num_beams: int = Field(1, ge=1, le=8)
    max_new_tokens: int = Field(30, ge=1, le=100)
    seed: SeedField = 0


def _qformer_settings(q: dict) -> dict:
    config = replace(QFormerConfig(), steps=int(q["steps"]), pretrain_steps=int(q["pretrain_steps"]), seed=int(q["seed"]))
    return dict(language_model=q["language_model"], config=config, max_new_tokens=q["max_new_tokens"],
                num_beams=q["num_beams"], seed=q["seed"])


@router.post("/api/jobs/brain-qformer", summary="Train the Brain Q-Former and caption the test stimuli from their responses")
def brain_qformer_job(request: QFormerRequest, s: Services = Depends(services)) -> dict:
    ds = s.dataset(request.dataset)
    checked_model(request.embedder, "text_embedder")
    checked_model(request.language_model, "language_model")
    complete_captions(s, ds, request.source)
    settings = _qformer_settings(request.model_dump())

    def work(job: Job) -> dict:
        result = run_cancellable(job, lambda: qformer_captions(
            ds, request.source, request.embedder, store=s.store, pool=s.pool, report=job.report,
            cancel=cancel_flag(job), **settings))
        m = result["metrics"]["qformer"]
        return {"dataset": ds.id, "language_model": request.language_model,
                "training_seconds": result["training"].get("seconds"), "trained": not result["training"].get("cached"),
                "similarity": round(m["similarity"], 3), "cider": round(m["cider"], 3),
                "two_way": round(m["identification"]["two_way"], 3)}

    return s.jobs.submit("brain-qformer", request.model_dump(), work).as_dict()


def _qformer_query(source: str = REFERENCE, embedder: str = DEFAULTS["text_embedder"], language_model: str = DEFAULT_LM,
                   steps: int = Query(QFormerConfig().steps, ge=1, le=20000), pretrain_steps: int = Query(0, ge=0, le=20000),
                   num_beams: int = Query(1, ge=1, le=8), max_new_tokens: int = Query(30, ge=1, le=100), seed: SeedQuery = 0) -> dict:
    return dict(source=source, embedder=embedder, language_model=language_model, steps=steps,
                pretrain_steps=pretrain_steps, num_beams=num_beams, max_new_tokens=max_new_tokens, seed=seed)


@router.get("/api/datasets/{dataset_id}/brain-qformer", summary="Captions of the Brain Q-Former: scores and per-stimulus rows")
def brain_qformer_table(dataset_id: DatasetId, q: dict = Depends(_qformer_query), s: Services = Depends(services)) -> dict:
    """Metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, sentence similarity, identification), training
    facts and {row: {generated, similarity}} of a finished Q-Former job with these settings."""
    ds = s.dataset(dataset_id)
    try:
        result = cached_qformer_captions(ds, q["source"], q["embedder"], s.store, **_qformer_settings(q))
    except LookupError as err:
        raise HTTPException(404, str(err.args[0])) from None
    if result is None:
        raise HTTPException(404, f"no Q-Former captions of {q['source']!r} by {q['language_model']} with these settings yet; "
                                 f"run a brain-qformer job first")
    return {**result, "training": {k: v for k, v in result["training"].items() if k != "loss"}}
