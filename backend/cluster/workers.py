"""What runs on the Ray cluster: one model per actor, and encoding fits as tasks.

Actors are the callable classes Ray Data's ``map_batches`` pools (``ActorPoolStrategy``): each
loads its one model once (on the GPU Ray gave it, if any) and turns a batch of work items into
the exact bytes the backend's own stages store for them -- the same wrapper calls, the same
encodings -- so a result is the same whichever path computed it. Workers never touch the store:
the driver writes what comes back (the store is a file on the driver's machine).

Batches are numpy dicts (Ray Data's "numpy" format): ``key`` (the store key, str) and the input
column -- ``row`` (stimulus index) for captions, ``text`` for embeddings and generation; the
output adds ``data`` (bytes: UTF-8 caption, .npy vector, PNG image).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

#: Stage name -> the model method an actor calls.
TASKS = ("caption", "embed", "generate")


class ModelActor:
    """One model, resident for the actor's life, applied to batches of work items.

    ``die_once``: a file path; the first call that finds it absent creates it and ends the actor's
    process at once (how the tests and failure drills check that Ray retries a lost shard).
    """

    def __init__(
        self,
        task: str,
        model_id: str,
        *,
        params: dict | None = None,
        dataset_root: str | None = None,
        dataset_id: str | None = None,
        seed: int = 0,
        inner_batch: int = 8,
        die_once: str | None = None,
    ) -> None:
        from backend.models.pool import ModelPool

        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
        self.task, self.params, self.seed, self.inner_batch, self.die_once = task, dict(params or {}), seed, inner_batch, die_once
        # One model per actor: a pool holding just it (its device: the GPU Ray assigned, else CPU).
        self.model = ModelPool().get(model_id)
        self.ds = None
        if dataset_root is not None:
            from backend.data.folder import load_folder

            self.ds = load_folder(dataset_root, dataset_id)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.die_once and not Path(self.die_once).exists():
            Path(self.die_once).write_text(f"killed actor process {os.getpid()}\n")
            os._exit(1)  # as a crash or a lost node would: no cleanup, no exception to catch
        if self.task == "caption":
            data = self._caption([int(i) for i in batch["row"]])
        elif self.task == "embed":
            data = self._embed([str(t) for t in batch["text"]])
        else:
            data = self._generate([str(t) for t in batch["text"]])
        return {"key": batch["key"], "data": np.array(data, dtype=object)}

    def _caption(self, rows: list[int]) -> list[bytes]:
        from backend.stages.inputs import load_images

        texts = self.model.caption(
            load_images(self.ds, rows), references=[self.ds.stimuli.captions[i] for i in rows], batch_size=self.inner_batch, **self.params
        )
        return [t.encode("utf-8") for t in texts]

    def _embed(self, texts: list[str]) -> list[bytes]:
        from backend.cache import array_to_npy

        vectors = np.asarray(self.model.embed(texts, batch_size=self.inner_batch), dtype=np.float32)
        return [array_to_npy(v) for v in vectors]

    def _generate(self, prompts: list[str]) -> list[bytes]:
        from backend.stages.images import _png

        size, steps = self.params.get("size"), self.params.get("steps")
        images = self.model.generate(prompts, seeds=[self.seed] * len(prompts), size=size, steps=steps, batch_size=self.inner_batch)
        return [_png(image) for image in images]


def fit_encoding_task(features: np.ndarray, responses: np.ndarray, train: np.ndarray, test: np.ndarray, noise_ceiling, method: str, alphas) -> dict:
    """One encoding fit (a Ray task): ridge from ``features`` float32 [n_stimuli, d] to every
    unit of ``responses`` float32 [n_stimuli, n_units], scored on ``test`` rows.

    ``responses`` and ``noise_ceiling`` (float32 [n_units] or None) arrive from the object store,
    shared by every fit on the dataset (read-only, not copied). Runs the backend's own
    :func:`~backend.stages.encoding.encode_features`; returns its parts by name.
    """
    from types import SimpleNamespace

    from backend.stages.encoding import PARTS, encode_features

    splits = {"train": np.asarray(train), "test": np.asarray(test)}
    view = SimpleNamespace(  # the few Dataset attributes encode_features reads
        id="ray", responses=responses, noise_ceiling=noise_ceiling, n_units=responses.shape[1],
        stimuli=SimpleNamespace(indices=lambda split: splits[split]),
    )
    result = encode_features(view, features, method=method, alphas=alphas)
    return {part: getattr(result, part) for part in PARTS}
