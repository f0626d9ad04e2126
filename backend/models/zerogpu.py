"""GPU entry points for Hugging Face Spaces' ZeroGPU, and a no-op everywhere else.

ZeroGPU attaches a GPU only while a function decorated with ``@spaces.GPU`` runs, called in the
Space's main process during a Gradio request (its token pays for the GPU time). The function runs
in a forked worker of the main process: its arguments and its result are pickled, and whatever
it changes in memory is lost when it returns. ``import spaces`` must happen before torch touches
CUDA (``spaces`` patches torch so that models can be moved to "cuda" in the main process).

So the GPU entry points here are pure: (model id, method, picklable inputs) -> picklable outputs
(captions, float32 arrays, PIL images). The caller -- a stage, in the main process -- loads the
model first (the fork inherits it) and writes the results to the store. :class:`GpuPool` puts
that in front of a :class:`~backend.models.pool.ModelPool`, so the stages run unchanged: each
chunk a stage hands to ``pool.get(id).caption/embed/generate`` becomes one GPU call, with a
duration sized to the chunk (see :data:`SECONDS`). Simulated models never ask for a GPU.

How the job queue fits: the backend runs GPU work as jobs on its worker thread, while the page's
request that started the job stays open following its progress. The queue runs each job in a copy
of the context of the request that submitted it (contextvars), so ``spaces.GPU`` there sees that
Gradio request -- the same as calling it from the request itself -- and charges that visitor.

Off Spaces (no ``SPACE_ID``, nor ``--spaces``), or where ``spaces`` is not installed, nothing is
wrapped; off ZeroGPU ``spaces.GPU`` itself returns the function unchanged.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from typing import Any

#: GPU seconds a call asks ZeroGPU for: (fixed, per item), by method; capped at MAX_SECONDS.
#: Fixed covers moving the resident model onto the GPU in a fresh worker; per item is a
#: generous figure for a large model of the kind on ZeroGPU's GPU (BLIP-2 / SDXL-Turbo scale).
SECONDS: dict[str, tuple[float, float]] = {
    "caption": (15.0, 1.0),  # a chunk of 32 images: 47 s
    "embed": (10.0, 0.05),  # 256 texts: 23 s (images are embedded 32 at a time by their stage)
    "generate": (15.0, 3.0),  # 8 images: 39 s
    "train": (30.0, 1.0),  # per optimisation step
}
MAX_SECONDS = 120  # ZeroGPU's longest task for most accounts

_GPU_FUNCTIONS: dict[str, Callable] = {}
_POOL = None  # the ModelPool the GPU functions read their models from (see GpuPool)


def spaces_mode() -> bool:
    """Whether this process runs as a Hugging Face Space (``SPACE_ID`` is set there) or was asked
    to act as one (``launch.py --spaces`` sets ``CORTEXTUAL_SPACES=1``)."""
    return bool(os.environ.get("SPACE_ID")) or os.environ.get("CORTEXTUAL_SPACES") == "1"


def import_spaces():
    """The ``spaces`` module in Spaces mode if it is installed, else None. Call it before anything
    touches CUDA (launch.py does, first thing, in Spaces mode)."""
    if not spaces_mode():
        return None
    if "spaces" in sys.modules:
        return sys.modules["spaces"]
    try:
        import spaces
    except ImportError:
        return None
    return spaces


def duration_seconds(kind: str, n_items: int) -> int:
    """Seconds to ask ZeroGPU for a call of ``kind`` over ``n_items`` items."""
    fixed, per_item = SECONDS[kind]
    return int(min(MAX_SECONDS, math.ceil(fixed + per_item * max(0, n_items))))


def gpu(kind: str, items: Callable[..., int] = lambda *a, **k: 1) -> Callable[[Callable], Callable]:
    """Decorator: ``spaces.GPU(duration=...)`` over ``fn`` in Spaces mode, else ``fn`` itself.

    ``items(*args, **kwargs)`` says how many items a call holds (its duration scales with it).
    For module-level functions whose arguments pickle, e.g. a training step of issue 9's models:
    ``@gpu("train", items=lambda steps, **_: steps)``.
    """

    def decorate(fn: Callable) -> Callable:
        spaces = import_spaces()
        if spaces is None:
            return fn
        return spaces.GPU(fn, duration=lambda *a, **k: duration_seconds(kind, items(*a, **k)))

    return decorate


def _run_method(model_id: str, method: str, args: tuple, kwargs: dict) -> Any:
    """Inside the GPU worker: the resident model's ``method(*args, **kwargs)``. The main process
    loaded the model before calling (a worker forked since then has it); an older worker that
    does not loads it itself and keeps it while ZeroGPU reuses that worker."""
    return getattr(_POOL.get(model_id), method)(*args, **kwargs)


def _n_items(model_id: str, method: str, args: tuple, kwargs: dict) -> int:
    return len(args[0]) if args else 1


# One function object per kind: ``spaces`` keeps one decorated function (and its duration) per
# function object, so the kinds must not share one.
def _caption_call(model_id: str, method: str, args: tuple, kwargs: dict) -> Any:
    return _run_method(model_id, method, args, kwargs)


def _embed_call(model_id: str, method: str, args: tuple, kwargs: dict) -> Any:
    return _run_method(model_id, method, args, kwargs)


def _generate_call(model_id: str, method: str, args: tuple, kwargs: dict) -> Any:
    return _run_method(model_id, method, args, kwargs)


_CALLS = {"caption": _caption_call, "embed": _embed_call, "generate": _generate_call}


def gpu_function(kind: str) -> Callable:
    """The GPU entry point for ``kind`` ("caption", "embed", "generate"), decorated on first use
    (by then launch.py has imported ``spaces`` in Spaces mode)."""
    if kind not in _GPU_FUNCTIONS:
        _GPU_FUNCTIONS[kind] = gpu(kind, items=_n_items)(_CALLS[kind])
    return _GPU_FUNCTIONS[kind]


class GpuPool:
    """A :class:`~backend.models.pool.ModelPool` whose models' ``caption``, ``embed`` and
    ``generate`` run as ZeroGPU calls (everything else is the pool's own)."""

    def __init__(self, pool) -> None:
        global _POOL
        self._pool = pool
        _POOL = pool  # module-level: a forked GPU worker finds it without pickling models

    def get(self, model_id: str):
        wrapper = self._pool.get(model_id)  # loads in the main process, so the fork inherits it
        if getattr(getattr(wrapper, "spec", None), "simulated", False):
            return wrapper  # the demo world's stand-ins need no GPU
        return _GpuModel(model_id, wrapper)

    def __getattr__(self, name: str):
        return getattr(self._pool, name)


class _GpuModel:
    """A resident model seen through the GPU entry points. Callbacks (progress, cancel) cannot
    cross into the GPU worker: cancel is checked before each call, and the stages call once per
    chunk, so progress and cancel still follow every chunk."""

    def __init__(self, model_id: str, wrapper) -> None:
        self._id, self._wrapper = model_id, wrapper

    def __getattr__(self, name: str):
        return getattr(self._wrapper, name)

    def _call(self, kind: str, method: str, items, kwargs: dict):
        from backend.models.device import Cancelled

        cancel = kwargs.pop("cancel", None)
        kwargs.pop("progress", None)
        if cancel is not None and cancel():
            raise Cancelled()
        return gpu_function(kind)(self._id, method, (list(items),), kwargs)

    def caption(self, images, **kwargs) -> list[str]:
        return self._call("caption", "caption", images, kwargs)

    def embed(self, items, **kwargs):
        return self._call("embed", "embed", items, kwargs)

    def generate(self, prompts, **kwargs):
        return self._call("generate", "generate", prompts, kwargs)
