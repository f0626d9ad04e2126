"""The backend's HTTP API (FastAPI; its OpenAPI schema is served at /openapi.json).

Routers: datasets (quick queries), models (the registry and what is downloaded), stages (jobs
that caption, embed and generate, with progress, and their cached outputs), manifolds. Errors come
back as ``{"detail": "one line"}`` with the 4xx statuses each route declares (422: FastAPI's
validation list); request bodies are capped (413); nothing a client sends can stop the process.
"""

from __future__ import annotations

import logging
import traceback

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

import backend
from backend.data import catalog
from backend.data.schema import DatasetError
from backend.models.registry import UnknownModel
from backend.models.weights import ModelUnavailable
from backend.service import brain_captions_api, datasets_api, manifolds_api, models_api, stages_api, switch_api, visual_encoders_api
from backend.service.limits import MAX_BODY_BYTES, RequestLimits
from backend.service.state import Services

log = logging.getLogger("cortextual.backend")


def create_app(prepare_demo: bool = True, max_body: int = MAX_BODY_BYTES, wrap_pool=None, store=None) -> FastAPI:
    """The API; with ``prepare_demo`` the demo world starts generating at once if it is missing;
    ``wrap_pool`` wraps the model pool (Spaces mode: GPU calls through ``spaces.GPU``); ``store``:
    the stage-output store (default: the cache's)."""
    app = FastAPI(title="Cortextual backend", version=backend.__version__)
    app.state.services = Services(prepare_demo=prepare_demo, wrap_pool=wrap_pool, store=store)
    routers = [datasets_api.router, models_api.router, stages_api.router, manifolds_api.router, brain_captions_api.router,
               switch_api.router, visual_encoders_api.router]
    for router in routers:
        app.include_router(router)

    def leaf_routes() -> list:
        # The routers' own routes (no prefixes here) and the app's (/openapi.json, /docs).
        own = [r for r in app.routes if hasattr(r, "path") and hasattr(r, "methods")]
        return own + [r for router in routers for r in router.routes]

    app.add_middleware(RequestLimits, routes=leaf_routes, max_body=max_body)

    @app.exception_handler(DatasetError)
    async def _dataset_error(_: Request, err: DatasetError) -> JSONResponse:
        return JSONResponse(status_code=409, content={"detail": str(err).splitlines()[0]})

    @app.exception_handler(catalog.UnknownDataset)
    async def _unknown(_: Request, err: catalog.UnknownDataset) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(err)})

    @app.exception_handler(UnknownModel)
    async def _unknown_model(_: Request, err: UnknownModel) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(err)})

    @app.exception_handler(ModelUnavailable)
    async def _unavailable(_: Request, err: ModelUnavailable) -> JSONResponse:
        return JSONResponse(status_code=409, content={"detail": str(err)})

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, err: Exception) -> JSONResponse:
        log.error("unexpected error:\n%s", traceback.format_exc())
        # The message may name server files: it stays in the log, the client gets the kind only.
        return JSONResponse(status_code=500, content={"detail": f"internal error ({type(err).__name__}); see the backend log"})

    return app
