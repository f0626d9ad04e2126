"""Where Cortextual keeps what it generates or imports.

Everything lives under one cache directory, ``$CORTEXTUAL_CACHE`` or ``~/.cache/cortextual``:

    datasets/<id>/      one dataset each, in the folder format of :mod:`backend.data.folder`
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The root of everything Cortextual writes (created on demand)."""
    root = Path(os.environ.get("CORTEXTUAL_CACHE") or Path.home() / ".cache" / "cortextual")
    root.mkdir(parents=True, exist_ok=True)
    return root


def datasets_dir() -> Path:
    path = cache_dir() / "datasets"
    path.mkdir(parents=True, exist_ok=True)
    return path



def demo_world_size() -> tuple[int, int]:
    """(training, test) stimuli of the demo world: ``$CORTEXTUAL_DEMO_SIZE`` as "1000x200" (the default)."""
    text = os.environ.get("CORTEXTUAL_DEMO_SIZE", "1000x200")
    try:
        n_train, n_test = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"CORTEXTUAL_DEMO_SIZE={text!r}: expected TRAINxTEST, e.g. 1000x200") from None
    if n_train < 10 or n_test < 5:
        raise ValueError(f"CORTEXTUAL_DEMO_SIZE={text!r}: needs at least 10 training and 5 test stimuli")
    return n_train, n_test
