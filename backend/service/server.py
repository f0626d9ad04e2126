"""Run the backend API with uvicorn: the target of the process that ``launch.py`` spawns."""

from __future__ import annotations

import logging
import os


def serve(host: str = "127.0.0.1", port: int = 7861, prepare_demo: bool = True, log_level: str = "warning") -> None:
    """Serve until killed. Runs in its own (spawned) process so CUDA and model memory stay there."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="[backend] %(message)s")
    import uvicorn

    from backend.service.app import create_app

    uvicorn.run(create_app(prepare_demo=prepare_demo), host=host, port=port, log_level=log_level, access_log=False)
