"""Which datasets exist, and opening them by id.

The catalog is the built-in demo world, every complete dataset folder under the cache's
``datasets/`` (imports write there; half-written ones are hidden until renamed into place), and
folders elsewhere that the launcher linked in (``launch.py --dataset DIR``), each under an id.
Datasets are opened by id only: an id is a plain name (:mod:`backend.data.ids`), never a path, so
nothing a client sends can make the backend open a folder the catalog does not hold.
"""

from __future__ import annotations

import functools
import json
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from backend.cache import write_bytes_atomic
from backend.config import cache_dir, datasets_dir, demo_world_size
from backend.data.demo.world import DEFAULT_SEED, DEMO_IDS, demo_folder_name, ensure_demo_world
from backend.data.folder import MANIFEST, check_stimulus_images, load_folder
from backend.data.ids import id_from_name, is_dataset_id
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
    description: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class UnknownDataset(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


_open_lock = threading.Lock()
_link_lock = threading.Lock()
LINKS_FILE = "linked-datasets.json"


def list_datasets(root: Path | None = None) -> list[DatasetInfo]:
    """Demo datasets first (listed even before they are generated), then imported ones by id."""
    root = Path(root) if root is not None else datasets_dir()
    demo_folders = {demo_folder_name(i, DEFAULT_SEED, *demo_world_size()): i for i in DEMO_IDS}
    infos = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        dataset_id = demo_folders.get(folder.name, folder.name)
        info = _info(folder, dataset_id) if is_dataset_id(dataset_id) else None
        if info is not None:
            infos[info.id] = info
    for dataset_id, folder in linked_folders().items():
        if dataset_id not in infos:
            info = _info(folder, dataset_id)
            if info is not None:
                infos[dataset_id] = info
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
            )
    demo = [infos.pop(i) for i in DEMO_IDS]
    return demo + sorted(infos.values(), key=lambda info: info.id)


def open_dataset(dataset_id: str, root: Path | None = None) -> Dataset:
    """Open a dataset by catalog id (memoised per process); :class:`UnknownDataset` for
    anything else, paths included (see :func:`link_folder`)."""
    if not is_dataset_id(dataset_id):
        shown = dataset_id if isinstance(dataset_id, str) and len(dataset_id) <= 80 else f"{str(dataset_id)[:80]}..."
        raise UnknownDataset(f"no dataset {shown!r}: ids are plain names (letters, digits, '.', '_', '-'), not paths")
    root = Path(root) if root is not None else datasets_dir()
    with _open_lock:
        return _open(dataset_id, str(root))


@functools.lru_cache(maxsize=16)
def _open(dataset_id: str, root: str) -> Dataset:
    if dataset_id in DEMO_IDS:
        folders = ensure_demo_world(root=Path(root))
        return load_folder(folders[dataset_id], dataset_id)
    folder = Path(root) / dataset_id
    if (folder / MANIFEST).is_file():
        return load_folder(folder, dataset_id)
    linked = linked_folders().get(dataset_id)
    if linked is not None:
        return load_folder(linked, dataset_id)
    raise UnknownDataset(f"unknown dataset {dataset_id!r}; `python launch.py datasets` lists them")


# ---------------------------------------------------------------------------- linked folders


def _links_path() -> Path:
    return cache_dir() / LINKS_FILE


def linked_folders() -> dict[str, Path]:
    """id -> folder of every dataset folder linked into the catalog (whether it still exists or not)."""
    try:
        links = json.loads(_links_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(links, dict):
        return {}
    return {k: Path(v) for k, v in links.items() if is_dataset_id(k) and isinstance(v, str)}


def link_folder(folder: str | Path, dataset_id: str | None = None) -> str:
    """Put a dataset folder that lives outside the cache into the catalog; returns its id.

    The folder is checked completely first (:class:`DatasetError` names what is wrong). Its id is
    ``dataset_id`` or one made from the folder's name; linking the same folder again returns the
    same id, and a name already taken by another dataset gets a numbered suffix. This is a
    launcher action (``launch.py --dataset DIR``): the API never takes paths.
    """
    folder = Path(folder).expanduser().resolve()
    check_stimulus_images(load_folder(folder))  # a one-line DatasetError for a bad folder or image
    with _link_lock:
        links = {k: str(v) for k, v in linked_folders().items()}
        for existing, path in links.items():
            if Path(path) == folder and (dataset_id is None or dataset_id == existing):
                return existing
        if dataset_id is not None and not is_dataset_id(dataset_id):
            raise DatasetError(f"dataset id {dataset_id!r}: use a plain name such as 'my-experiment'")
        base = dataset_id or id_from_name(folder.name)
        taken = set(links) | set(DEMO_IDS) | {p.name for p in datasets_dir().iterdir()}
        chosen, k = base, 2
        while chosen in taken:
            suffix = f"-{k}"
            chosen, k = base[: 64 - len(suffix)] + suffix, k + 1
        links[chosen] = str(folder)
        write_bytes_atomic(_links_path(), json.dumps(links, indent=1, sort_keys=True).encode())
    forget_opened()
    return chosen


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


__all__ = [
    "DatasetError", "DatasetInfo", "UnknownDataset", "list_datasets", "open_dataset", "forget_opened", "link_folder", "linked_folders",
]
