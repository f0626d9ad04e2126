"""Resident models: each loads once and stays, until the memory budget needs its room.

``ModelPool.get(id)`` returns the wrapper for a model id, loading it on first use on the pool's
device in the dtype :func:`backend.models.device.pick_dtype` chooses. When a load would take the
resident models over ``budget_gb``, the least recently used ones are dropped first. Memory is the
spec's approximate ``memory_gb`` scaled to the dtype actually used (a float16 model run in float32
on CPU counts double). A model larger than the whole budget still loads, alone.

Thread-safe: loads happen one at a time (concurrent gets of one id load it once); gets of resident
models never wait for a load. ``loads`` counts loads per id, so callers can check that a cached
result did not load a model.
"""

from __future__ import annotations

import collections
import importlib
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import torch

from backend.models.device import dtype_bytes, empty_cache, pick_device, pick_dtype
from backend.models.registry import ModelSpec, get_model

log = logging.getLogger(__name__)

Loader = Callable[[ModelSpec, str, torch.dtype], Any]


#: Model kind -> the module whose ``CLASSES`` maps each architecture to its wrapper class.
_WRAPPER_MODULES = {
    "captioner": "backend.models.captioners",
    "text_embedder": "backend.models.text_embedders",
    "image_embedder": "backend.models.image_embedders",
    "text_to_image": "backend.models.text_to_image",
    "language_model": "backend.models.language_models",
}


def load_wrapper(spec: ModelSpec, device: str, dtype: torch.dtype):
    """The wrapper for ``spec`` (a Captioner, TextEmbedder, ImageEmbedder or TextToImage) on
    ``device``; ModelUnavailable if its weights are not here."""
    if spec.kind not in _WRAPPER_MODULES:
        raise ValueError(f"{spec.id}: unknown model kind {spec.kind!r}")
    classes = importlib.import_module(_WRAPPER_MODULES[spec.kind]).CLASSES
    if spec.architecture not in classes:
        kind = spec.kind.replace("_", " ")
        raise ValueError(f"{spec.id}: {spec.architecture!r} is not a {kind} architecture; supported: {sorted(classes)}")
    return classes[spec.architecture](spec, device, dtype)


def footprint_gb(spec: ModelSpec, dtype: torch.dtype) -> float:
    """Approximate resident size of ``spec`` in ``dtype`` (spec.memory_gb is at its default dtype)."""
    return spec.memory_gb * dtype_bytes(dtype) / dtype_bytes(spec.default_dtype)


def default_budget_gb(device: str) -> float:
    """``$CORTEXTUAL_MODEL_BUDGET_GB``, else 90% of the GPU's memory, else half the system RAM."""
    env = os.environ.get("CORTEXTUAL_MODEL_BUDGET_GB")
    if env:
        return float(env)
    if device.startswith("cuda"):
        return 0.9 * torch.cuda.get_device_properties(torch.device(device)).total_memory / 1e9
    try:
        return 0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):
        return 8.0


class ModelPool:
    def __init__(self, budget_gb: float | None = None, device: str | None = None,
                 loader: Loader = load_wrapper):
        self.device = device or pick_device()
        self.budget_gb = float(budget_gb) if budget_gb is not None else default_budget_gb(self.device)
        self.loads: collections.Counter[str] = collections.Counter()
        self._loader = loader
        self._resident: collections.OrderedDict[str, tuple[Any, float]] = collections.OrderedDict()  # LRU first
        self._lock = threading.Lock()  # guards _resident and loads
        self._load_lock = threading.Lock()  # one load at a time

    def get(self, model_id: str):
        """The resident wrapper for ``model_id``, loading it (once) if needed.

        Raises UnknownModel for an unknown id and ModelUnavailable when the weights are not here.
        """
        with self._lock:
            if model_id in self._resident:
                self._resident.move_to_end(model_id)
                return self._resident[model_id][0]
        spec = get_model(model_id)
        with self._load_lock:
            with self._lock:  # another thread may have loaded it while this one waited
                if model_id in self._resident:
                    self._resident.move_to_end(model_id)
                    return self._resident[model_id][0]
            dtype = pick_dtype(spec, self.device)
            need = footprint_gb(spec, dtype)
            self._make_room(need, model_id)
            wrapper = self._loader(spec, self.device, dtype)
            with self._lock:
                self._resident[model_id] = (wrapper, need)
                self.loads[model_id] += 1
            return wrapper

    def _make_room(self, need: float, for_id: str) -> None:
        evicted = []
        with self._lock:
            while self._resident and self._resident_gb() + need > self.budget_gb:
                old_id, _ = self._resident.popitem(last=False)
                evicted.append(old_id)
        if evicted:
            log.info("evicted %s to make room for %s", ", ".join(evicted), for_id)
            empty_cache()
        if need > self.budget_gb:
            log.warning("%s needs about %.1f GB, more than the whole model budget (%.1f GB); loading it alone",
                        for_id, need, self.budget_gb)

    def resident(self) -> list[str]:
        """Resident model ids, least recently used first."""
        with self._lock:
            return list(self._resident)

    def resident_gb(self) -> float:
        """Approximate memory of the resident models, GB."""
        with self._lock:
            return self._resident_gb()

    def _resident_gb(self) -> float:
        return sum(size for _, size in self._resident.values())

    def evict(self, model_id: str) -> bool:
        """Drop one model (in-flight work keeps its own reference until it finishes)."""
        with self._lock:
            found = self._resident.pop(model_id, None) is not None
        if found:
            empty_cache()
        return found

    def clear(self) -> None:
        with self._lock:
            self._resident.clear()
        empty_cache()
