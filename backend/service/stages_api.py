"""The stages API: jobs that caption, embed and generate (with progress and cancel), and their
cached outputs (captions of a stimulus, images reconstructed from its captions).

Requests are checked when submitted, so an unknown model, a missing download or a wrong model
kind is a one-line 4xx at once rather than a job that fails later.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.responses import Response
from pydantic import Field

from backend.data.schema import Dataset
from backend.models.device import Cancelled
from backend.models.registry import DEFAULTS, get_model
from backend.models.weights import ModelUnavailable, require_weights
from backend.service.jobs import Job, JobCancelled
from backend.service.state import ApiRequest, DatasetField, DatasetId, SeedField, SeedQuery,  Services, services, stimulus_row
from backend.stages import captions as caption_stage
from backend.stages.captions import REFERENCE, caption_sources
from backend.stages.captions import source_captions as _source_captions
from backend.stages.embeddings import embed_images_cached, embed_texts_cached
from backend.stages.comparison import compare_captioners, default_image_embedder
from backend.stages.controls import CONTROLS, cached_control_r, compare_controls, dataset_lexicon
from backend.stages.decoding import MAX_CORPUS, MAX_CORPUS_CAPTION, cached_decoding, check_corpus, decode_captions
from backend.stages.encoding import cached_encoding, fit_encoding, region_summary, unit_regions
from backend.stages.images import generate_cached, image_keys
from backend.stages.rsa import MAX_SHOWN as MAX_RDM_STIMULI
from backend.stages.rsa import rdm_pair, rsa_table
from backend.service.wire import array_headers
from backend.service.errors import error_responses, invalid

router = APIRouter(responses=error_responses(400, 404, 409, 413, 503))
MAX_GENERATE = 2000
#: The source name of a reconstruction from the caption decoded from the brain (reference captions).
DECODED = "decoded from the brain"
#: ... and from the caption generated from the brain (prefix decoder, default settings).
GENERATED = "generated from the brain"


class CaptionRequest(ApiRequest):
    dataset: DatasetField
    model: str
    params: dict = Field(default_factory=dict, description="generation parameters, e.g. max_new_tokens")


class EmbedCaptionsRequest(ApiRequest):
    dataset: DatasetField
    model: str = DEFAULTS["text_embedder"]
    source: str = Field(REFERENCE, description='"reference" or the id of a captioner whose captions to embed')


class EmbedImagesRequest(ApiRequest):
    dataset: DatasetField
    model: str


class EncodeRequest(ApiRequest):
    dataset: DatasetField
    source: str = Field(REFERENCE, description='"reference" or the captioner whose captions to embed')
    embedder: str = DEFAULTS["text_embedder"]


class DecodeRequest(EncodeRequest):
    corpus: list[Annotated[str, Field(pattern=r"\S", max_length=MAX_CORPUS_CAPTION)]] | None = Field(
        None, min_length=2, max_length=MAX_CORPUS, description="captions to retrieve from; default: the source's training captions"
    )


class GenerateRequest(ApiRequest):
    dataset: DatasetField
    model: str
    sources: list[str] = Field(default_factory=lambda: [REFERENCE], description="caption sources to draw from")
    stimuli: list[int] | None = Field(None, description="stimulus rows; default: the test split")
    seed: SeedField = 0
    with_decoded: bool = Field(False, description="also the captions decoded from the brain, where a decoding exists")
    decoded_embedder: str = Field(DEFAULTS["text_embedder"], description="the text embedder of that decoding")
    decoded_corpus: str | None = Field(None, description="the id of the user corpus of that decoding; default: training captions")


# ------------------------------------------------------------------------------------ helpers


def checked_model(model_id: str, kind: str):
    """The model's spec if it is of ``kind`` and its weights are here, else a one-line 4xx."""
    spec = get_model(model_id)
    if spec.kind != kind:
        raise HTTPException(404, f"{model_id} is a {spec.kind.replace('_', ' ')}, not a {kind.replace('_', ' ')}")
    require_weights(spec)  # ModelUnavailable -> 409 with the pull command
    return spec


def source_captions(s: Services, ds: Dataset, source: str) -> list[str | None]:
    try:
        return _source_captions(ds, source, s.store)
    except LookupError as err:
        raise HTTPException(404, str(err.args[0])) from None


def complete_captions(s: Services, ds: Dataset, source: str) -> list[str]:
    """The source's captions, or a 409 if some stimulus has none yet."""
    texts = source_captions(s, ds, source)
    missing = sum(t is None for t in texts)
    if missing:
        raise HTTPException(409, f"{source!r} has no caption yet for {missing} stimuli; finish its caption job first")
    return texts


def complete_sources(s: Services, ds: Dataset, requested: list[str] | None) -> list[str]:
    """The requested caption sources (each must be complete), or every complete one."""
    if requested:
        for source in requested:
            complete_captions(s, ds, source)
        return requested
    return [source for source in caption_sources(ds, s.store) if all(t is not None for t in source_captions(s, ds, source))]


def decoded_captions(s: Services, ds: Dataset, embedder: str, source: str = REFERENCE, corpus: str | None = None) -> dict[int, str]:
    """Test row -> the caption decoded from the brain, for a decoding that has run (else empty)."""
    try:
        result = cached_decoding(ds, source, embedder, s.store, corpus=corpus)
    except LookupError:  # the source is not complete: nothing can have been decoded from it
        return {}
    return {} if result is None else {int(row): entry["caption"] for row, entry in result["stimuli"].items()}


def source_dataset(s: Services, request: EncodeRequest) -> Dataset:
    """The dataset of a request about one caption source and text embedder, both checked: an
    unknown or absent embedder, or a source with missing captions, is a one-line 4xx now."""
    ds = s.dataset(request.dataset)
    checked_model(request.embedder, "text_embedder")
    complete_captions(s, ds, request.source)
    return ds


def run_cancellable(job: Job, work) -> dict:
    """``work()`` inside a job: a stage's Cancelled becomes the queue's JobCancelled."""
    try:
        return work()
    except Cancelled:
        raise JobCancelled() from None


def cancel_flag(job: Job):
    """The ``cancel`` callable the stages poll between batches."""
    return lambda: job.cancel_requested


# --------------------------------------------------------------------------------------- jobs


@router.post("/api/jobs/caption", summary="Caption every stimulus of a dataset with a captioner")
def caption_job(request: CaptionRequest, s: Services = Depends(services)) -> dict:
    ds = s.dataset(request.dataset)
    spec = checked_model(request.model, "captioner")
    try:
        caption_stage.caption_params(spec, request.params)  # unknown parameter names fail now
    except ValueError as err:
        raise invalid("params", str(err)) from None

    def work(job: Job) -> dict:
        texts = run_cancellable(
            job,
            lambda: caption_stage.caption_dataset(
                ds, spec.id, store=s.store, pool=s.pool, params=request.params, report=job.report, cancel=cancel_flag(job)
            ),
        )
        if job.cancel_requested:
            raise JobCancelled()
        return {"dataset": ds.id, "model": spec.id, "captioned": sum(t is not None for t in texts)}

    return s.jobs.submit("caption", request.model_dump(), work).as_dict()


@router.post("/api/jobs/embed-captions", summary="Embed a caption source of a dataset with a text embedder")
def embed_captions_job(request: EmbedCaptionsRequest, s: Services = Depends(services)) -> dict:
    ds = s.dataset(request.dataset)
    spec = checked_model(request.model, "text_embedder")
    texts = complete_captions(s, ds, request.source)

    def work(job: Job) -> dict:
        vectors = run_cancellable(job, lambda: embed_texts_cached(texts, spec.id, store=s.store, pool=s.pool, report=job.report, cancel=cancel_flag(job)))
        s.store.record_run(ds.id, "embed-text", spec.id, {"source": request.source}, len(texts), len(texts))
        return {"dataset": ds.id, "model": spec.id, "source": request.source, "n": int(vectors.shape[0]), "dim": int(vectors.shape[1])}

    return s.jobs.submit("embed-captions", request.model_dump(), work).as_dict()


@router.post("/api/jobs/embed-images", summary="Embed every stimulus image with an image embedder")
def embed_images_job(request: EmbedImagesRequest, s: Services = Depends(services)) -> dict:
    ds = s.dataset(request.dataset)
    spec = checked_model(request.model, "image_embedder")

    def work(job: Job) -> dict:
        vectors = run_cancellable(job, lambda: embed_images_cached(ds, spec.id, store=s.store, pool=s.pool, report=job.report, cancel=cancel_flag(job)))
        return {"dataset": ds.id, "model": spec.id, "n": int(vectors.shape[0]), "dim": int(vectors.shape[1])}

    return s.jobs.submit("embed-images", request.model_dump(), work).as_dict()


@router.post("/api/jobs/generate-images", summary="Generate images from stimuli's captions with a text-to-image model")
def generate_job(request: GenerateRequest, s: Services = Depends(services)) -> dict:
    ds = s.dataset(request.dataset)
    spec = checked_model(request.model, "text_to_image")
    rows = request.stimuli if request.stimuli is not None else [int(i) for i in ds.stimuli.indices("test")]
    for i in rows:
        stimulus_row(ds, i)
    prompts = []
    for source in request.sources:
        texts = source_captions(s, ds, source)
        prompts += [texts[i] for i in rows if texts[i]]
    if request.with_decoded:
        decoded = decoded_captions(s, ds, request.decoded_embedder, corpus=request.decoded_corpus)
        prompts += [decoded[i] for i in rows if i in decoded]
    if not prompts:
        raise HTTPException(409, "no captions to generate from: caption the stimuli first")
    if len(prompts) > MAX_GENERATE:
        raise invalid("stimuli", f"{len(prompts)} images requested; at most {MAX_GENERATE} per job")

    def work(job: Job) -> dict:
        keys = run_cancellable(
            job,
            lambda: generate_cached(prompts, spec.id, store=s.store, pool=s.pool, seed=request.seed, report=job.report, cancel=cancel_flag(job)),
        )
        return {"dataset": ds.id, "model": spec.id, "images": len(set(keys))}

    return s.jobs.submit("generate-images", request.model_dump(), work).as_dict()


@router.post("/api/jobs/encode", summary="Fit the encoding model from a caption source's embeddings to every unit")
def encode_job(request: EncodeRequest, s: Services = Depends(services)) -> dict:
    ds = source_dataset(s, request)

    def work(job: Job) -> dict:
        result = run_cancellable(
            job,
            lambda: fit_encoding(ds, request.source, request.embedder, store=s.store, pool=s.pool, report=job.report, cancel=cancel_flag(job)),
        )
        labels, names = unit_regions(ds)
        by_region = {name: round(value, 3) for name, value in region_summary(result.r, labels, names).items()}
        return {"dataset": ds.id, "mean_r": round(float(result.r.mean()), 3), "r_by_region": by_region}

    return s.jobs.submit("encode", request.model_dump(), work).as_dict()


@router.post("/api/jobs/decode", summary="Decode a caption from the brain for every test stimulus")
def decode_job(request: DecodeRequest, s: Services = Depends(services)) -> dict:
    ds = source_dataset(s, request)
    try:
        corpus = check_corpus(request.corpus) if request.corpus is not None else None
    except ValueError as err:
        raise invalid("corpus", str(err)) from None

    def work(job: Job) -> dict:
        result = run_cancellable(
            job,
            lambda: decode_captions(
                ds, request.source, request.embedder, store=s.store, pool=s.pool, corpus=corpus, report=job.report, cancel=cancel_flag(job)
            ),
        )
        about = result.get("corpus") or {}
        return {
            "dataset": ds.id,
            **{k: round(v, 3) for k, v in result["identification"].items()},
            "corpus": about.get("kind", "training captions"),
            "corpus_size": about.get("n"),
            "corpus_id": about.get("id"),
        }

    return s.jobs.submit("decode", request.model_dump(), work).as_dict()


@router.get("/api/datasets/{dataset_id}/stimuli/{index}/decoded", summary="The caption decoded from the brain for a test stimulus")
def decoded_caption(
    dataset_id: DatasetId,
    index: int,
    source: str = REFERENCE,
    embedder: str = DEFAULTS["text_embedder"],
    corpus: str | None = Query(None, pattern="^[0-9a-f]{64}$", description="a user corpus's id (from its decode job)"),
    s: Services = Depends(services),
) -> dict:
    ds = s.dataset(dataset_id)
    i = stimulus_row(ds, index)
    try:
        result = cached_decoding(ds, source, embedder, s.store, corpus=corpus)
    except LookupError as err:
        raise HTTPException(404, str(err.args[0])) from None
    if result is None:
        within = "" if corpus is None else f" from corpus {corpus[:12]}..."
        raise HTTPException(404, f"no brain decoding of {source!r} captions by {embedder}{within} yet; run a decode job first")
    entry = result["stimuli"].get(str(i))
    if entry is None:
        raise HTTPException(404, f"stimulus {i} is a training stimulus; captions are decoded for test stimuli only")
    return {"index": i, "source": source, "embedder": embedder, "corpus": result.get("corpus", {}).get("kind"), **entry}


@router.get("/api/datasets/{dataset_id}/encoding", summary="A fitted encoding model's per-unit map: float32 bytes", response_class=Response)
def encoding_map(
    dataset_id: DatasetId,
    source: str = REFERENCE,
    embedder: str = DEFAULTS["text_embedder"],
    part: str = Query("r", pattern="^(r|fraction_of_ceiling|alpha|cv_score|intercept)$"),
    s: Services = Depends(services),
) -> Response:
    ds = s.dataset(dataset_id)
    try:
        result = cached_encoding(ds, source, embedder, store=s.store)
    except LookupError as err:
        raise HTTPException(404, str(err.args[0])) from None
    if result is None:
        raise HTTPException(404, f"no encoding model of {source!r} captions embedded by {embedder} yet; fit one first")
    values = np.asarray(getattr(result, part), dtype="<f4")
    return Response(values.tobytes(), media_type="application/octet-stream", headers=array_headers(values))


class CompareRequest(ApiRequest):
    dataset: DatasetField
    embedder: str = DEFAULTS["text_embedder"]
    text_to_image: str = "sim-scene-renderer"
    sources: list[str] | None = Field(None, description="caption sources; default: every complete one")
    image_embedder: str | None = Field(
        None, description="image embedder of the embedding 2-way score; default: a CLIP whose weights are here, "
        "else the demo world's scene reader on simulated datasets, else none"
    )


@router.post("/api/jobs/compare-captioners", summary="Encoding accuracy against reconstruction quality, per captioner")
def compare_job(request: CompareRequest, s: Services = Depends(services)) -> dict:
    ds = s.dataset(request.dataset)
    checked_model(request.embedder, "text_embedder")
    checked_model(request.text_to_image, "text_to_image")
    image_embedder = request.image_embedder or default_image_embedder(ds)
    if image_embedder is not None:
        checked_model(image_embedder, "image_embedder")
    sources = complete_sources(s, ds, request.sources)

    def work(job: Job) -> dict:
        rows = run_cancellable(
            job,
            lambda: compare_captioners(
                ds, sources, request.embedder, request.text_to_image, store=s.store, pool=s.pool,
                image_embedder=image_embedder, report=job.report, cancel=cancel_flag(job),
            ),
        )
        if job.cancel_requested:
            raise JobCancelled()
        return {"dataset": ds.id, "rows": rows}

    return s.jobs.submit("compare-captioners", request.model_dump(), work).as_dict()


class RsaRequest(ApiRequest):
    dataset: DatasetField
    embedder: str = DEFAULTS["text_embedder"]
    sources: list[str] | None = Field(None, description="caption sources; default: every complete one")


@router.post("/api/jobs/rsa", summary="RDM correlation of each brain region with each caption source's embeddings")
def rsa_job(request: RsaRequest, s: Services = Depends(services)) -> dict:
    ds = s.dataset(request.dataset)
    checked_model(request.embedder, "text_embedder")
    sources = complete_sources(s, ds, request.sources)

    def work(job: Job) -> dict:
        rows = run_cancellable(job, lambda: rsa_table(ds, sources, request.embedder, store=s.store, pool=s.pool, report=job.report))
        return {"dataset": ds.id, "rows": rows}

    return s.jobs.submit("rsa", request.model_dump(), work).as_dict()


@router.post("/api/jobs/controls", summary="Full captions against word-level controls (word average, nouns, verbs)")
def controls_job(request: EncodeRequest, s: Services = Depends(services)) -> dict:
    ds = source_dataset(s, request)

    def work(job: Job) -> dict:
        summary = run_cancellable(
            job,
            lambda: compare_controls(
                ds, request.source, request.embedder, store=s.store, pool=s.pool, lexicon=dataset_lexicon(ds), report=job.report
            ),
        )
        return {"dataset": ds.id, "source": request.source, "controls": summary}

    return s.jobs.submit("controls", request.model_dump(), work).as_dict()


@router.get(
    "/api/datasets/{dataset_id}/controls/difference",
    summary="Per-unit r of the full caption minus r of a control: float32 bytes",
    response_class=Response,
)
def control_difference(
    dataset_id: DatasetId,
    control: str = Query(..., pattern="^(" + "|".join(CONTROLS) + ")$"),
    source: str = REFERENCE,
    embedder: str = DEFAULTS["text_embedder"],
    s: Services = Depends(services),
) -> Response:
    ds = s.dataset(dataset_id)
    try:
        full = cached_encoding(ds, source, embedder, store=s.store)
        other = cached_control_r(ds, source, embedder, control, s.store, lexicon=dataset_lexicon(ds))
    except LookupError as err:
        raise HTTPException(404, str(err.args[0])) from None
    if full is None or other is None:
        raise HTTPException(404, f"no {control} control of {source!r} captions by {embedder} yet; run a controls job first")
    values = np.asarray(full.r - other, dtype="<f4")
    return Response(values.tobytes(), media_type="application/octet-stream", headers=array_headers(values))


@router.get("/api/datasets/{dataset_id}/rdms", summary="The RDMs of a region and of a caption source's embeddings, to display")
def rdms(
    dataset_id: DatasetId,
    region: str,
    source: str = REFERENCE,
    embedder: str = DEFAULTS["text_embedder"],
    n: int = Query(100, ge=3, le=MAX_RDM_STIMULI),
    s: Services = Depends(services),
) -> dict:
    ds = s.dataset(dataset_id)
    checked_model(embedder, "text_embedder")
    try:
        pair = rdm_pair(ds, region, source, embedder, store=s.store, pool=s.pool, n=n)
    except LookupError as err:
        raise HTTPException(404, str(err.args[0])) from None
    return {
        "region": region,
        "source": source,
        "stimuli": [int(i) for i in pair["stimuli"]],
        "brain": np.round(pair["brain"], 4).tolist(),
        "model": np.round(pair["model"], 4).tolist(),
        "spearman": round(pair["spearman"], 4),
    }


class TextToBrainRequest(ApiRequest):
    text: str = Field(..., min_length=1, max_length=1000)
    source: str = REFERENCE
    embedder: str = DEFAULTS["text_embedder"]


@router.post(
    "/api/datasets/{dataset_id}/text-to-brain",
    summary="The response a fitted encoding model predicts for a sentence: float32 bytes per unit",
    response_class=Response,
)
def text_to_brain(dataset_id: DatasetId, request: TextToBrainRequest, s: Services = Depends(services)) -> Response:
    ds = s.dataset(dataset_id)
    checked_model(request.embedder, "text_embedder")
    try:
        result = cached_encoding(ds, request.source, request.embedder, store=s.store)
    except LookupError as err:
        raise HTTPException(404, str(err.args[0])) from None
    if result is None:
        raise HTTPException(404, f"no encoding model of {request.source!r} captions by {request.embedder} yet; fit one first")
    embedding = embed_texts_cached([request.text], request.embedder, store=s.store, pool=s.pool)
    values = np.asarray(result.predict(embedding)[0], dtype="<f4")
    return Response(values.tobytes(), media_type="application/octet-stream", headers=array_headers(values))


@router.get("/api/jobs", summary="Recent jobs, newest first")
def jobs(s: Services = Depends(services)) -> list[dict]:
    return [job.as_dict() for job in s.jobs.list()]


@router.get("/api/jobs/{job_id}", summary="One job's state and progress")
def job(job_id: str, s: Services = Depends(services)) -> dict:
    try:
        return s.jobs.get(job_id).as_dict()
    except KeyError as err:
        raise HTTPException(404, str(err.args[0])) from None


@router.post("/api/jobs/{job_id}/cancel", summary="Stop a job (at its next batch)")
def cancel(job_id: str, s: Services = Depends(services)) -> dict:
    try:
        return s.jobs.cancel(job_id).as_dict()
    except KeyError as err:
        raise HTTPException(404, str(err.args[0])) from None


# ------------------------------------------------------------------------------------ outputs


@router.get("/api/datasets/{dataset_id}/stimuli/{index}/captions", summary="Every caption of the stimulus")
def stimulus_captions(dataset_id: DatasetId, index: int, s: Services = Depends(services)) -> dict:
    ds = s.dataset(dataset_id)
    i = stimulus_row(ds, index)
    captions = {}
    for source in caption_sources(ds, s.store):
        try:
            captions[source] = source_captions(s, ds, source)[i]
        except ModelUnavailable:  # weights removed since the run: its cache keys cannot be made
            continue
    return {"index": i, "id": ds.stimuli.ids[i], "captions": captions}


@router.get("/api/datasets/{dataset_id}/captioners", summary="Caption sources of a dataset with labels")
def captioners(dataset_id: DatasetId, s: Services = Depends(services)) -> list[dict]:
    ds = s.dataset(dataset_id)
    out = []
    for source in caption_sources(ds, s.store):
        if source == REFERENCE:
            out.append({"id": REFERENCE, "label": "Reference caption", "simulated": False})
            continue
        try:
            spec = get_model(source)
            out.append({"id": source, "label": spec.label, "simulated": spec.simulated})
        except KeyError:
            out.append({"id": source, "label": source, "simulated": ds.simulated})
    return out


def _generated_caption(s: Services, ds, row: int, embedder: str) -> str | None:
    """The caption generated from the brain for a test row by a finished brain-captions job with
    the default settings (reference captions), else None."""
    from backend.stages.brain_captions import cached_brain_captions

    try:
        result = cached_brain_captions(ds, REFERENCE, embedder, s.store)
    except LookupError:
        return None
    entry = (result or {}).get("stimuli", {}).get(str(row))
    return entry["generated"] if entry else None


@router.get("/api/datasets/{dataset_id}/stimuli/{index}/reconstructions", summary="Images generated from the stimulus's captions")
def reconstructions(
    dataset_id: DatasetId,
    index: int,
    model: str = Query(..., description="text-to-image model id"),
    seed: SeedQuery = 0,
    decoded_embedder: str = Query(DEFAULTS["text_embedder"], description="text embedder of the brain decoding to include"),
    decoded_corpus: str | None = Query(None, pattern="^[0-9a-f]{64}$", description="user corpus id of that decoding"),
    s: Services = Depends(services),
) -> list[dict]:
    ds = s.dataset(dataset_id)
    i = stimulus_row(ds, index)
    spec = checked_model(model, "text_to_image")
    texts = [(source, source_captions(s, ds, source)[i]) for source in caption_sources(ds, s.store)]
    decoded = decoded_captions(s, ds, decoded_embedder, corpus=decoded_corpus).get(i)
    if decoded:
        texts.append((DECODED, decoded))
    generated = _generated_caption(s, ds, i, decoded_embedder)
    if generated:
        texts.append((GENERATED, generated))
    out = []
    for source, text in texts:
        if not text:
            continue
        key = image_keys([text], spec.id, seed=seed)[0]
        out.append({"source": source, "caption": text, "key": key, "present": key in s.store})
    return out


@router.get("/api/outputs/images/{key}", summary="A generated image (PNG) by its store key", response_class=Response)
def output_image(
    key: Annotated[str, Path(pattern="^[0-9a-f]{64}$", description="the image's store key (from /reconstructions)")],
    s: Services = Depends(services),
) -> Response:
    entry = s.store.get(key)
    if entry is None or entry[0] != "png":
        raise HTTPException(404, f"no generated image {key[:12]}...")
    return Response(entry[1], media_type="image/png", headers={"Cache-Control": "max-age=86400"})
