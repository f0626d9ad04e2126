"""Stage: captions generated from the brain by a frozen language model (the MindSemantix path).

    responses --ridge (the decoding stage's)--> predicted caption embedding
              --prefix decoder (trained here, cached)--> soft prefix --frozen LM--> caption

The embedding-prefix decoder is trained on (vector, caption) pairs of the training stimuli:

- ``inputs="captions"``: the captions' own embeddings (with noise) -- the decoder depends only on
  the caption corpus, the embedder and the LM, so every dataset decoding into that corpus shares it;
- ``inputs="captions+brain"`` (default): those pairs plus the *out-of-fold* ridge predictions of
  the same training stimuli (5 folds: each stimulus predicted by a ridge that never saw it), so
  the decoder learns from the kind of input it will receive at test time. Ridge predictions are
  shrunk toward the mean and noisier than any caption embedding; a decoder trained on captions
  alone reads them poorly (measured: sentence similarity 0.36 against 0.48 for retrieval).

For each test stimulus it writes the caption from the brain (the ridge trained on all training
stimuli predicts its embedding) and the *ceiling*: the caption from the true caption embedding.
Both ways the decoder proposes ``candidates`` wordings and keeps the one whose embedding is
closest to its input vector.
Everything is cached in the content-addressed store: the ridge predictions, the trained decoder
(by data, configuration and the LM's fingerprint) and each generated caption (by the decoder, the
input vector's bytes and the generation parameters), so a second request trains nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from backend.analysis.caption_metrics import caption_metrics
from backend.analysis.decoding import identification
from backend.analysis.ridge import fit_ridge_cv
from backend.cache import Store, entry_key
from backend.data.schema import Dataset
from backend.models.prefix_decoder import (
    VERSION, PrefixConfig, generate_captions, mapper_from_bytes, mapper_to_bytes, train_prefix_decoder,
)
from backend.models.registry import DEFAULTS, get_model
from backend.models.weights import fingerprint
from backend.stages.clip_scores import caption_clip_scores
from backend.stages.embeddings import embed_texts_cached
from backend.stages.encoding import _complete_captions, dataset_fingerprint
from backend.stages.inputs import text_hash

STAGE = "brain-captions"
#: Slot sequences the decoder proposes per caption; it keeps the one whose embedding is closest to
#: its input (backend/models/prefix_decoder.py: generate_captions).
CANDIDATES = 8
INPUTS = ("captions", "captions+brain")
OOF_FOLDS = 5
DEFAULT_LM = DEFAULTS["language_model"]

Report = Callable[[int, int, str], None]


def _ridge_predictions(ds: Dataset, captions: list[str], embeddings: np.ndarray, embedder: str, store: Store) -> dict[str, np.ndarray]:
    """{"oof": [n_train, d] out-of-fold predictions of the training stimuli, "test": [n_test, d]
    predictions of the test stimuli by a ridge fit on every training stimulus}; cached."""
    key = entry_key(stage=STAGE, part="ridge", dataset=dataset_fingerprint(ds), captions=text_hash(json.dumps(captions)),
                    embedder=embedder, folds=OOF_FOLDS)
    found = store.get(key)
    if found is not None:
        data = np.load(io.BytesIO(found[1]), allow_pickle=False)
        return {"oof": data["oof"], "test": data["test"]}
    train, test = ds.stimuli.indices("train"), ds.stimuli.indices("test")
    responses = np.asarray(ds.responses, np.float32)
    folds = np.arange(len(train)) % OOF_FOLDS  # interleaved, so each fold spans the whole split
    oof = np.zeros((len(train), embeddings.shape[1]), np.float32)
    for f in range(OOF_FOLDS):
        fit = fit_ridge_cv(responses[train[folds != f]], embeddings[train[folds != f]])
        oof[folds == f] = fit.predict(responses[train[folds == f]])
    test_pred = fit_ridge_cv(responses[train], embeddings[train]).predict(responses[test]).astype(np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, oof=oof, test=test_pred)
    store.put(key, "npz", buffer.getvalue())
    return {"oof": oof, "test": test_pred}


def decoder_key(ds: Dataset, train_captions: list[str], embedder: str, lm_id: str, config: PrefixConfig, inputs: str) -> str:
    """The trained decoder's store key: the corpus, the embedder and LM (with what is on disk),
    the configuration, and -- only when brain predictions are among its inputs -- the dataset."""
    if inputs not in INPUTS:
        raise ValueError(f"inputs must be one of {INPUTS}, got {inputs!r}")
    parts = dict(stage=STAGE, part="prefix-decoder", version=VERSION, corpus=text_hash(json.dumps(train_captions)),
                 embedder=embedder, embedder_revision=fingerprint(get_model(embedder)),
                 lm=lm_id, lm_revision=fingerprint(get_model(lm_id)), config=config.to_dict(), inputs=inputs)
    if inputs == "captions+brain":
        parts["dataset"] = dataset_fingerprint(ds)
    return entry_key(**parts)


def result_key(ds: Dataset, source: str, embedder: str, lm_id: str, config: PrefixConfig, inputs: str, generation: dict) -> str:
    return entry_key(stage=STAGE, part="result", dataset=dataset_fingerprint(ds), source=source, embedder=embedder,
                     lm=lm_id, lm_revision=fingerprint(get_model(lm_id)), config=config.to_dict(), inputs=inputs,
                     generation=generation, version=VERSION)


def cached_brain_captions(ds: Dataset, source: str, embedder: str, store: Store, *, language_model: str = DEFAULT_LM,
                          config: PrefixConfig = PrefixConfig(), inputs: str = "captions+brain",
                          max_new_tokens: int = 30, num_beams: int = 1, candidates: int = CANDIDATES,
                          seed: int = 0) -> dict | None:
    """The result of :func:`brain_captions` if it has run, else None (LookupError if the source
    has not captioned every stimulus)."""
    _complete_captions(ds, source, store)
    generation = _generation(max_new_tokens, num_beams, candidates, seed)
    text = store.get_text(result_key(ds, source, embedder, language_model, config, inputs, generation))
    return None if text is None else json.loads(text)


def brain_captions(
    ds: Dataset,
    source: str,
    embedder: str,
    *,
    store: Store,
    pool,
    language_model: str = DEFAULT_LM,
    config: PrefixConfig = PrefixConfig(),
    inputs: str = "captions+brain",
    max_new_tokens: int = 30,
    num_beams: int = 1,
    candidates: int = CANDIDATES,
    seed: int = 0,
    report: Report | None = None,
    cancel: Callable[[], bool] | None = None,
) -> dict:
    """Train (or load) the prefix decoder and caption every test stimulus from the brain.

    Returns {"decoder", "language_model", "inputs", "config", "training": {"seconds", "steps",
    "final_loss", "loss"}, "metrics": {"brain": {...}, "ceiling": {...}}, "clip_model", "stimuli": {row:
    {"generated", "ceiling", "similarity", "ceiling_similarity"}}}, where metrics are BLEU-1..4,
    METEOR (exact), ROUGE-L and CIDEr-D against the dataset's reference captions plus
    ``similarity``: mean cosine, in the embedder's space, between a generated caption and the
    source caption; "identification" scores the generated captions' embeddings against the test
    stimuli's own (2-way, top-1); ``clip_s`` and ``refclip_s`` too when a CLIP pair's weights are
    present (``clip_model`` names it; None otherwise). Cached as a whole and per caption.
    """
    say = report or (lambda done, total, message: None)
    generation = _generation(max_new_tokens, num_beams, candidates, seed)
    rkey = result_key(ds, source, embedder, language_model, config, inputs, generation)
    cached = store.get_text(rkey)
    if cached is not None:
        return json.loads(cached)
    lm_spec = get_model(language_model)
    if lm_spec.kind != "language_model":
        raise ValueError(f"{language_model} is a {lm_spec.kind.replace('_', ' ')}, not a language model")
    captions = _complete_captions(ds, source, store)
    train, test = ds.stimuli.indices("train"), ds.stimuli.indices("test")
    embeddings = embed_texts_cached(captions, embedder, store=store, pool=pool, cancel=cancel)
    train_captions = [captions[int(i)] for i in train]

    say(0, config.steps, "ridge predictions of the caption embeddings")
    predicted = _ridge_predictions(ds, captions, embeddings, embedder, store)

    dkey = decoder_key(ds, train_captions, embedder, language_model, config, inputs)
    training: dict
    with store.compute_once(dkey):
        found = store.get(dkey)
        if found is not None:
            mapper, training = mapper_from_bytes(found[1])
            training = {**training, "cached": True}
            lm = None
        else:
            say(0, config.steps, f"loading {language_model}")
            lm = pool.get(language_model)
            vectors, texts = embeddings[train], train_captions
            if inputs == "captions+brain":
                vectors, texts = np.concatenate([vectors, predicted["oof"]]), texts + texts
            mapper, history = train_prefix_decoder(
                lm, vectors, texts, config,
                report=lambda step, steps, loss: say(step, steps, f"training step {step} of {steps}, loss {loss:.3f}"),
                cancel=cancel,
            )
            training = {"seconds": round(history["seconds"], 1), "step_seconds": round(history["step_seconds"], 3),
                        "steps": config.steps, "final_loss": round(float(np.mean(history["loss"][-10:])), 4),
                        "loss": [round(x, 4) for x in history["loss"]], "device": str(lm.device)}
            store.put(dkey, "safetensors", mapper_to_bytes(mapper, training))
            training = {**training, "cached": False}

    def embed(texts: list[str]) -> np.ndarray:
        return embed_texts_cached(texts, embedder, store=store, pool=pool, cancel=cancel)

    # Generation, cached per (decoder, input vector, parameters): a stimulus is written once.
    def write(vectors: np.ndarray, what: str) -> list[str]:
        keys = [entry_key(stage=STAGE, part="caption", decoder=dkey, vector=hashlib.sha256(v.tobytes()).hexdigest(), **generation)
                for v in np.asarray(vectors, np.float32)]
        found = store.get_many(keys)
        missing = [i for i, k in enumerate(keys) if k not in found]
        if missing:
            model = lm or pool.get(language_model)
            texts = generate_captions(
                model, mapper, vectors[missing], max_new_tokens=max_new_tokens, num_beams=num_beams,
                candidates=candidates, embed=embed, seed=seed,
                progress=lambda done, total: say(done, total, f"writing {what} captions: {done} of {total}"), cancel=cancel,
            )
            store.put_many({keys[i]: ("text", t.encode()) for i, t in zip(missing, texts, strict=True)})
            found.update({keys[i]: ("text", t.encode()) for i, t in zip(missing, texts, strict=True)})
        return [found[k][1].decode() for k in keys]

    from_brain = write(predicted["test"], "brain")
    ceiling = write(embeddings[test], "ceiling")

    say(0, 1, "scoring")
    references = [[ds.stimuli.captions[int(i)] or ""] for i in test]
    generated_vectors = embed_texts_cached(from_brain + ceiling, embedder, store=store, pool=pool, cancel=cancel)
    brain_vec, ceiling_vec = generated_vectors[: len(test)], generated_vectors[len(test):]
    own = embeddings[test]
    brain_sim, ceiling_sim = np.sum(brain_vec * own, 1), np.sum(ceiling_vec * own, 1)
    metrics = {
        "brain": {**caption_scores(from_brain, references), "similarity": float(brain_sim.mean()),
                  "identification": identification(brain_vec, own)},
        "ceiling": {**caption_scores(ceiling, references), "similarity": float(ceiling_sim.mean()),
                    "exact_match": float(np.mean([c == captions[int(i)] for c, i in zip(ceiling, test, strict=True)]))},
    }
    # CLIP-S / RefCLIP-S beside them when a CLIP pair's weights are here (nothing downloaded).
    clip = caption_clip_scores(ds, test, {"brain": from_brain, "ceiling": ceiling}, store=store, pool=pool, cancel=cancel)
    if clip is not None:
        for name in ("brain", "ceiling"):
            metrics[name].update(clip[name])
    result = {
        "decoder": "prefix", "source": source, "clip_model": clip and clip["model"], "embedder": embedder, "language_model": language_model,
        "inputs": inputs, "config": config.to_dict(), "generation": generation, "training": training,
        "metrics": metrics,
        "stimuli": {
            str(int(row)): {"generated": g, "ceiling": c, "similarity": round(float(bs), 4), "ceiling_similarity": round(float(cs), 4)}
            for row, g, c, bs, cs in zip(test, from_brain, ceiling, brain_sim, ceiling_sim, strict=True)
        },
    }
    store.put(rkey, "json", json.dumps(result).encode())
    store.record_run(ds.id, STAGE, language_model, {"source": source, "embedder": embedder, "inputs": inputs}, len(test), len(test))
    say(1, 1, "done")
    return result


def _generation(max_new_tokens: int, num_beams: int, candidates: int, seed: int) -> dict:
    if int(candidates) < 1:
        raise ValueError(f"candidates must be >= 1, got {candidates}")
    return {"max_new_tokens": int(max_new_tokens), "num_beams": int(num_beams), "candidates": int(candidates), "seed": int(seed)}


def brainhub_candidates(ds: Dataset, result: dict, which: str = "generated") -> dict[str, str]:
    """The generated captions as BrainHub's ``eval_caption.py`` reads them: {"0": caption, ...},
    keyed by the position of each test stimulus in the dataset's test split (for an NSD import,
    the shared images in the order of their NSD ids, which is BrainHub's order for subject 1's
    982 images: check the count before submitting). ``which``: "generated" or "ceiling"."""
    if which not in ("generated", "ceiling"):
        raise ValueError(f'which must be "generated" or "ceiling", got {which!r}')
    rows = [int(i) for i in ds.stimuli.indices("test")]
    return {str(k): result["stimuli"][str(row)][which] for k, row in enumerate(rows)}


def caption_scores(candidates: list[str], references: list[list[str]]) -> dict[str, float]:
    """Corpus BLEU-1..4, METEOR (exact), ROUGE-L and CIDEr-D of candidates against references."""
    return {k: float(v) for k, v in caption_metrics(candidates, references)["corpus"].items()}


def quick_config(steps: int, align_steps: int | None = None) -> PrefixConfig:
    """The default configuration with other numbers of training steps (LM steps; alignment steps
    of the soft-token mapper, default unchanged)."""
    config = replace(PrefixConfig(), steps=int(steps))
    return config if align_steps is None else replace(config, align_steps=int(align_steps))
