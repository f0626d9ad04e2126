"""Stage: compare captioners — how well each one's text predicts the brain, and how well images
reconstructed from the brain through its text match the stimuli.

For every caption source: the encoding model's mean test r over the units with explainable
variance; a decoder from responses to that source's embedding space, the retrieved caption of each
test stimulus, an image generated from it, and PixCorr / SSIM against the stimulus. With an image
embedder, also the high-level match the reconstruction literature reports next to the pixel
metrics: embedding 2-way identification of each reconstruction among the test stimuli, and the
mean embedding similarity of each reconstruction to its own stimulus. The mouse study this
reproduces finds encoding accuracy and reconstruction quality go together across captioners.

Pixel metrics are dominated by the background and layout: on the demo world, captions that name
no background are drawn on white and score low on PixCorr whatever their objects, so the planted
captioner order shows in image_two_way, not in PixCorr (tests/test_truth_recovery.py).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image

from backend.analysis.image_metrics import paired_similarity, pixcorr, ssim, two_way_identification
from backend.cache import Store, content_hash
from backend.data.schema import Dataset
from backend.models.registry import get_model, list_models
from backend.models.weights import weights_present
from backend.stages.decoding import decode_captions
from backend.stages.embeddings import embed_image_hashes_cached
from backend.stages.encoding import fit_encoding
from backend.stages.images import generate_cached
from backend.stages.inputs import image_hashes, load_images

IMAGE_SIZE = 256
#: Units whose noise ceiling (percent) is below this carry no signal to predict.
MIN_CEILING = 5.0
#: The image embedder for simulated (demo-world) datasets when no real one is here: the demo
#: world's scene reader, labelled simulated. Never used for real datasets, whose pictures it
#: cannot read.
FALLBACK_IMAGE_EMBEDDER = "sim-scene-reader"


def default_image_embedder(ds: Dataset) -> str | None:
    """The image embedder for the comparison's embedding columns: the first real one whose weights
    are here (a CLIP), else :data:`FALLBACK_IMAGE_EMBEDDER` for a simulated dataset, else None
    (no embedding columns). Callers pass the choice to :func:`compare_captioners` explicitly."""
    for spec in list_models("image_embedder"):
        if not spec.simulated and weights_present(spec):
            return spec.id
    return FALLBACK_IMAGE_EMBEDDER if ds.simulated else None


def signal_units(ds: Dataset) -> np.ndarray:
    """bool [n_units]: units with explainable variance (all units when there is no noise ceiling)."""
    if ds.noise_ceiling is None:
        return np.ones(ds.n_units, bool)
    return np.asarray(ds.noise_ceiling) >= MIN_CEILING


def compare_captioners(
    ds: Dataset,
    sources: list[str],
    embedder: str,
    text_to_image: str,
    *,
    store: Store,
    pool,
    image_embedder: str | None = None,
    corpus: list[str] | None = None,
    report: Callable[[int, int, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> list[dict]:
    """One row per caption source: encoding_r, two_way (decoding), pixcorr and ssim
    (reconstruction); with ``image_embedder`` (an image embedder id, e.g. from
    :func:`default_image_embedder`) also image_two_way and image_similarity (see
    :func:`embedding_scores`) and image_embedder (the id, so a simulated one is shown as such).
    Decoded captions are retrieved from ``corpus`` when given, else from each source's training captions."""
    if image_embedder is not None and (kind := get_model(image_embedder).kind) != "image_embedder":
        raise ValueError(f"{image_embedder} is a {kind.replace('_', ' ')}, not an image embedder")
    units = signal_units(ds)
    test = ds.stimuli.indices("test")
    stimuli = np.stack([np.asarray(im.resize((IMAGE_SIZE, IMAGE_SIZE))) for im in load_images(ds, test)])
    stimulus_features = None
    if image_embedder is not None:
        hashes = image_hashes(ds)
        stimulus_features = embed_image_hashes_cached(
            [hashes[i] for i in test], lambda rows: load_images(ds, [test[r] for r in rows]),
            image_embedder, store=store, pool=pool, cancel=cancel)
    rows = []
    for k, source in enumerate(sources):
        if cancel and cancel():
            break
        if report:
            report(k, len(sources), f"{source}: encoding, decoding and reconstruction")
        encoding = fit_encoding(ds, source, embedder, store=store, pool=pool, cancel=cancel)
        decoded = decode_captions(ds, source, embedder, store=store, pool=pool, corpus=corpus, cancel=cancel)
        captions = [decoded["stimuli"][str(int(i))]["caption"] for i in test]
        keys = generate_cached(captions, text_to_image, store=store, pool=pool, cancel=cancel)
        encoded = [store.get(key)[1] for key in keys]
        images = np.stack([_png(data) for data in encoded])
        row = {
            "source": source,
            "encoding_r": round(float(np.nanmean(encoding.r[units])), 4),
            "two_way": round(float(decoded["identification"]["two_way"]), 4),
            "pixcorr": round(float(np.mean(pixcorr(images, stimuli, size=IMAGE_SIZE))), 4),
            "ssim": round(float(np.mean(ssim(images, stimuli, size=IMAGE_SIZE))), 4),
        }
        if image_embedder is not None:
            features = embed_image_hashes_cached(
                [content_hash(data) for data in encoded],
                lambda rows, encoded=encoded: [Image.open(io.BytesIO(encoded[r])).convert("RGB") for r in rows],
                image_embedder, store=store, pool=pool, cancel=cancel)
            scores = embedding_scores(features, stimulus_features)
            row.update({name: round(value, 4) for name, value in scores.items()}, image_embedder=image_embedder)
        rows.append(row)
    if report:
        report(len(sources), len(sources), "compared")
    return rows


def embedding_scores(reconstructions: np.ndarray, stimuli: np.ndarray) -> dict[str, float]:
    """High-level reconstruction quality from image-embedder features, row i of each array
    ([n, d], n >= 2) belonging to test stimulus i:

    image_two_way:     2-way identification (chance 0.5): the fraction of (i, j != i) pairs in
                       which reconstruction i is more similar to stimulus i than to stimulus j;
    image_similarity:  the mean similarity of each reconstruction to its own stimulus (an
                       unreadable image, all-zero features, counts as 0).

    Similarity is cosine, the similarity image embedders such as CLIP are trained with (and the
    one the decoding identification uses). Raises ValueError when the shapes differ."""
    return {
        "image_two_way": two_way_identification(reconstructions, stimuli, metric="cosine"),
        "image_similarity": float(np.mean(paired_similarity(reconstructions, stimuli, metric="cosine"))),
    }


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE)))
