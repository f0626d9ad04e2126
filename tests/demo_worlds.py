"""The demo world the slow truth tests share: 1,000 training stimuli, generated once into the
suite's cache (ensure_demo_world is safe across processes), opened directly."""

from __future__ import annotations


def truth_human(n_test: int):
    """The simulated human of the 1,000-training-stimulus demo world with ``n_test`` test stimuli."""
    from backend.data.demo.world import ensure_demo_world
    from backend.data.folder import load_folder

    folders = ensure_demo_world(n_train=1000, n_test=n_test)
    return load_folder(folders["demo-human"], "demo-human")
