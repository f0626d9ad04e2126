"""Reading FreeSurfer surface files: per-vertex data (.mgh/.mgz), label volumes with colour tables.

Surface data in .mgh are stored as a volume of shape [n_vertices, 1, 1, n_frames] (NSD betas:
163,842 fsaverage vertices x 750 trials, float32 percent signal change). Reads go through
nibabel's array proxy, which reads only the requested vertex rows, so one block of vertices of a
500 MB session file costs only that block in memory.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.data.schema import SURFACE_MESHES, DatasetError

#: Bytes of the .mgh header before the data.
MGH_DATA_OFFSET = 284


@dataclass(frozen=True)
class SurfaceFile:
    """An opened .mgh/.mgz: n_vertices rows of n_frames values of ``dtype``."""

    path: Path
    n_vertices: int
    n_frames: int
    dtype: np.dtype
    proxy: object

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """float32 [stop - start, n_frames]: rows ``start:stop`` (raw values, no scaling)."""
        stop = self.n_vertices if stop is None else stop
        try:
            block = np.asarray(self.proxy[start:stop])
        except (ValueError, OSError, EOFError, zlib.error) as err:
            raise DatasetError(f"{self.path}: unreadable surface data ({_why(err)})") from None
        return block.reshape(stop - start, self.n_frames).astype(np.float32)


    def read_frames(self, n_keep: int) -> np.ndarray:
        """float32 [n_frames, n_keep]: the first ``n_keep`` vertices of every frame, frame-major.

        This is the order of an uncompressed .mgh on disk (vertex fastest), so each frame is one
        read of ``n_keep`` values and a whole file (n_keep == n_vertices) is one sequential read,
        with no copy beyond the output. Compressed .mgz files go through nibabel.
        """
        if self.path.suffix != ".mgh":
            return np.ascontiguousarray(self.read(0, n_keep).T)
        raw = np.empty((self.n_frames, n_keep), self.dtype)
        stride = self.n_vertices * self.dtype.itemsize
        try:
            with open(self.path, "rb") as f:
                if n_keep == self.n_vertices:
                    f.seek(MGH_DATA_OFFSET)
                    got = f.readinto(memoryview(raw).cast("B"))
                    if got != raw.nbytes:
                        raise EOFError("the file is truncated")
                else:
                    for frame in range(self.n_frames):
                        f.seek(MGH_DATA_OFFSET + frame * stride)
                        if f.readinto(memoryview(raw[frame]).cast("B")) != n_keep * self.dtype.itemsize:
                            raise EOFError("the file is truncated")
        except (OSError, EOFError) as err:
            raise DatasetError(f"{self.path}: unreadable surface data ({_why(err)})") from None
        if self.dtype == np.dtype(">f4"):
            # In place: swap the bytes and reinterpret, instead of a second 0.5 GB array.
            return raw.byteswap(inplace=True).view(np.float32)
        return raw.astype(np.float32)


def open_surface_file(path: Path) -> SurfaceFile:
    """Open ``path`` and check that it is complete; raises DatasetError naming the file."""
    import nibabel as nib

    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        image = nib.load(str(path))
    except Exception as err:  # nibabel raises many types (MGHError, ImageFileError, EOFError)
        raise DatasetError(f"{path}: not a readable FreeSurfer .mgh/.mgz file ({_why(err)})") from None
    shape = tuple(int(s) for s in image.shape)
    dtype = np.dtype(image.header.get_data_dtype())
    n_frames = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    if path.suffix == ".mgh":
        # Uncompressed: a partial download is shorter than the header says; catch it before reading.
        expected = MGH_DATA_OFFSET + shape[0] * n_frames * dtype.itemsize
        size = path.stat().st_size
        if size < expected:
            raise DatasetError(f"{path}: truncated ({size:,} of at least {expected:,} bytes)")
    return SurfaceFile(path=path, n_vertices=shape[0], n_frames=n_frames, dtype=dtype, proxy=image.dataobj)


def check_vertex_count(n: int, path: Path, *, at_least: int) -> None:
    """``n`` must be a fsaverage-family hemisphere with at least ``at_least`` vertices."""
    if n not in SURFACE_MESHES.values():
        known = ", ".join(f"{name} {count:,}" for name, count in SURFACE_MESHES.items())
        raise DatasetError(f"{path}: {n:,} vertices does not match a fsaverage mesh hemisphere ({known})")
    if n < at_least:
        raise DatasetError(f"{path}: {n:,} vertices per hemisphere is coarser than the requested mesh ({at_least:,})")


def read_colour_table(path: Path) -> dict[int, str]:
    """value -> name from a FreeSurfer colour table (``index name [r g b a]`` per line; # comments)."""
    table: dict[int, str] = {}
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as err:
        raise DatasetError(f"{path}: unreadable colour table ({_why(err)})") from None
    for number, line in enumerate(lines, 1):
        parts = line.split("#", 1)[0].split()
        if not parts:
            continue
        try:
            table[int(parts[0])] = parts[1] if len(parts) > 1 else f"label {parts[0]}"
        except ValueError:
            raise DatasetError(f"{path}: line {number} is not 'index name ...'") from None
    return table


def read_label_values(path: Path) -> np.ndarray:
    """int64 [n_vertices]: one label value per vertex from a .mgz/.mgh label file."""
    surface = open_surface_file(path)
    if surface.n_frames != 1:
        raise DatasetError(f"{path}: a label file has one value per vertex, found {surface.n_frames} per vertex")
    values = surface.read()[:, 0]
    if not np.array_equal(values, np.round(values)):
        raise DatasetError(f"{path}: label values must be integers")
    return values.astype(np.int64)


def read_annotation(path: Path) -> tuple[np.ndarray, dict[int, str]]:
    """(values int64 [n_vertices], value -> name) from a FreeSurfer .annot file."""
    from nibabel.freesurfer import read_annot

    try:
        labels, _ctab, names = read_annot(str(path))
    except Exception as err:  # nibabel raises ValueError/struct.error/etc. for damaged files
        raise DatasetError(f"{path}: unreadable annotation ({_why(err)})") from None
    table = {i: (n.decode() if isinstance(n, bytes) else str(n)) for i, n in enumerate(names)}
    return labels.astype(np.int64), table


def compact_labels(values_per_hemi: list[np.ndarray], table: dict[int, str]) -> tuple[np.ndarray, list[str]]:
    """Renumber label values to 0..K: 0 = "none" (values <= 0 or unnamed 0), then names in value order.

    Returns (int16 labels concatenated over hemispheres, names with names[0] == "none").
    """
    values = np.concatenate(values_per_hemi) if values_per_hemi else np.zeros(0, np.int64)
    present = sorted(int(v) for v in np.unique(values) if v > 0)
    used = sorted(set(v for v in table if v > 0) | set(present))
    names = ["none"] + [table.get(v, f"label {v}") for v in used]
    lookup = {v: i + 1 for i, v in enumerate(used)}
    out = np.zeros(len(values), np.int16)
    for v, code in lookup.items():
        out[values == v] = code
    return out, names


def _why(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    lowered = text.lower()
    if "not enough data" in lowered or "ended before" in lowered or "truncat" in lowered or "eof" in lowered:
        return "the file is truncated"
    return text
