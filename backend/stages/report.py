"""The whole pipeline for one (dataset, captioner, embedder), headless: every score as JSON.

Steps: the captioner's captions (cached) -> their embeddings -> the encoding model (per-unit r,
fraction of the noise ceiling, summarised per region or area) -> a decoder from responses to the
embedding -> captions retrieved from the training captions for each test stimulus -> caption
metrics against the references -> images generated from the decoded captions -> image metrics
against the stimuli. On the demo world the planted truth is compared with what was recovered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from backend.analysis.caption_metrics import METEOR_NAME, bleu, cider, meteor, rouge_l
from backend.cache import Store
from backend.data.schema import Dataset
from backend.models.brain_qformer import QFormerConfig
from backend.models.prefix_decoder import PrefixConfig
from backend.stages.brain_captions import DEFAULT_LM, brain_captions, caption_scores, quick_config
from backend.stages.brain_qformer import qformer_captions
from backend.stages.captions import REFERENCE, caption_dataset, source_captions
from backend.stages.clip_scores import caption_clip_scores
from backend.stages.comparison import compare_captioners, default_image_embedder
from backend.stages.controls import compare_controls, dataset_lexicon
from backend.stages.decoding import decode_captions
from backend.stages.encoding import fit_encoding, region_summary, unit_regions
from backend.stages.visual_encoders import Settings as VisualSettings
from backend.stages.visual_encoders import compare_visual_encoders, table_lines

Progress = Callable[[str, float], None]


def analyze(
    ds: Dataset,
    captioner: str,
    embedder: str,
    *,
    store: Store,
    pool,
    text_to_image: str = "sim-scene-renderer",
    corpus: list[str] | None = None,
    language_model: str | None = DEFAULT_LM,
    brain_steps: int | None = None,
    brain_align_steps: int | None = None,
    visual_encoders=(),
    visual_settings: VisualSettings | None = None,
    progress: Progress | None = None,
) -> dict:
    """Every score the explorer's panels show, for one dataset / captioner / embedder; decoded
    captions are retrieved from ``corpus`` when given, else from the training captions.
    ``language_model``: the frozen LM that generates captions from the brain (None: skip that
    step, which trains a prefix decoder and a Q-Former for minutes on a CPU the first time);
    ``brain_steps``: their training steps through the LM, ``brain_align_steps``: the prefix
    decoder's alignment steps (default: the default configurations); ``visual_encoders``: which
    networks of the visual-encoder comparison to train and compare (language, category, untrained;
    none: skip), with ``visual_settings`` (default: this captioner and embedder)."""
    say = progress or (lambda stage, fraction: None)
    report: dict = {"dataset": ds.id, "captioner": captioner, "embedder": embedder, "text_to_image": text_to_image}

    say("captioning", 0.0)
    if captioner != REFERENCE and captioner not in ds.captions:
        caption_dataset(ds, captioner, store=store, pool=pool)
    captions = source_captions(ds, captioner, store)

    say("encoding model", 0.2)
    encoding = fit_encoding(ds, captioner, embedder, store=store, pool=pool)
    labels, names = unit_regions(ds)
    report["encoding"] = {
        "mean_r": float(np.nanmean(encoding.r)),
        "r_by_region": region_summary(encoding.r, labels, names),
        "fraction_of_ceiling_by_region": region_summary(encoding.fraction_of_ceiling, labels, names)
        if ds.noise_ceiling is not None
        else None,
        "noise_ceiling_by_region": region_summary(np.asarray(ds.noise_ceiling), labels, names) if ds.noise_ceiling is not None else None,
    }

    say("decoding", 0.5)
    test = ds.stimuli.indices("test")
    decoding = decode_captions(ds, captioner, embedder, store=store, pool=pool, corpus=corpus)  # the viewer's decoding, cached
    report["decoding"] = {**decoding["identification"], "corpus": decoding["corpus"]["kind"], "corpus_size": decoding["corpus"]["n"]}

    say("decoded captions", 0.65)
    references = [ds.stimuli.captions[i] or "" for i in test]
    decoded_captions = [decoding["stimuli"][str(int(i))]["caption"] for i in test]
    refs = [[r] for r in references]
    bleu_scores = bleu(decoded_captions, refs)
    report["decoded_captions"] = {
        **{f"bleu{n + 1}": float(b) for n, b in enumerate(bleu_scores)},
        "meteor_exact": float(meteor(decoded_captions, refs)),
        "meteor_variant": METEOR_NAME,
        "rouge_l": float(rouge_l(decoded_captions, refs)),
        "cider": float(cider(decoded_captions, refs)),
        # cosine between the decoded and the reference caption in the embedder's own space
        "embedding_similarity": float(np.mean([decoding["stimuli"][str(int(i))]["similarity"] for i in test])),
        "examples": [{"stimulus": int(i), "reference": r, "decoded": d} for i, r, d in list(zip(test, references, decoded_captions))[:5]],
    }
    if captioner != REFERENCE:
        own = [captions[i] for i in test]
        report["captioner_vs_reference"] = {
            "bleu4": float(bleu(own, refs)[3]),
            "cider": float(cider(own, refs)),
            "rouge_l": float(rouge_l(own, refs)),
        }

    if language_model is not None:
        say("captions generated from the brain", 0.7)
        config = PrefixConfig()
        if brain_steps or brain_align_steps is not None:
            config = quick_config(brain_steps or config.steps, brain_align_steps)
        report["brain_captions"] = _generated_vs_retrieved(ds, captioner, embedder, language_model, config, decoding, store, pool)

    say("reconstructions", 0.8)
    # The comparison tab's row for this captioner: pixel metrics and, with an image embedder, 2-way.
    image_embedder = default_image_embedder(ds)
    row = compare_captioners(
        ds, [captioner], embedder, text_to_image, store=store, pool=pool, image_embedder=image_embedder, corpus=corpus
    )[0]
    report["reconstructions"] = {k: v for k, v in row.items() if k in ("pixcorr", "ssim", "image_two_way", "image_similarity", "image_embedder")}

    say("controls", 0.9)
    report["controls"] = compare_controls(ds, captioner, embedder, store=store, pool=pool, lexicon=dataset_lexicon(ds))

    if visual_encoders:
        say("visual encoders", 0.93)
        report["visual_encoders"] = visual_encoder_report(
            ds, visual_encoders, visual_settings or VisualSettings(source=captioner, embedder=embedder), store=store, pool=pool)

    if ds.truth:
        report["truth_recovery"] = _truth_recovery(ds, encoding.r, labels, names)
    say("done", 1.0)
    return report


def visual_encoder_report(ds: Dataset, networks, settings: VisualSettings, *, store: Store, pool) -> dict:
    """The visual-encoder comparison for the report: per region, each network's encoding mean test
    r and RSA (mean, sd over subsets of test stimuli) at each layer, beside the caption embedding
    ("text"), with the training records (seconds, per-epoch losses)."""
    result = compare_visual_encoders(ds, tuple(networks), settings, store=store, pool=pool)
    table: dict = {}
    for row in result["rows"]:
        cell = table.setdefault(row["region"], {}).setdefault(row["network"], {})
        cell[row["layer"]] = {k: row[k] for k in ("encoding_r", "fraction_of_ceiling", "rsa_mean", "rsa_sd")}
    return {"settings": result["settings"], "networks": result["networks"], "by_region": table,
            "training": result["training"], "rsa_stimuli": result["rsa_stimuli"], "table": table_lines(result)}


def _generated_vs_retrieved(ds: Dataset, source: str, embedder: str, language_model: str, config: PrefixConfig,
                            decoding: dict, store: Store, pool) -> dict:
    """Retrieval, the prefix decoder from the brain, and its ceiling (fed the true caption
    embedding), on the same test stimuli and the same metrics."""
    result = brain_captions(ds, source, embedder, store=store, pool=pool, language_model=language_model, config=config)
    rows = sorted(int(r) for r in result["stimuli"])
    refs = [[ds.stimuli.captions[r] or ""] for r in rows]
    retrieved = [decoding["stimuli"][str(r)]["caption"] for r in rows]
    retrieval = {**caption_scores(retrieved, refs),
                 "similarity": float(np.mean([decoding["stimuli"][str(r)]["similarity"] for r in rows]))}
    training = {k: v for k, v in result["training"].items() if k != "loss"}
    # The Brain Q-Former: trained end to end on (response, caption) pairs, scored on the same rows.
    qconfig = QFormerConfig() if config.steps == PrefixConfig().steps else replace(QFormerConfig(), steps=config.steps)
    qformer = qformer_captions(ds, source, embedder, store=store, pool=pool, language_model=language_model, config=qconfig)
    qformer_training = {k: v for k, v in qformer["training"].items() if k != "loss"}
    qformer_texts = [qformer["stimuli"][str(r)]["generated"] for r in rows]
    metrics = {"retrieval": retrieval, "brain": result["metrics"]["brain"], "qformer": qformer["metrics"]["qformer"],
               "ceiling": result["metrics"]["ceiling"]}
    clip = caption_clip_scores(ds, rows, {"retrieval": retrieved, "qformer": qformer_texts}, store=store, pool=pool)
    if clip is not None:  # the prefix decoder's rows have theirs from its stage
        metrics["retrieval"] = {**retrieval, **clip["retrieval"]}
        metrics["qformer"] = {**metrics["qformer"], **clip["qformer"]}
    return {
        "language_model": language_model, "inputs": result["inputs"], "training": training,
        "qformer_training": qformer_training, "clip_model": clip and clip["model"],
        "metrics": metrics,
        "examples": [{"stimulus": r, "reference": refs[i][0], "retrieved": retrieved[i],
                      "generated": result["stimuli"][str(r)]["generated"], "qformer": qformer_texts[i],
                      "ceiling": result["stimuli"][str(r)]["ceiling"]}
                     for i, r in enumerate(rows[:5])],
    }


def _truth_recovery(ds: Dataset, r: np.ndarray, labels: np.ndarray, names) -> dict:
    """How the recovered encoding map compares with the planted best achievable r."""
    planted = ds.truth_map("expected_test_r")
    out = {}
    signal = planted > 0
    if signal.sum() > 2:
        out["r_vs_planted_all_signal_units"] = float(np.corrcoef(r[signal], planted[signal])[0, 1])
    if "caption" in names:
        region = labels == list(names).index("caption")
        out["r_vs_planted_caption_region"] = float(np.corrcoef(r[region], planted[region])[0, 1])
    out["mean_r_outside_signal"] = float(np.mean(r[~signal])) if (~signal).any() else None
    return out
