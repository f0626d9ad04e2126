"""Stage: compare captioners — how well each one's text predicts the brain, and how well images
reconstructed from the brain through its text match the stimuli.

For every caption source: the encoding model's mean test r over the units with explainable
variance; a decoder from responses to that source's embedding space, the retrieved caption of each
test stimulus, an image generated from it, and PixCorr / SSIM against the stimulus. The mouse study
this reproduces finds the two go together across captioners.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image

from backend.analysis.image_metrics import pixcorr, ssim
from backend.cache import Store
from backend.data.schema import Dataset
from backend.stages.decoding import decode_captions
from backend.stages.encoding import fit_encoding
from backend.stages.images import generate_cached
from backend.stages.inputs import load_images

IMAGE_SIZE = 256
#: Units whose noise ceiling (percent) is below this carry no signal to predict.
MIN_CEILING = 5.0


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
    report: Callable[[int, int, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> list[dict]:
    """One row per caption source: encoding_r, two_way (decoding), pixcorr and ssim (reconstruction)."""
    units = signal_units(ds)
    test = ds.stimuli.indices("test")
    stimuli = np.stack([np.asarray(im.resize((IMAGE_SIZE, IMAGE_SIZE))) for im in load_images(ds, test)])
    rows = []
    for k, source in enumerate(sources):
        if cancel and cancel():
            break
        if report:
            report(k, len(sources), f"{source}: encoding, decoding and reconstruction")
        encoding = fit_encoding(ds, source, embedder, store=store, pool=pool, cancel=cancel)
        decoded = decode_captions(ds, source, embedder, store=store, pool=pool, cancel=cancel)
        captions = [decoded["stimuli"][str(int(i))]["caption"] for i in test]
        keys = generate_cached(captions, text_to_image, store=store, pool=pool, cancel=cancel)
        images = np.stack([_png(store.get(key)[1]) for key in keys])
        rows.append(
            {
                "source": source,
                "encoding_r": round(float(np.nanmean(encoding.r[units])), 4),
                "two_way": round(float(decoded["identification"]["two_way"]), 4),
                "pixcorr": round(float(np.mean(pixcorr(images, stimuli, size=IMAGE_SIZE))), 4),
                "ssim": round(float(np.mean(ssim(images, stimuli, size=IMAGE_SIZE))), 4),
            }
        )
    if report:
        report(len(sources), len(sources), "compared")
    return rows


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE)))
