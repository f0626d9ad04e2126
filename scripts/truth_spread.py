"""Measure the quantities the truth-recovery tests assert, on a demo world of a given seed with a
given BLAS/torch thread count, and print them as one JSON line.

    python scripts/truth_spread.py --seed 1 --threads 1 --root /tmp/spread

Run it over several seeds and thread counts to see the spread that the thresholds in
tests/test_truth_recovery.py must sit well inside (see that file's docstring for the figures).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
ORDER = ["reference", "sim-objects-only", "sim-one-object", "sim-noisy-words"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--root", default="/tmp/cortextual-truth-spread")
    args = parser.parse_args()
    root = Path(args.root)
    os.environ["CORTEXTUAL_CACHE"] = str(root / f"cache-seed{args.seed}")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    import numpy as np
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    with threadpool_limits(args.threads):
        return measure(args, np)


def measure(args, np) -> int:
    from backend.analysis.decoding import identification
    from backend.analysis.ridge import fit_ridge_cv
    from backend.cache import Store
    from backend.data.demo import scene_reader, scenes
    from backend.data.demo.world import ensure_demo_world
    from backend.data.folder import load_folder
    from backend.models.pool import ModelPool
    from backend.stages.comparison import FALLBACK_IMAGE_EMBEDDER, compare_captioners
    from backend.stages.controls import compare_controls
    from backend.stages.embeddings import embed_texts_cached
    from backend.stages.encoding import fit_encoding
    from backend.stages.inputs import load_images

    started = time.perf_counter()
    folders = ensure_demo_world(seed=args.seed, n_train=1000, n_test=200)
    ds = load_folder(folders["demo-human"], "demo-human")
    store = Store(Path(os.environ["CORTEXTUAL_CACHE"]) / f"store-threads{args.threads}.sqlite")
    pool = ModelPool(device="cpu")
    out: dict = {"seed": args.seed, "threads": args.threads}

    labels = ds.space.roi_labels
    caption = labels == list(ds.space.roi_names).index("caption")
    result = fit_encoding(ds, "reference", MINILM, store=store, pool=pool)
    planted = ds.truth_map("expected_test_r")
    out["caption_map_corr"] = float(np.corrcoef(result.r[caption], planted[caption])[0, 1])
    out["caption_mean_r"] = float(result.r[caption].mean())
    out["outside_mean_r"] = float(result.r[labels == 0].mean())

    signal = labels > 0
    out["mean_r"] = {s: float(fit_encoding(ds, s, MINILM, store=store, pool=pool).r[signal].mean()) for s in ORDER}

    embeddings = embed_texts_cached(list(ds.stimuli.captions), MINILM, store=store, pool=pool)
    train, test = ds.stimuli.indices("train"), ds.stimuli.indices("test")
    responses = np.asarray(ds.responses)
    decoder = fit_ridge_cv(responses[train], embeddings[train])
    out["decoding"] = {k: float(v) for k, v in identification(decoder.predict(responses[test]), embeddings[test]).items()}

    regions = compare_controls(ds, "reference", MINILM, store=store, pool=pool)["word-average"]["regions"]
    out["controls_caption"] = float(regions["caption"]["mean_difference"])
    out["controls_evc"] = float(regions["EVC"]["mean_difference"])

    planted_scenes = [scenes.parse(ds.stimuli.captions[i]) for i in test]
    readings = [scene_reader.read_scene(image) for image in load_images(ds, test)]
    hits = [len(set(r.categories) & set(scenes.scene_categories(s))) for r, s in zip(readings, planted_scenes, strict=True)]
    out["reader_precision"] = float(np.mean([h / max(len(r.objects), 1) for h, r in zip(hits, readings, strict=True)]))
    out["reader_recall"] = float(np.mean([h / len(s.objects) for h, s in zip(hits, planted_scenes, strict=True)]))
    out["reader_background"] = float(np.mean([r.background == s.background for r, s in zip(readings, planted_scenes, strict=True)]))

    rows = compare_captioners(ds, ORDER, MINILM, "sim-scene-renderer", store=store, pool=pool, image_embedder=FALLBACK_IMAGE_EMBEDDER)
    out["image_two_way"] = {row["source"]: float(row["image_two_way"]) for row in rows}
    out["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
