"""Resumable, atomic staging of an imported dataset folder, shared by every importer.

An import writes into a hidden folder ``.<id>.partial/`` beside its final place under
``datasets_dir()`` (the catalog skips names that start with "."), records each finished step as a
marker file, and renames the folder into place only once the manifest, written last, is there.
So a killed import leaves nothing the app lists, and rerunning the same command picks up after
the last finished step. A rerun with different options or different source files starts afresh.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from backend.config import datasets_dir
from backend.data.folder import FORMAT, MANIFEST
from backend.data.schema import DatasetError
from backend.data.ids import is_dataset_id

Progress = Callable[[str, float], None]
_PARAMS = ".import-params.json"
_DONE = ".done"


def reporter(progress: Progress | None) -> Progress:
    """The caller's progress callback, or one that does nothing."""
    return progress or (lambda stage, fraction: None)


def check_dataset_id(dataset_id: str) -> str:
    """A dataset id is a plain name (:mod:`backend.data.ids`): the catalog and the API take no other."""
    if not is_dataset_id(dataset_id):
        raise DatasetError(f"dataset id {dataset_id!r}: use a plain name such as 'nsd-subj01' (letters, digits, '.', '_', '-'; at most 64)")
    return dataset_id


def fingerprint_files(paths: list[Path]) -> list[list]:
    """[name, size, mtime] per source file: a rerun after the sources changed starts afresh."""
    out = []
    for path in sorted(paths):
        st = path.stat()
        out.append([str(path), st.st_size, int(st.st_mtime)])
    return out


class Staging:
    """The hidden folder an import fills, with per-step markers and a lock.

    Use as a context manager; call :meth:`finish` with the manifest at the end. ``params`` is
    everything that determines the output (importer kind, options, source file fingerprints);
    a partial folder left by a run with other params is discarded.
    """

    def __init__(self, dataset_id: str, params: dict, *, dest_root: Path | None = None, overwrite: bool = False):
        self.id = check_dataset_id(dataset_id)
        self.root = Path(dest_root) if dest_root is not None else datasets_dir()
        self.final = self.root / self.id
        self.partial = self.root / f".{self.id}.partial"
        self.params = json.loads(json.dumps(params, default=str))  # normalised (tuples -> lists, paths -> str)
        self.overwrite = overwrite
        self._lock_file = None
        self.resumed = False

    def __enter__(self) -> Staging:
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.root / f".{self.id}.lock", "a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise DatasetError(f"{self.final}: another import of {self.id!r} is running") from None
        if self.final.exists() and not self.overwrite:
            self.__exit__(None, None, None)
            raise DatasetError(f"{self.final}: dataset {self.id!r} already exists (choose another id or overwrite it)")
        params_path = self.partial / _PARAMS
        if self.partial.exists():
            try:
                previous = json.loads(params_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                previous = None
            if previous == self.params:
                self.resumed = True
            else:
                shutil.rmtree(self.partial)
        if not self.resumed:
            (self.partial / _DONE).mkdir(parents=True)
            write_text_atomic(params_path, json.dumps(self.params, indent=1))
        return self

    def __exit__(self, *exc) -> None:
        if self._lock_file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None
            with contextlib.suppress(OSError):
                (self.root / f".{self.id}.lock").unlink()

    def path(self, rel: str) -> Path:
        """A file inside the staging folder (parent folders created)."""
        path = self.partial / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def done(self, step: str) -> bool:
        return (self.partial / _DONE / step).exists()

    def mark(self, step: str) -> None:
        """Record ``step`` as finished; call only after its outputs are on disk."""
        write_text_atomic(self.partial / _DONE / step, "")

    def finish(self, manifest: dict) -> Path:
        """Write the manifest last and move the folder into place; returns the final folder."""
        manifest = {"format": FORMAT, "id": self.id, **manifest}
        for name in (_PARAMS,):
            with contextlib.suppress(FileNotFoundError):
                (self.partial / name).unlink()
        shutil.rmtree(self.partial / _DONE, ignore_errors=True)
        write_text_atomic(self.partial / MANIFEST, json.dumps(manifest, indent=1))
        _fsync_dir(self.partial)
        if self.final.exists():
            # overwrite=True: swap the old folder out under a hidden name, then delete it.
            trash = self.root / f".{self.id}.old-{os.getpid()}"
            os.replace(self.final, trash)
            os.replace(self.partial, self.final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(self.partial, self.final)
        _fsync_dir(self.root)
        return self.final


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a whole file under a temporary name and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    """np.save into a temporary file beside ``path``, then rename (streams: no second copy in memory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
    write_bytes_atomic(path, buffer.getvalue())


def ensure_npy(path: Path, shape: tuple[int, ...], dtype=np.float32) -> None:
    """Make ``path`` a .npy of ``shape`` to fill in place through ``np.load(mmap_mode="r+")``.

    Created zero-filled (a sparse file) if absent or of another shape; kept if it already fits, so a
    resumed import keeps what its finished steps wrote (each step is marked done after writing, and
    redoing an interrupted step must be idempotent or undo itself first).
    """
    if path.exists():
        with open(path, "rb") as f:
            try:
                major, _ = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                shape_on_disk, _, dtype_on_disk = read(f)
            except ValueError:
                shape_on_disk, dtype_on_disk = None, None
        if shape_on_disk == tuple(shape) and dtype_on_disk == np.dtype(dtype):
            return
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=tuple(shape))
    del array


def png_bytes(image: np.ndarray) -> bytes:
    """PNG of a uint8 [H, W] (grayscale) or [H, W, 3] (RGB) array."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def save_png_atomic(path: Path, image: np.ndarray) -> None:
    write_bytes_atomic(path, png_bytes(image))


def copy_atomic(src: Path, dst: Path) -> None:
    """Copy a file so that ``dst`` is either absent or complete."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def find_one(root: Path, names: tuple[str, ...] | str, *, prefer: str | None = None) -> Path | None:
    """The first file under ``root`` (recursively) named one of ``names``; ``prefer`` breaks ties.

    Real downloads keep their folder layout (e.g. ``nsddata/experiments/nsd/nsd_expdesign.mat``),
    so files are found by name wherever they are below the root the user gave.
    """
    names = (names,) if isinstance(names, str) else names
    hits: list[Path] = []
    for name in names:
        direct = root / name
        if direct.is_file():
            hits.append(direct)
        else:
            hits.extend(p for p in sorted(root.rglob(name)) if p.is_file() and not _hidden(p, root))
        if hits:
            break
    if prefer is not None:
        preferred = [p for p in hits if prefer in p.parts or any(prefer in part for part in p.parts)]
        if preferred:
            return preferred[0]
    return hits[0] if hits else None


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def import_record(kind: str, root: Path, options: dict, *, started: float, missing=(), notes=()) -> dict:
    """The manifest's "import" entry: where the data came from and what was left out."""
    return {
        "kind": kind,
        "source": str(root),
        "options": json.loads(json.dumps(options, default=str)),
        "missing": list(missing),
        "notes": list(notes),
        "seconds": round(time.perf_counter() - started, 1),
    }


def short_list(items, limit: int = 5) -> str:
    items = list(items)
    text = ", ".join(str(i) for i in items[:limit])
    return text + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def stable_hash(text: str) -> int:
    """A seed from a string that does not change between Python processes."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


@contextlib.contextmanager
def dataset_error_for(path: Path, what: str) -> Iterator[None]:
    """Turn low-level read errors (truncated, corrupt files) into a one-line DatasetError naming ``path``."""
    try:
        yield
    except DatasetError:
        raise
    except (OSError, EOFError, ValueError, KeyError, TypeError, IndexError) as err:
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "truncat" in text.lower() or "eof" in text.lower():
            text = f"the file is truncated ({text})"
        raise DatasetError(f"{path}: unreadable {what} ({text})") from None


def relative_errors(importer):
    """Decorator for an importer: its DatasetErrors name source files relative to ``root``.

    Messages are built where the problem is found, from the full paths the readers work with;
    here, at the importer's boundary, the root the user gave is taken off them, so every message
    names a file as it lies in the download (``subj01/.../lh.ncsnr.mgh: truncated ...``). The
    signature (and so the options :mod:`backend.data.importers` derives from it) is unchanged.
    """

    @functools.wraps(importer)
    def wrapper(root, *args, **kwargs):
        try:
            return importer(root, *args, **kwargs)
        except DatasetError as err:
            raise DatasetError(relative_message(str(err), Path(root).expanduser().resolve())) from None

    return wrapper


def relative_message(text: str, root: Path) -> str:
    """``text`` with every path below ``root`` written relative to it."""
    prefix = str(root).rstrip("/") + "/"
    return text.replace(prefix, "") if prefix != "/" else text
