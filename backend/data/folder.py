"""The dataset folder format: images + ``responses.npy`` + ``manifest.json``.

This is both the generic format users can hand over and the one every importer (and the demo
world) writes, so there is a single loader and a single set of checks.

manifest.json (every key optional but ``unit_space``)::

    {
      "name": "My data", "description": "...", "simulated": false,
      "responses": "responses.npy",            # float [n_stimuli, n_units]; or .npz with key "responses"
      "stimuli": [{"id": "s1", "image": "images/s1.png", "caption": "a dog", "split": "test",
                   "category": "dog"}, ...],   # default: every image under images/ (or the folder), sorted
      "unit_space": {"kind": "surface", "mesh": "fsaverage5",
                     "vertices": "vertices.npy",          # optional int [n_units]; default all vertices
                     "rois": "rois.npy", "roi_names": ["none", "V1", ...],      # optional
                     "roi_sets": {"streams": {"file": "rois_streams.npy", "names": [...]}}}  # optional, more label sets
                  | {"kind": "neurons", "units": "neurons.npz",   # keys area, x, y[, depth, cell_type]
                     "areas": ["VISp", ...], "cell_types": [...], "area_outlines": {"VISp": [[x, y], ...]}},
      "trials": {"file": "trials.npy", "stimuli": "trial_stimuli.npy"},   # optional single trials
      "noise_ceiling": "noise_ceiling.npy",     # optional, percent per unit (0..100)
      "captions": "captions.json",              # optional {captioner id: [caption per stimulus]}
      "truth": {"file": "truth.npz", "maps": {"name": "what it is"}}       # optional planted truth:
                                                # float [n_units] per map, NaN where it has no value
    }

Arrays are read with ``allow_pickle=False``; responses and trials are memory-mapped. Before any
array is read or mapped, its header is checked against the file: a header promising more bytes
than the file (or, in an .npz, the zip member) holds is a truncated file, whatever it claims, so
no header can make the app allocate terabytes. Every problem is reported as a
:class:`DatasetError` whose one-line message names the file relative to the dataset folder (never
where the folder lives on the server) and what is wrong. Image contents are checked by
:func:`check_image`, at import (every image) rather than at every opening.
"""

from __future__ import annotations

import json
import math
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.data.schema import (
    SPLITS,
    SURFACE_MESHES,
    Dataset,
    DatasetError,
    NeuronSpace,
    Stimuli,
    SurfaceSpace,
    UnitSpace,
)

MANIFEST = "manifest.json"
FORMAT = "cortextual-dataset/1"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
#: Largest image accepted, in pixels (width x height). Stimuli are shown and embedded at a few
#: hundred pixels; 40 MP (e.g. 8000 x 5000) leaves room for any camera, and anything larger is
#: more likely a decompression bomb (a few kB of PNG that decode to gigabytes).
MAX_IMAGE_PIXELS = 40_000_000
#: JSON files (manifest, captions) larger than this are refused rather than read into memory.
MAX_JSON_BYTES = 512 * 2**20
#: Rows checked for NaN/inf per step, so a 13 GB memory-mapped array is scanned in bounded memory.
_FINITE_CHECK_BYTES = 256 * 2**20
#: Noise ceilings are percentages; float32 rounding of 100 * a / (a + b) can pass 100 by an ulp.
_CEILING_SLACK = 1e-3


def load_folder(root: str | Path, dataset_id: str | None = None) -> Dataset:
    """Open the dataset in ``root``, checking it completely except for image contents."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise DatasetError(f"{root.name or root}: not a folder")
    manifest = _read_manifest(root)

    stimuli = _read_stimuli(root, manifest)
    responses_rel = manifest.get("responses", "responses.npy")
    responses = _read_responses(root, responses_rel)
    if responses.shape[0] != len(stimuli):
        raise DatasetError(
            f"{shown_path(root, _resolve(root, responses_rel, 'responses'))}: {responses.shape[0]} rows "
            f"but {len(stimuli)} stimuli; responses must be [n_stimuli, n_units]"
        )
    space = _read_unit_space(root, manifest.get("unit_space"), n_units=responses.shape[1])

    trials = trial_stimuli = None
    if manifest.get("trials") is not None:
        trials, trial_stimuli = _read_trials(root, manifest["trials"], responses.shape)
    noise_ceiling = None
    if manifest.get("noise_ceiling") is not None:
        noise_ceiling = _read_noise_ceiling(root, manifest["noise_ceiling"], responses.shape[1])

    captions = _read_captions(root, manifest.get("captions"), len(stimuli))
    truth, truth_file = _read_truth(root, manifest.get("truth"), responses.shape[1])

    return Dataset(
        id=dataset_id or _text(manifest, "id", root.name),
        name=_text(manifest, "name", root.name),
        description=_text(manifest, "description", ""),
        simulated=bool(manifest.get("simulated", False)),
        root=root,
        stimuli=stimuli,
        responses=responses,
        space=space,
        trials=trials,
        trial_stimuli=trial_stimuli,
        noise_ceiling=noise_ceiling,
        captions=captions,
        truth=truth,
        truth_file=truth_file,
    )


# ---------------------------------------------------------------------------- arrays


@dataclass(frozen=True)
class ArrayHeader:
    """What a .npy header promises: ``shape`` of ``dtype``, ``nbytes`` bytes of data."""

    shape: tuple[int, ...]
    dtype: np.dtype
    nbytes: int


def load_array(path: Path, *, mmap: bool = False, key: str | None = None, root: Path | None = None) -> np.ndarray:
    """Read one numeric array from .npy (optionally memory-mapped) or .npz, never unpickling.

    The header is checked before anything is allocated or mapped: a numeric dtype, and no more
    bytes promised than the file (or the .npz member, every member) holds; an array that is not
    memory-mapped must also fit in this machine's memory. Raises DatasetError naming the file
    (relative to ``root`` when given) for: missing, truncated or corrupt files, pickled/object
    arrays, non-numeric dtypes and arrays too large to read.
    """
    path = Path(path)
    name = shown_path(root, path)
    if not path.is_file():
        raise DatasetError(f"{name}: file not found")
    if path.suffix == ".npz":
        return _load_npz_member(path, name, key)
    try:
        with open(path, "rb") as f:
            header = _read_header(f, name)
            available = os.fstat(f.fileno()).st_size - f.tell()
    except OSError as err:
        raise DatasetError(f"{name}: unreadable ({err.strerror or err})") from None
    if available < header.nbytes:
        raise DatasetError(f"{name}: truncated ({_promise(header)}, the file holds {available:,})")
    if not mmap:
        _check_fits_in_memory(header, name)
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except MemoryError:
        raise DatasetError(f"{name}: too large to read into memory ({header.nbytes:,} bytes)") from None
    except (ValueError, OSError, EOFError) as err:
        raise DatasetError(f"{name}: unreadable array ({_first_line(err)})") from None


def npz_headers(path: Path, *, root: Path | None = None) -> dict[str, ArrayHeader]:
    """key -> header of every array in an .npz, each checked against its zip member's size."""
    path = Path(path)
    name = shown_path(root, path)
    if not path.is_file():
        raise DatasetError(f"{name}: file not found")
    try:
        with zipfile.ZipFile(path) as z:
            return _member_headers(z, name)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as err:
        raise DatasetError(f"{name}: not a readable .npz file ({_first_line(err)})") from None


def _load_npz_member(path: Path, name: str, key: str | None) -> np.ndarray:
    pick = key
    try:
        with zipfile.ZipFile(path) as z:
            headers = _member_headers(z, name)
            pick = key if key is not None else (next(iter(headers)) if len(headers) == 1 else None)
            if pick not in headers:
                raise DatasetError(f"{name}: expected an array named {key!r} in the .npz, found {sorted(headers)}")
            _check_fits_in_memory(headers[pick], f"{name}: {pick!r}", hint="; save it as .npy to have it memory-mapped")
            with z.open(f"{pick}.npy") as member:
                return np.lib.format.read_array(member, allow_pickle=False)
    except DatasetError:
        raise
    except MemoryError:
        raise DatasetError(f"{name}: {pick!r} is too large to read into memory") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as err:
        raise DatasetError(f"{name}: not a readable .npz file ({_first_line(err)})") from None


def _member_headers(z: zipfile.ZipFile, name: str) -> dict[str, ArrayHeader]:
    """Headers of the .npy members of an open .npz, each checked against its uncompressed size."""
    headers = {}
    for info in z.infolist():
        if not info.filename.endswith(".npy"):
            continue  # numpy.load ignores other members too
        key = info.filename[: -len(".npy")]
        with z.open(info) as member:
            header = _read_header(member, f"{name}: {key!r}")
            available = info.file_size - member.tell()
        if available < header.nbytes:
            raise DatasetError(f"{name}: {key!r} is truncated ({_promise(header)}, the zip member holds {available:,})")
        headers[key] = header
    if not headers:
        raise DatasetError(f"{name}: holds no arrays (an .npz is a zip of .npy files)")
    return headers


def _read_header(f, name: str) -> ArrayHeader:
    """The .npy header at the start of ``f``, which must describe a plain numeric array."""
    try:
        version = np.lib.format.read_magic(f)
    except (ValueError, EOFError) as err:
        raise DatasetError(f"{name}: not a .npy array (no NumPy header: {_first_line(err)[:60]})") from None
    try:
        # Versions 2.0 and 3.0 share a layout (3.0 only allows utf-8 field names, refused below).
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _fortran, dtype = read(f)
    except (ValueError, EOFError, SyntaxError, TypeError) as err:
        raise DatasetError(f"{name}: unreadable .npy header ({_first_line(err)[:80]})") from None
    if dtype.hasobject:
        raise DatasetError(
            f"{name}: holds pickled Python objects; Cortextual never unpickles files (save a numeric array with numpy.save)"
        )
    if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
        raise DatasetError(f"{name}: dtype {dtype} is not numeric")
    return ArrayHeader(shape=tuple(int(s) for s in shape), dtype=dtype, nbytes=math.prod(shape) * dtype.itemsize)


def _promise(header: ArrayHeader) -> str:
    return f"the header describes {header.dtype} {header.shape} = {header.nbytes:,} bytes"


def _memory_bytes() -> int:
    """Physical memory of this machine in bytes (large when the platform does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**62


def _check_fits_in_memory(header: ArrayHeader, name: str, hint: str = "") -> None:
    # A consistent header can still be too large (an .npz member claiming terabytes of zeros
    # compresses to kilobytes): refuse it instead of dying in the allocation.
    limit = _memory_bytes()
    if header.nbytes > limit:
        raise DatasetError(f"{name}: {header.nbytes:,} bytes is more than this machine's memory ({limit:,} bytes){hint}")


def check_finite(array: np.ndarray, label: str) -> None:
    """Raise DatasetError if ``array`` holds NaN or inf, scanning row blocks to bound memory."""
    if array.dtype.kind != "f" or array.size == 0:
        return
    row_bytes = max(1, array[0].nbytes if array.ndim > 1 and len(array) else array.itemsize)
    step = max(1, _FINITE_CHECK_BYTES // row_bytes)
    for start in range(0, len(array), step):
        block = np.asarray(array[start : start + step])
        if not np.isfinite(block).all():
            bad = np.argwhere(~np.isfinite(block))[0]
            bad[0] += start
            raise DatasetError(f"{label}: NaN or inf at index {tuple(int(i) for i in bad)}")


def _integers(array: np.ndarray, label: str) -> np.ndarray:
    """int64 copy of an index array; floats must hold whole, finite numbers (NaN would cast to garbage)."""
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all() or not np.array_equal(array, np.round(array)) or (len(array) and np.abs(array).max() > 2**53):
            raise DatasetError(f"{label} must be integers")
    return array.astype(np.int64)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# ---------------------------------------------------------------------------- images


def check_image(path: Path, name: str, *, decode: bool = True) -> tuple[int, int]:
    """(width, height) of a readable image of at most MAX_IMAGE_PIXELS; DatasetError naming ``name`` otherwise.

    The header gives the size, which is checked before any pixel is decoded; ``verify`` checks the
    file's structure (PNG chunk checksums), and ``decode`` (default) decodes every pixel, which is
    what the app will do when it shows or embeds the image, so a truncated JPEG fails here rather
    than in the page. PIL's own decompression-bomb warning and error become this one line too.
    """
    from PIL import Image, UnidentifiedImageError

    size = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                size = image.size
                _check_pixels(size, name)
                image.verify()
            if decode:
                with Image.open(path) as image:
                    image.load()
    except DatasetError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DatasetError(f"{name}: image too large, over {MAX_IMAGE_PIXELS // 10**6} megapixels ({_first_line(err)})") from None
    except UnidentifiedImageError:
        raise DatasetError(f"{name}: not a readable image (not in an image format PIL knows)") from None
    except Exception as err:  # PIL raises many types for damaged files (OSError, SyntaxError, struct.error, ...)
        # PIL messages may quote the full path: show it as the dataset-relative name.
        text = _first_line(err).replace(str(path), name)[:120]
        raise DatasetError(f"{name}: not a readable image ({text})") from None
    return size


def check_stimulus_images(ds: Dataset, progress=None) -> None:
    """:func:`check_image` on every stimulus image of ``ds`` (named relative to its folder).

    Not part of :func:`load_folder` (decoding every image at each opening would be slow); run once
    when a folder enters the catalog (import). ``progress(done, total)`` is called every 500 images.
    """
    paths = ds.stimuli.image_paths
    for i, path in enumerate(paths):
        check_image(path, shown_path(ds.root, path))
        if progress is not None and i % 500 == 0:
            progress(i, len(paths))


def _check_pixels(size: tuple[int, int], name: str) -> None:
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        raise DatasetError(
            f"{name}: image of {width:,} x {height:,} pixels is over the {MAX_IMAGE_PIXELS // 10**6} megapixel limit"
        )


def check_image_shape(height: int, width: int, name: str) -> None:
    """The pixel limit of :func:`check_image` for images stored as arrays (NSD's imgBrick, Allen's template)."""
    _check_pixels((int(width), int(height)), name)


# ---------------------------------------------------------------------------- manifest and paths


def shown_path(root: Path | None, path: Path) -> str:
    """``path`` as messages show it: relative to the dataset folder, never where that folder is
    (a path outside it shows its name only)."""
    if root is not None:
        try:
            return Path(path).relative_to(root).as_posix()
        except ValueError:
            pass
    return Path(path).name


def _resolve(root: Path, rel: object, what: str) -> Path:
    """A path named in the manifest, which must stay inside the dataset folder."""
    if not isinstance(rel, str) or not rel:
        raise DatasetError(f"{MANIFEST}: {what} must be a relative file name, got {_short(rel)}")
    path = (root / rel).resolve()
    if root != path and root not in path.parents:
        raise DatasetError(f"{MANIFEST}: {what} {rel!r} points outside the dataset folder")
    return path


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _text(manifest: dict, key: str, default: str) -> str:
    value = manifest.get(key)
    if value is None or value == "":
        return default
    if not isinstance(value, str | int | float):
        raise DatasetError(f"{MANIFEST}: {key} must be a string, got {_short(value)}")
    return str(value)


def _names(value: object, what: str) -> tuple[str, ...]:
    """A list of names from the manifest (strings; numbers are accepted as their text)."""
    if not isinstance(value, list | tuple) or not all(isinstance(v, str | int) and not isinstance(v, bool) for v in value):
        raise DatasetError(f"{MANIFEST}: {what} must be a list of names, got {_short(value)}")
    return tuple(map(str, value))


def _read_json(path: Path, name: str) -> object:
    if not path.is_file():
        raise DatasetError(f"{name}: file not found")
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise DatasetError(f"{name}: {size:,} bytes is too large for a JSON file here (limit {MAX_JSON_BYTES:,})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise DatasetError(f"{name}: unreadable ({err.strerror or err})") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise DatasetError(f"{name}: not valid JSON ({_first_line(err)[:120]})") from None


def _read_manifest(root: Path) -> dict:
    path = root / MANIFEST
    if not path.is_file():
        raise DatasetError(f"{MANIFEST}: file not found (a dataset folder needs a manifest.json)")
    manifest = _read_json(path, MANIFEST)
    if not isinstance(manifest, dict):
        raise DatasetError(f"{MANIFEST}: must hold a JSON object")
    fmt = manifest.get("format", FORMAT)
    if fmt != FORMAT:
        raise DatasetError(f"{MANIFEST}: format {_short(fmt)} is not supported (expected {FORMAT!r})")
    if "unit_space" not in manifest:
        raise DatasetError(f'{MANIFEST}: "unit_space" is missing (surface with a mesh, or neurons)')
    return manifest


def _read_stimuli(root: Path, manifest: dict) -> Stimuli:
    entries = manifest.get("stimuli")
    if entries is None:
        folder = root / "images" if (root / "images").is_dir() else root
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise DatasetError(f"{shown_path(root, folder) if folder != root else '.'}: no images found ({', '.join(IMAGE_SUFFIXES)})")
        entries = [{"image": p.relative_to(root).as_posix()} for p in files]
    if not isinstance(entries, list) or not entries:
        raise DatasetError(f'{MANIFEST}: "stimuli" must be a non-empty list')

    ids, paths, splits, captions, categories = [], [], [], [], []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "image" not in entry:
            raise DatasetError(f'{MANIFEST}: stimulus {i} needs an "image" file name')
        path = _resolve(root, entry["image"], f"stimulus {i} image")
        if not path.is_file():
            raise DatasetError(f"{shown_path(root, path)}: file not found (stimulus {i})")
        split = entry.get("split", "train")
        if not isinstance(split, str) or split not in SPLITS:
            raise DatasetError(f"{MANIFEST}: stimulus {i} has split {_short(split)}; use one of {SPLITS}")
        sid = entry.get("id", Path(entry["image"]).stem)
        if not isinstance(sid, str | int) or isinstance(sid, bool):
            raise DatasetError(f"{MANIFEST}: stimulus {i} id must be a string, got {_short(sid)}")
        for key in ("caption", "category"):
            if entry.get(key) is not None and not isinstance(entry[key], str):
                raise DatasetError(f"{MANIFEST}: stimulus {i} {key} must be a string, got {_short(entry[key])}")
        ids.append(str(sid))
        paths.append(path)
        splits.append(split)
        captions.append(entry.get("caption"))
        categories.append(entry.get("category"))
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{MANIFEST}: stimulus ids are not unique")
    return Stimuli(tuple(ids), tuple(paths), tuple(splits), tuple(captions), tuple(categories))


def _read_responses(root: Path, rel: object) -> np.ndarray:
    path = _resolve(root, rel, "responses")
    name = shown_path(root, path)
    responses = load_array(path, mmap=True, key="responses", root=root)
    if responses.ndim != 2:
        raise DatasetError(f"{name}: responses must be 2-D [n_stimuli, n_units], got shape {responses.shape}")
    if responses.dtype != np.float32:
        responses = responses.astype(np.float32)
    check_finite(responses, name)
    return responses


def _read_noise_ceiling(root: Path, rel: object, n: int) -> np.ndarray:
    """float [n_units], percent: finite and within 0..100."""
    path = _resolve(root, rel, "noise ceiling")
    name = shown_path(root, path)
    ceiling = load_array(path, root=root)
    if ceiling.shape != (n,):
        raise DatasetError(f"{name}: noise ceiling must have shape ({n},), got {ceiling.shape}")
    check_finite(ceiling, name)
    outside = np.flatnonzero((ceiling < 0) | (ceiling > 100 + _CEILING_SLACK))
    if len(outside):
        k = int(outside[0])
        raise DatasetError(f"{name}: noise ceiling must be a percentage in 0..100 (found {ceiling[k]:g} at unit {k})")
    return ceiling


def _read_unit_space(root: Path, spec: object, n_units: int) -> UnitSpace:
    if not isinstance(spec, dict) or spec.get("kind") not in ("surface", "neurons"):
        raise DatasetError(f'{MANIFEST}: unit_space.kind must be "surface" or "neurons"')
    if spec["kind"] == "surface":
        return _read_surface_space(root, spec, n_units)
    return _read_neuron_space(root, spec, n_units)


def _read_surface_space(root: Path, spec: dict, n_units: int) -> SurfaceSpace:
    mesh = spec.get("mesh")
    if not isinstance(mesh, str) or mesh not in SURFACE_MESHES:
        raise DatasetError(f"{MANIFEST}: unknown mesh {_short(mesh)}; known: {', '.join(SURFACE_MESHES)}")
    n_mesh = 2 * SURFACE_MESHES[mesh]
    vertices = None
    if spec.get("vertices"):
        path = _resolve(root, spec["vertices"], "vertices")
        name = shown_path(root, path)
        vertices = load_array(path, root=root)
        if vertices.shape != (n_units,):
            raise DatasetError(f"{name}: vertices must have shape ({n_units},) to match the responses' units, got {vertices.shape}")
        vertices = _integers(vertices, f"{name}: vertex indices")
        if len(vertices) and (vertices.min() < 0 or vertices.max() >= n_mesh):
            raise DatasetError(f"{name}: vertex indices must lie in 0..{n_mesh - 1} for {mesh} (both hemispheres)")
        if len(np.unique(vertices)) != len(vertices):
            raise DatasetError(f"{name}: vertex indices repeat")
    elif n_units != n_mesh:
        raise DatasetError(
            f"{MANIFEST}: responses have {n_units} units but {mesh} has {n_mesh} vertices "
            "(both hemispheres); give unit_space.vertices for a subset"
        )
    names = _names(spec.get("roi_names", ["none"]), "unit_space.roi_names")
    labels = read_roi_labels(root, spec["rois"], n_units, names) if spec.get("rois") else np.zeros(n_units, np.int16)
    return SurfaceSpace(mesh=mesh, roi_labels=labels, roi_names=names, vertices=vertices)


def read_roi_labels(root: Path, rel: object, n_units: int, names: tuple[str, ...]) -> np.ndarray:
    """int16 [n_units]: ROI label codes from the file ``rel`` names, each an index into ``names``."""
    path = _resolve(root, rel, "rois")
    name = shown_path(root, path)
    labels = load_array(path, root=root)
    if labels.shape != (n_units,):
        raise DatasetError(f"{name}: ROI labels must have shape ({n_units},), got {labels.shape}")
    labels = _integers(labels, f"{name}: ROI labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
        raise DatasetError(f"{name}: ROI labels must index roi_names (0..{len(names) - 1})")
    return labels.astype(np.int16)


def read_roi_sets(root: Path, spec: object, n_units: int) -> dict[str, tuple[np.ndarray, tuple[str, ...], str]]:
    """set name -> (int16 labels [n_units], names, file as given) of a surface's optional ``roi_sets``."""
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise DatasetError(f'{MANIFEST}: unit_space.roi_sets must map set names to {{"file": ..., "names": [...]}}')
    out = {}
    for set_name, entry in spec.items():
        if not isinstance(entry, dict):
            raise DatasetError(f'{MANIFEST}: unit_space.roi_sets[{set_name!r}] must be {{"file": ..., "names": [...]}}')
        names = _names(entry.get("names", ["none"]), f"unit_space.roi_sets[{set_name!r}].names")
        out[str(set_name)] = (read_roi_labels(root, entry.get("file"), n_units, names), names, entry.get("file"))
    return out


def _read_neuron_space(root: Path, spec: dict, n_units: int) -> NeuronSpace:
    path = _resolve(root, spec.get("units", "neurons.npz"), "units")
    name = shown_path(root, path)
    if path.suffix != ".npz":
        raise DatasetError(f"{name}: the neuron table must be an .npz with arrays area, x, y[, depth, cell_type]")
    present = npz_headers(path, root=root)
    columns = {}
    for key in ("area", "x", "y", "depth", "cell_type"):
        if key not in present:
            if key in ("area", "x", "y"):
                raise DatasetError(f"{name}: expected an array named {key!r} in the .npz, found {sorted(present)}")
            columns[key] = np.zeros(n_units)
            continue
        columns[key] = load_array(path, key=key, root=root)
        if columns[key].shape != (n_units,):
            raise DatasetError(f"{name}: {key} must have shape ({n_units},) to match the responses, got {columns[key].shape}")
        if key in ("area", "cell_type"):
            columns[key] = _integers(columns[key], f"{name}: {key!r}")
        else:
            check_finite(columns[key], f"{name}: {key!r}")
    areas = _names(spec.get("areas", []), "unit_space.areas")
    cell_types = _names(spec.get("cell_types", ["unknown"]), "unit_space.cell_types")
    for key, names in (("area", areas), ("cell_type", cell_types)):
        codes = columns[key]
        if len(codes) and (codes.min() < 0 or codes.max() >= len(names)):
            raise DatasetError(f"{name}: {key} codes must index the manifest's {key}s list ({len(names)} names)")
    return NeuronSpace(
        areas=areas,
        area=columns["area"].astype(np.int16),
        x=columns["x"].astype(np.float32),
        y=columns["y"].astype(np.float32),
        depth=columns["depth"].astype(np.float32),
        cell_types=cell_types,
        cell_type=columns["cell_type"].astype(np.int16),
        area_outlines=_read_outlines(spec.get("area_outlines")),
    )


def _read_outlines(spec: object) -> dict[str, np.ndarray]:
    """area name -> float32 [k, 2] polygon, from the manifest's lists of [x, y] points."""
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise DatasetError(f"{MANIFEST}: unit_space.area_outlines must map area names to lists of [x, y] points")
    outlines = {}
    for area, polygon in spec.items():
        try:
            points = np.asarray(polygon, dtype=np.float32)
            if points.ndim != 2 or points.shape[1] != 2 or not np.isfinite(points).all():
                raise ValueError
        except (ValueError, TypeError):
            raise DatasetError(f"{MANIFEST}: unit_space.area_outlines[{str(area)!r}] must be a list of finite [x, y] points") from None
        outlines[str(area)] = points
    return outlines


def _read_trials(root: Path, spec: object, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(spec, dict) or "file" not in spec or "stimuli" not in spec:
        raise DatasetError(f'{MANIFEST}: "trials" needs "file" (trials array) and "stimuli" (their rows)')
    path = _resolve(root, spec["file"], "trials")
    name = shown_path(root, path)
    trials = load_array(path, mmap=True, root=root)
    rows_path = _resolve(root, spec["stimuli"], "trial stimuli")
    rows_name = shown_path(root, rows_path)
    rows = load_array(rows_path, root=root)
    if rows.ndim != 1:
        raise DatasetError(f"{rows_name}: trial stimulus rows must be 1-D, got shape {rows.shape}")
    rows = _integers(rows, f"{rows_name}: trial stimulus rows")
    if trials.ndim != 3 or trials.shape[1:] != (len(rows), shape[1]):
        raise DatasetError(
            f"{name}: trials must be [n_repeats, {len(rows)}, {shape[1]}] (repeats, trial stimuli, units), got {trials.shape}"
        )
    if len(rows) and (rows.min() < 0 or rows.max() >= shape[0]):
        raise DatasetError(f"{rows_name}: trial stimulus rows must lie in 0..{shape[0] - 1}")
    check_finite(trials.reshape(-1, trials.shape[-1]), name)
    return trials, rows


def _read_captions(root: Path, rel: object, n: int) -> dict[str, tuple[str, ...]]:
    if rel is None:
        return {}
    path = _resolve(root, rel, "captions")
    name = shown_path(root, path)
    table = _read_json(path, name)
    if not isinstance(table, dict):
        raise DatasetError(f"{name}: must map captioner ids to lists of captions")
    for captioner, captions in table.items():
        if not isinstance(captions, list) or len(captions) != n or not all(isinstance(c, str) for c in captions):
            raise DatasetError(f"{name}: captioner {captioner!r} must give one string per stimulus ({n})")
    return {k: tuple(v) for k, v in table.items()}


def _read_truth(root: Path, spec: object, n_units: int) -> tuple[dict[str, str], Path | None]:
    """Planted maps: each float [n_units], NaN where a map has no value (e.g. a receptive field
    outside retinotopic cortex) but never inf; read once here, later on demand."""
    if spec is None:
        return {}, None
    if not isinstance(spec, dict) or "file" not in spec or not isinstance(spec.get("maps") or {}, dict):
        raise DatasetError(f'{MANIFEST}: "truth" needs "file" and "maps" (map name -> what it is)')
    path = _resolve(root, spec["file"], "truth")
    name = shown_path(root, path)
    maps = {str(k): str(v) for k, v in (spec.get("maps") or {}).items()}
    headers = npz_headers(path, root=root)
    for key in maps:
        if key not in headers:
            raise DatasetError(f"{name}: truth map {key!r} is missing")
        if headers[key].shape != (n_units,):
            raise DatasetError(f"{name}: truth map {key!r} must have shape ({n_units},), got {headers[key].shape}")
        values = load_array(path, key=key, root=root)
        if values.dtype.kind == "f" and np.isinf(values).any():
            raise DatasetError(f"{name}: {key!r}: inf at index ({int(np.flatnonzero(np.isinf(values))[0])},)")
    return maps, path
