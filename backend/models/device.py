"""Device and dtype policy, and running a model over many items in batches.

Device: CUDA, then Apple MPS, then CPU (``$CORTEXTUAL_DEVICE`` overrides). Dtype: the spec's
default (float16 / bfloat16) on CUDA -- bfloat16 falls back to float16 on GPUs without it --
and float32 on CPU and MPS, where half precision is slow or numerically unreliable for these
models (``$CORTEXTUAL_DTYPE`` overrides everywhere).

:func:`run_batched` is the one loop every wrapper uses: progress after each batch, a cancel check
between batches, and on a GPU out-of-memory error it frees the cache, halves the batch and retries.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

from backend.models.registry import DTYPES, ModelSpec

log = logging.getLogger(__name__)

T = TypeVar("T")
Progress = Callable[[int, int], None]

DEVICES = ("cuda", "mps", "cpu")


class Cancelled(Exception):
    """The caller's cancel() returned True; raised between batches, never mid-batch."""


def pick_device(prefer: str | None = None) -> str:
    """"cuda", "mps" or "cpu": ``prefer`` or ``$CORTEXTUAL_DEVICE`` if set, else the best there is.

    An explicitly requested device that is not available raises ValueError (never a silent CPU).
    """
    wanted = prefer or os.environ.get("CORTEXTUAL_DEVICE") or None
    if wanted:
        kind = wanted.split(":")[0]
        if kind not in DEVICES:
            raise ValueError(f"unknown device {wanted!r}; expected one of {list(DEVICES)}")
        if (kind == "cuda" and not torch.cuda.is_available()) or (kind == "mps" and not _mps_available()):
            raise ValueError(f"device {wanted!r} was requested but is not available here")
        return wanted
    if torch.cuda.is_available():
        return "cuda"
    if _mps_available():
        return "mps"
    return "cpu"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def pick_dtype(spec: ModelSpec, device: str) -> torch.dtype:
    """The dtype ``spec`` runs in on ``device`` (see the module docstring)."""
    override = os.environ.get("CORTEXTUAL_DTYPE")
    if override:
        if override not in DTYPES:
            raise ValueError(f"CORTEXTUAL_DTYPE={override!r}: expected one of {list(DTYPES)}")
        return getattr(torch, override)
    if not device.startswith("cuda"):
        return torch.float32
    if spec.default_dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return getattr(torch, spec.default_dtype)


def dtype_bytes(dtype: torch.dtype | str) -> int:
    return torch.empty((), dtype=getattr(torch, dtype) if isinstance(dtype, str) else dtype).element_size()


def dtype_kwargs(library: str, dtype: torch.dtype) -> dict[str, torch.dtype]:
    """``from_pretrained`` keyword for the dtype: newer transformers/diffusers call it ``dtype``
    and warn on the old ``torch_dtype``; older ones only know ``torch_dtype``."""
    from importlib.metadata import version

    from packaging.version import Version

    new_from = {"transformers": "4.56", "diffusers": "0.36"}[library]
    return {"dtype" if Version(version(library)) >= Version(new_from) else "torch_dtype": dtype}


def empty_cache() -> None:
    """Give cached GPU memory back (after an eviction or an out-of-memory error)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif _mps_available():
        torch.mps.empty_cache()


def _is_oom(err: BaseException) -> bool:
    # MPS reports running out as a plain RuntimeError.
    return isinstance(err, torch.cuda.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "MPS backend out of memory" in str(err))


def run_batched(
    fn: Callable[[list[T]], Sequence[Any]],
    items: Sequence[T],
    batch_size: int,
    progress: Progress | None = None,
    cancel: Callable[[], bool] | None = None,
) -> list[Any]:
    """``fn`` over ``items`` in order, ``batch_size`` at a time; one result per item, flattened.

    ``fn(batch)`` must return one result per item of ``batch`` (a list, or an array whose first
    axis is the batch). ``progress(done, total)`` follows each batch; ``cancel()`` is checked
    before each batch and raises :class:`Cancelled`. On out-of-memory the batch is retried at
    half the size (and stays smaller for the rest of the run); at size 1 the error is re-raised
    with a message saying so.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    total = len(items)
    results: list[Any] = []
    start = 0
    while start < total:
        if cancel is not None and cancel():
            raise Cancelled(f"cancelled after {start} of {total}")
        batch = list(items[start:start + batch_size])
        try:
            out = fn(batch)
        except Exception as err:
            if not _is_oom(err):
                raise
            empty_cache()
            if batch_size == 1:
                detail = str(err).splitlines()[0] if str(err) else "no detail"
                raise torch.cuda.OutOfMemoryError(
                    f"out of GPU memory even at batch size 1 ({detail}); free GPU memory "
                    f"(a smaller model budget, fewer resident models) or use a smaller model"
                ) from err
            batch_size = max(1, batch_size // 2)
            log.warning("out of GPU memory; retrying with batch size %d", batch_size)
            continue
        if len(out) != len(batch):
            raise RuntimeError(f"batch function returned {len(out)} results for {len(batch)} items")
        results.extend(out)
        start += len(batch)
        if progress is not None:
            progress(start, total)
    return results
