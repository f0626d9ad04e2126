"""Which datasets exist, and opening them by id.

The catalog is the built-in demo world plus every complete dataset folder under the cache's
``datasets/`` (imports write there; half-written ones are hidden until renamed into place).
A path to any dataset folder also works as an id.
"""

from __future__ import annotations

import functools
import json
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from backend.config import datasets_dir, demo_world_size
from backend.data.demo.world import DEFAULT_SEED, DEMO_IDS, demo_folder_name, ensure_demo_world
from backend.data.folder import MANIFEST, load_folder
from backend.data.schema import Dataset, DatasetError


@dataclass(frozen=True)
class DatasetInfo:
    """What the dataset list shows without opening the arrays."""

    id: str
    name: str
    space: str
    n_stimuli: int | None
    n_units: int | None
    size_bytes: int | None
    simulated: bool
    ready: bool
    path: str | None
    description: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class UnknownDataset(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


_open_lock = threading.Lock()


def list_datasets(root: Path | None = None) -> list[DatasetInfo]:
    """Demo datasets first (listed even before they are generated), then imported ones by id."""
    root = Path(root) if root is not None else datasets_dir()
    demo_folders = {demo_folder_name(i, DEFAULT_SEED, *demo_world_size()): i for i in DEMO_IDS}
    infos = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        info = _info(folder, demo_folders.get(folder.name, folder.name))
        if info is not None:
            infos[info.id] = info
    for dataset_id in DEMO_IDS:
        if dataset_id not in infos:
            infos[dataset_id] = DatasetInfo(
                id=dataset_id,
                name=f"Demo world ({dataset_id.split('-')[1]}), generated on first use",
                space="surface" if dataset_id == "demo-human" else "neurons",
                n_stimuli=None,
                n_units=None,
                size_bytes=None,
                simulated=True,
                ready=False,
                path=None,
            )
    demo = [infos.pop(i) for i in DEMO_IDS]
    return demo + sorted(infos.values(), key=lambda info: info.id)


def open_dataset(dataset_id: str, root: Path | None = None) -> Dataset:
    """Open a dataset by catalog id or folder path (memoised per process)."""
    root = Path(root) if root is not None else datasets_dir()
    with _open_lock:
        return _open(dataset_id, str(root))


@functools.lru_cache(maxsize=16)
def _open(dataset_id: str, root: str) -> Dataset:
    if dataset_id in DEMO_IDS:
        folders = ensure_demo_world(root=Path(root))
        return load_folder(folders[dataset_id], dataset_id)
    folder = Path(root) / dataset_id
    if "/" not in dataset_id and (folder / MANIFEST).is_file():
        return load_folder(folder, dataset_id)
    path = Path(dataset_id).expanduser()
    if path.is_dir():
        return load_folder(path)
    raise UnknownDataset(f"unknown dataset {dataset_id!r}; `python launch.py datasets` lists them")


def _info(folder: Path, dataset_id: str) -> DatasetInfo | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    space = (manifest.get("unit_space") or {}).get("kind", "?")
    shape = _npy_shape(folder / str(manifest.get("responses", "responses.npy")))
    return DatasetInfo(
        id=dataset_id,
        name=str(manifest.get("name", folder.name)),
        space=space,
        n_stimuli=shape[0] if shape else None,
        n_units=shape[1] if shape and len(shape) > 1 else None,
        size_bytes=sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()),
        simulated=bool(manifest.get("simulated", False)),
        ready=True,
        path=str(folder),
        description=str(manifest.get("description", "")),
    )


def _npy_shape(path: Path) -> tuple[int, ...] | None:
    """The array shape from a .npy header, without reading the data."""
    import numpy as np

    try:
        with open(path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            reader = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, _ = reader(f)
        return tuple(shape)
    except (OSError, ValueError):
        return None


def forget_opened() -> None:
    """Drop memoised datasets (after an import or a regeneration)."""
    _open.cache_clear()


__all__ = ["DatasetError", "DatasetInfo", "UnknownDataset", "list_datasets", "open_dataset", "forget_opened"]
