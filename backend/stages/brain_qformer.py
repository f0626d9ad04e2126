"""Stage: captions generated from the brain by the Brain Q-Former (MindSemantix) and a frozen LM.

    responses --brain tokens, query tokens (backend/models/brain_qformer.py)--> soft prefix
              --frozen LM--> caption

Trained on the dataset's (response, caption) training pairs: with the default soft-token prefix,
an alignment phase without the LM (the query slots learn the caption's words, the pooled queries its
embedding) and then a few steps through the frozen LM; the contrastive targets are the captions'
embeddings by ``embedder``. The job's progress names the phase ("aligning step ...", then
"training step ..." for the LM steps). Brain tokens: on a surface, the units of each region
(``roi_labels``) in patches of at most ``config.patch`` vertices; for neurons, each area (in
patches likewise). The trained model is stored by dataset, captions, embedder, LM fingerprint
and configuration; each caption by model and stimulus; the whole result by all of those and the
generation settings, so a second request trains and writes nothing.

Scores for the test split: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D (backend/analysis/caption_metrics.py
through :func:`backend.stages.brain_captions.caption_scores`), sentence similarity in the embedder's
space, and identification (2-way, top-1) of the test stimuli through the embeddings of the
generated captions against the reference captions' embeddings.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np

from backend.analysis.decoding import identification
from backend.cache import Store, entry_key
from backend.data.schema import Dataset
from backend.models.brain_qformer import (
    VERSION, QFormerConfig, brain_groups, generate_qformer_captions, qformer_from_bytes, qformer_to_bytes, train_qformer,
)
from backend.models.registry import get_model
from backend.models.weights import fingerprint
from backend.stages.brain_captions import DEFAULT_LM, caption_scores
from backend.stages.embeddings import embed_texts_cached
from backend.stages.encoding import _complete_captions, dataset_fingerprint
from backend.stages.inputs import text_hash

STAGE = "brain-qformer"
#: What the job's progress calls each training phase (backend/models/brain_qformer.py).
PHASES = {"pretrain": "pretraining", "align": "aligning", "lm": "training"}

Report = Callable[[int, int, str], None]


def unit_labels(ds: Dataset) -> np.ndarray:
    """int ``[U]``: the label that groups units into brain tokens (region on a surface, area for neurons)."""
    space = ds.space
    return np.asarray(space.roi_labels if space.kind == "surface" else space.area)


def model_key(ds: Dataset, captions: list[str], embedder: str, lm_id: str, config: QFormerConfig) -> str:
    return entry_key(stage=STAGE, part="model", version=VERSION, dataset=dataset_fingerprint(ds),
                     captions=text_hash(json.dumps(captions)), embedder=embedder,
                     embedder_revision=fingerprint(get_model(embedder)), lm=lm_id,
                     lm_revision=fingerprint(get_model(lm_id)), config=config.to_dict())


def _result_key(mkey: str, generation: dict) -> str:
    return entry_key(stage=STAGE, part="result", model=mkey, generation=generation)


def cached_qformer_captions(ds: Dataset, source: str, embedder: str, store: Store, *, language_model: str = DEFAULT_LM,
                            config: QFormerConfig = QFormerConfig(), max_new_tokens: int = 30, num_beams: int = 1,
                            seed: int = 0) -> dict | None:
    """The result of :func:`qformer_captions` if it has run, else None."""
    captions = _complete_captions(ds, source, store)
    generation = {"max_new_tokens": int(max_new_tokens), "num_beams": int(num_beams), "seed": int(seed)}
    text = store.get_text(_result_key(model_key(ds, captions, embedder, language_model, config), generation))
    return None if text is None else json.loads(text)


def qformer_captions(
    ds: Dataset,
    source: str,
    embedder: str,
    *,
    store: Store,
    pool,
    language_model: str = DEFAULT_LM,
    config: QFormerConfig = QFormerConfig(),
    max_new_tokens: int = 30,
    num_beams: int = 1,
    seed: int = 0,
    report: Report | None = None,
    cancel: Callable[[], bool] | None = None,
) -> dict:
    """Train (or load) the Brain Q-Former and caption every test stimulus from its response.

    Returns {"decoder": "qformer", "training": {...}, "metrics": {"qformer": {BLEU-1..4, METEOR,
    ROUGE-L, CIDEr-D, "similarity", "identification"}}, "stimuli": {row: {"generated",
    "similarity"}}} (similarity: cosine in the embedder's space to the source caption).
    """
    say = report or (lambda done, total, message: None)
    generation = {"max_new_tokens": int(max_new_tokens), "num_beams": int(num_beams), "seed": int(seed)}
    if get_model(language_model).kind != "language_model":
        raise ValueError(f"{language_model} is a {get_model(language_model).kind.replace('_', ' ')}, not a language model")
    captions = _complete_captions(ds, source, store)
    mkey = model_key(ds, captions, embedder, language_model, config)
    rkey = _result_key(mkey, generation)
    cached = store.get_text(rkey)
    if cached is not None:
        return json.loads(cached)
    train, test = ds.stimuli.indices("train"), ds.stimuli.indices("test")
    embeddings = embed_texts_cached(captions, embedder, store=store, pool=pool, cancel=cancel)
    responses = np.asarray(ds.responses, np.float32)
    lm = None
    with store.compute_once(mkey):
        found = store.get(mkey)
        if found is not None:
            model, training = qformer_from_bytes(found[1])
            training = {**training, "cached": True}
        else:
            say(0, config.steps, f"loading {language_model}")
            lm = pool.get(language_model)
            groups = brain_groups(unit_labels(ds), config.patch)
            model, history = train_qformer(
                lm, responses[train], groups, [captions[int(i)] for i in train], embeddings[train], config,
                report=lambda phase, step, steps, loss: say(step, steps, f"{PHASES[phase]} step {step} of {steps}, loss {loss:.3f}"),
                cancel=cancel,
            )
            last = lambda values: round(float(np.mean(values[-10:])), 4) if values else None  # noqa: E731
            training = {"seconds": round(history["seconds"], 1), "step_seconds": round(history["step_seconds"], 3),
                        "align_seconds": round(history["align_seconds"], 1), "steps": config.steps,
                        "align_steps": len(history["align_loss"]), "final_align_loss": last(history["align_loss"]),
                        "final_loss": last(history["loss"]), "final_lm_loss": last(history["lm_loss"]),
                        "loss": [round(x, 4) for x in history["loss"]], "device": str(lm.device),
                        "brain_tokens": model.n_tokens, "prefix": config.prefix}
            # Written only once training has finished: a cancelled job leaves no model behind.
            store.put(mkey, "safetensors", qformer_to_bytes(model, training))
            training = {**training, "cached": False}

    keys = [entry_key(stage=STAGE, part="caption", model=mkey, row=int(i), **generation) for i in test]
    found = store.get_many(keys)
    missing = [k for k, key in enumerate(keys) if key not in found]
    if missing:
        lm = lm or pool.get(language_model)
        texts = generate_qformer_captions(
            lm, model, responses[test[missing]], max_new_tokens=max_new_tokens, num_beams=num_beams, seed=seed,
            progress=lambda done, total: say(done, total, f"writing captions: {done} of {total}"), cancel=cancel)
        new = {keys[k]: ("text", t.encode()) for k, t in zip(missing, texts, strict=True)}
        store.put_many(new)
        found.update(new)
    generated = [found[key][1].decode() for key in keys]

    say(0, 1, "scoring")
    references = [[ds.stimuli.captions[int(i)] or ""] for i in test]
    vectors = embed_texts_cached(generated, embedder, store=store, pool=pool, cancel=cancel)
    own = embeddings[test]
    sims = np.sum(vectors * own, 1)
    result = {
        "decoder": "qformer", "source": source, "embedder": embedder, "language_model": language_model,
        "config": config.to_dict(), "generation": generation, "training": training,
        "metrics": {"qformer": {**caption_scores(generated, references), "similarity": float(sims.mean()),
                                "identification": identification(vectors, own)}},
        "stimuli": {str(int(row)): {"generated": g, "similarity": round(float(s), 4)}
                    for row, g, s in zip(test, generated, sims, strict=True)},
    }
    store.put(rkey, "json", json.dumps(result).encode())
    store.record_run(ds.id, STAGE, language_model, {"source": source, "embedder": embedder}, len(test), len(test))
    say(1, 1, "done")
    return result
