"""The visual encoders' costs: training time per epoch and images per second (each objective),
and batched against one-by-one inference (features of every stimulus).

    .venv/bin/python bench/bench_visual_encoders.py [--epochs 2] [--size 64] [--images 1000] [--device cpu]

On the default demo world's training images when it is in the cache (``launch.py`` generates it),
else on random images of the same size. Prints wall and CPU time (``time.process_time``, all
threads) and the machine's load, since other work on the machine inflates wall times.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _images(n: int, size: int):
    import numpy as np
    import torch

    from backend.config import datasets_dir, demo_world_size
    from backend.data.demo.world import DEFAULT_SEED, demo_folder_name
    from backend.data.folder import load_folder
    from backend.models.visual_encoders import category_targets, images_tensor
    from backend.stages.inputs import load_images

    folder = datasets_dir() / demo_folder_name("demo-human", DEFAULT_SEED, *demo_world_size())
    if (folder / "manifest.json").exists():
        ds = load_folder(folder, "demo-human")
        rows = ds.stimuli.indices("train")[:n]
        labels, _ = category_targets([ds.stimuli.categories[i] for i in rows])
        return images_tensor(load_images(ds, rows), size), labels, "demo-world training images"
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8))
    return images, np.eye(40, dtype=np.float32)[rng.integers(0, 40, n)], "random images (no demo world in the cache)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="epochs to time per objective")
    parser.add_argument("--size", type=int, default=64, help="input side in pixels")
    parser.add_argument("--images", type=int, default=1000, help="training images")
    parser.add_argument("--infer", type=int, default=200, help="images for the inference comparison")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import numpy as np
    import torch

    from backend.models import visual_encoders as ve

    images, labels, what = _images(args.images, args.size)
    n = len(images)
    rng = np.random.default_rng(0)
    captions = rng.standard_normal((n, 384)).astype(np.float32)  # the cost does not depend on the targets' values
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}; {n} {what}, "
          f"{args.size} px; load average {os.getloadavg()[0]:.2f}")
    for objective in ("cosine", "infonce", "cosine+infonce", "category"):
        config = ve.EncoderConfig(objective=objective, input_size=args.size, epochs=args.epochs)
        targets = labels if objective == "category" else captions
        model = ve.build_encoder(config, targets.shape[1], 0)
        cpu = time.process_time()
        record = ve.train_encoder(model, images, targets, seed=0, device=args.device)
        cpu = time.process_time() - cpu
        per_epoch = record["seconds"] / max(record["epochs"], 1)
        print(f"train {objective:<15} {per_epoch:6.2f} s/epoch wall, {cpu / max(record['epochs'], 1):6.2f} s/epoch CPU, "
              f"{record['images_per_second']:7.1f} images/s, loss {record['loss'][0]:.4f} -> {record['loss'][-1]:.4f}")

    model = ve.build_encoder(ve.EncoderConfig(input_size=args.size), 384, 0)
    subset = images[: args.infer]
    ve.encoder_features(model, subset[:8], device=args.device)  # warm-up
    timings = {}
    for label, batch in (("batched (64)", 64), ("one by one", 1)):
        wall, cpu = time.perf_counter(), time.process_time()
        features = ve.encoder_features(model, subset, batch_size=batch, device=args.device)
        timings[label] = (time.perf_counter() - wall, time.process_time() - cpu, features)
    (bw, bc, bf), (ow, oc, of) = timings["batched (64)"], timings["one by one"]
    for label, (wall, cpu, _) in timings.items():
        print(f"infer {label:<13} {wall:6.2f} s wall, {cpu:6.2f} s CPU, {len(subset) / wall:7.1f} images/s")
    print(f"batched is {ow / bw:.1f}x faster than one by one (wall; CPU {oc / bc:.1f}x); largest feature difference "
          f"{float(np.abs(bf['embedding'] - of['embedding']).max()):.2e}")


if __name__ == "__main__":
    main()
