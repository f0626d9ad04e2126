"""What the backend process holds: the store, the model pool, the job queue, demo preparation."""

from __future__ import annotations

import logging
import threading
import traceback
from typing import Annotated

from fastapi import HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from backend.analysis.manifolds import warm_kernels_in_background
from backend.cache import Store
from backend.data import catalog
from backend.data.demo.world import DEMO_IDS, ensure_demo_world
from backend.data.ids import DATASET_ID_PATTERN, MAX_ID_LENGTH
from backend.data.schema import Dataset
from backend.service.jobs import JobQueue

log = logging.getLogger("cortextual.backend")

_ID_HELP = "a dataset id from GET /api/datasets (a plain name, never a path)"
#: A dataset id in a URL path, and in a job body: checked against the one id pattern.
DatasetId = Annotated[
    str, Path(pattern=DATASET_ID_PATTERN, max_length=MAX_ID_LENGTH, description=_ID_HELP, examples=["demo-human"])
]
DatasetField = Annotated[
    str, Field(pattern=DATASET_ID_PATTERN, max_length=MAX_ID_LENGTH, description=_ID_HELP, examples=["demo-human"])
]
_SEED_HELP = "random seed (0 to 2**32 - 1): the same seed gives the same result"
#: A random seed in a job body / a query: numpy and torch both take it.
SeedField = Annotated[int, Field(ge=0, le=2**32 - 1, description=_SEED_HELP)]
SeedQuery = Annotated[int, Query(ge=0, le=2**32 - 1, description=_SEED_HELP)]


class ApiRequest(BaseModel):
    """Base of every JSON job body: types are strict, as the schema says (``false`` is not a seed,
    ``"3"`` is not a step count), so what the API accepts is what its OpenAPI schema declares.

    JSON Schema counts 3.0 as an integer, so integral floats (top level and in lists) become ints
    first; float fields take ints anyway.
    """

    model_config = ConfigDict(strict=True)

    @model_validator(mode="before")
    @classmethod
    def _integral_floats_are_ints(cls, data):
        if not isinstance(data, dict):
            return data
        return {key: _as_int_if_integral(value) for key, value in data.items()}


def _as_int_if_integral(value):
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [int(v) if isinstance(v, float) and v.is_integer() else v for v in value]
    return value


class DemoPreparation:
    """Generates the demo world in a background thread and tells how far it got."""

    def __init__(self) -> None:
        self.state = "idle"
        self.stage = ""
        self.fraction = 0.0
        self.error: str | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self.state = "generating"
            self._thread = threading.Thread(target=self._run, name="demo-world", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            ensure_demo_world(progress=self._progress)
            self.state, self.fraction = "ready", 1.0
            warm_kernels_in_background()  # the manifold panel's first UMAP then loads, not compiles
        except Exception as err:  # reported through /api/health, never raised in a request
            log.error("demo world generation failed:\n%s", traceback.format_exc())
            self.state, self.error = "failed", f"{type(err).__name__}: {err}"

    def _progress(self, stage: str, fraction: float) -> None:
        if stage != self.stage:
            log.info("demo world: %s (%.0f%%)", stage, 100 * fraction)
        self.stage, self.fraction = stage, fraction

    def as_dict(self) -> dict:
        return {"state": self.state, "stage": self.stage, "fraction": round(self.fraction, 3), "error": self.error}


class Services:
    """Shared by every request. The model pool is created on first use (it picks the device);
    ``wrap_pool`` (e.g. backend.models.zerogpu.GpuPool in Spaces mode) wraps it then."""

    def __init__(self, prepare_demo: bool = True, wrap_pool=None, store: Store | None = None) -> None:
        self.demo = DemoPreparation()
        self.store = store if store is not None else Store()
        self.jobs = JobQueue(store=self.store)
        self._pool = None
        self._wrap_pool = wrap_pool
        self._pool_lock = threading.Lock()
        if prepare_demo:
            self.demo.start()

    @property
    def pool(self):
        with self._pool_lock:
            if self._pool is None:
                from backend.models.pool import ModelPool

                self._pool = ModelPool()
                if self._wrap_pool is not None:
                    self._pool = self._wrap_pool(self._pool)
            return self._pool

    def dataset(self, dataset_id: str) -> Dataset:
        if dataset_id in DEMO_IDS and self.demo.state == "generating":
            raise HTTPException(
                503, f"the demo world is being generated ({self.demo.stage}, {100 * self.demo.fraction:.0f}%); try again shortly"
            )
        return catalog.open_dataset(dataset_id)


def services(request: Request) -> Services:
    """FastAPI dependency: the process's :class:`Services`."""
    return request.app.state.services


def stimulus_row(ds: Dataset, index: int) -> int:
    if not 0 <= index < ds.n_stimuli:
        raise HTTPException(404, f"dataset {ds.id!r} has stimuli 0..{ds.n_stimuli - 1}, not {index}")
    return index
