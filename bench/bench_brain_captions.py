"""The brain-language model's costs with the real SmolLM2-135M-Instruct: GGUF conversion and load,
training steps of the prefix decoder (alignment and LM steps) and of the Brain Q-Former, and
batched against one-by-one caption generation for both.

    .venv/bin/python bench/bench_brain_captions.py [--steps 5] [--batch 16] [--captions 16] [--align-steps 100] [--device cpu]

Uses a scratch cache (the conversion is timed from scratch) and the demo world's reference
captions when the default demo world is in the cache, else a few written here.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CAPTIONS = [
    "a large castle in front of a small cactus at sunset", "a small egg to the right of a small hamburger on a city street",
    "a large sunflower between a large bird and a small bus on a beach", "a small umbrella to the left of a large banana",
    "a large umbrella below a large car in a snowy landscape", "a dog to the left of a red car under a night sky",
    "a small cat above a large tree in a grassy field", "a large bus in front of a small house at sunset",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="training steps to time (after one warm-up step)")
    parser.add_argument("--batch", type=int, default=16, help="captions per training step")
    parser.add_argument("--captions", type=int, default=16, help="captions to generate, batched and one by one")
    parser.add_argument("--align-steps", type=int, default=100, help="alignment steps of the soft-token prefix to time")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    os.environ["CORTEXTUAL_CACHE"] = tempfile.mkdtemp(prefix="cortextual-bench-")
    import numpy as np
    import torch

    from backend.models.gguf import converted_dir, file_sha256
    from backend.models.pool import ModelPool
    from backend.models.brain_qformer import QFormerConfig, brain_groups, generate_qformer_captions, train_qformer
    from backend.models.prefix_decoder import PrefixConfig, generate_captions, train_prefix_decoder
    from backend.models.text_embedders import embed_texts
    from backend.models.weights import gguf_file

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    t0 = time.perf_counter()
    lm = ModelPool(device=args.device).get("HuggingFaceTB/SmolLM2-135M-Instruct")
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    ModelPool(device=args.device).get("HuggingFaceTB/SmolLM2-135M-Instruct")
    second = time.perf_counter() - t0
    folder = converted_dir(file_sha256(gguf_file(lm.spec)))
    print(f"first load (GGUF dequantised + saved): {first:6.1f} s   ({(folder / '.converted').read_text().splitlines()[-1]})")
    print(f"later load (converted safetensors):     {second:6.1f} s   ratio {first / second:5.1f}x")

    texts = (CAPTIONS * (args.batch // len(CAPTIONS) + 1))[: max(args.batch, args.captions)]
    vectors = embed_texts(texts)
    config = PrefixConfig(steps=args.steps + 1, batch_size=args.batch, align_steps=args.align_steps)
    c0 = time.process_time()
    mapper, history = train_prefix_decoder(lm, vectors, texts, config)
    per_step = history["step_seconds"]
    print(f"prefix decoder ({config.mapper}): {args.align_steps} alignment steps {history['align_seconds']:.1f} s "
          f"({history['align_seconds'] / max(1, args.align_steps) * 1000:.1f} ms each, no LM pass); LM step "
          f"({args.batch} captions): {per_step:.2f} s (mean of {config.steps}); CPU {time.process_time() - c0:.1f} s")
    timing("prefix decoder", lambda rows, b: generate_captions(lm, mapper, rows, batch_size=b), vectors[: args.captions])

    # The Brain Q-Former on random responses of 2,000 units in 8 regions (its cost is the LM's).
    rng = np.random.default_rng(0)
    responses = rng.normal(size=(len(texts), 2000)).astype(np.float32)
    groups = brain_groups(np.repeat(np.arange(8), 250), 512)
    qconfig = QFormerConfig(steps=args.steps + 1, batch_size=args.batch)
    model, qhistory = train_qformer(lm, responses, groups, texts, vectors, qconfig)
    print(f"Brain Q-Former: training step ({args.batch} pairs, {qconfig.queries} queries, {model.n_tokens} brain tokens): "
          f"{qhistory['step_seconds']:.2f} s (mean of {qconfig.steps})")
    timing("Brain Q-Former", lambda rows, b: generate_qformer_captions(lm, model, rows, batch_size=b), responses[: args.captions])


def timing(name, generate, rows) -> None:
    """Batched against one-by-one generation of the same rows: seconds, ratio, identical captions."""
    import numpy as np

    t0 = time.perf_counter()
    batched = generate(rows, len(rows))
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    single = generate(rows, 1)
    t_single = time.perf_counter() - t0
    same = np.mean([a == b for a, b in zip(batched, single, strict=True)])
    print(f"{name}: generate {len(rows)} captions: batched {t_batched:.1f} s, one by one {t_single:.1f} s, "
          f"ratio {t_single / t_batched:.1f}x; identical captions {same:.0%}")


if __name__ == "__main__":
    main()
