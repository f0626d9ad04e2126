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
                     "rois": "rois.npy", "roi_names": ["none", "V1", ...]}      # optional
                  | {"kind": "neurons", "units": "neurons.npz",   # keys area, x, y[, depth, cell_type]
                     "areas": ["VISp", ...], "cell_types": [...], "area_outlines": {"VISp": [[x, y], ...]}},
      "trials": {"file": "trials.npy", "stimuli": "trial_stimuli.npy"},   # optional single trials
      "noise_ceiling": "noise_ceiling.npy",     # optional, percent per unit
      "captions": "captions.json",              # optional {captioner id: [caption per stimulus]}
      "truth": {"file": "truth.npz", "maps": {"name": "what it is"}}       # optional planted truth
    }

Arrays are read with ``allow_pickle=False`` and responses are memory-mapped. Every problem is
reported as a :class:`DatasetError` whose one-line message names the file and what is wrong.
"""

from __future__ import annotations

import json
import zipfile
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
#: Rows checked for NaN/inf per step, so a 13 GB memory-mapped array is scanned in bounded memory.
_FINITE_CHECK_BYTES = 256 * 2**20


def load_folder(root: str | Path, dataset_id: str | None = None) -> Dataset:
    """Open the dataset in ``root``, checking it completely except for image contents."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    manifest = _read_manifest(root / MANIFEST)

    stimuli = _read_stimuli(root, manifest)
    responses = _read_responses(root, manifest.get("responses", "responses.npy"))
    if responses.shape[0] != len(stimuli):
        raise DatasetError(
            f"{root / manifest.get('responses', 'responses.npy')}: {responses.shape[0]} rows "
            f"but {len(stimuli)} stimuli; responses must be [n_stimuli, n_units]"
        )
    space = _read_unit_space(root, manifest.get("unit_space"), n_units=responses.shape[1])

    trials = trial_stimuli = None
    if "trials" in manifest:
        trials, trial_stimuli = _read_trials(root, manifest["trials"], responses.shape)
    noise_ceiling = None
    if "noise_ceiling" in manifest:
        noise_ceiling = _read_vector(root, manifest["noise_ceiling"], responses.shape[1], "noise ceiling")

    captions = _read_captions(root, manifest.get("captions"), len(stimuli))
    truth, truth_file = _read_truth(root, manifest.get("truth"), responses.shape[1])

    return Dataset(
        id=dataset_id or str(manifest.get("id") or root.name),
        name=str(manifest.get("name") or root.name),
        description=str(manifest.get("description", "")),
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


def load_array(path: Path, *, mmap: bool = False, key: str | None = None) -> np.ndarray:
    """Read one numeric array from .npy (optionally memory-mapped) or .npz, never unpickling.

    Raises DatasetError naming the file for: missing, truncated or corrupt files, pickled/object
    arrays and non-numeric dtypes.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                names = list(npz.keys())
                pick = key if key is not None else (names[0] if len(names) == 1 else None)
                if pick not in names:
                    raise DatasetError(f"{path}: expected an array named {key!r} in the .npz, found {names}")
                array = npz[pick]
        else:
            array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except DatasetError:
        raise
    except ValueError as err:
        text = str(err)
        if "pickle" in text.lower() or "python objects" in text.lower():
            raise DatasetError(
                f"{path}: holds pickled Python objects; Cortextual never unpickles files "
                "(save a numeric array with numpy.save)"
            ) from None
        raise DatasetError(f"{path}: unreadable array ({_truncated_or(text)})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise DatasetError(f"{path}: unreadable array ({_truncated_or(str(err))})") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        dtype = getattr(array, "dtype", type(array).__name__)
        raise DatasetError(f"{path}: dtype {dtype} is not numeric")
    return array


def check_finite(array: np.ndarray, label: str) -> None:
    """Raise DatasetError if ``array`` holds NaN or inf, scanning row blocks to bound memory."""
    if array.dtype.kind != "f":
        return
    row_bytes = max(1, array[0].nbytes if array.ndim > 1 and len(array) else array.itemsize)
    step = max(1, _FINITE_CHECK_BYTES // row_bytes)
    for start in range(0, len(array), step):
        block = np.asarray(array[start : start + step])
        if not np.isfinite(block).all():
            bad = np.argwhere(~np.isfinite(block))[0]
            bad[0] += start
            raise DatasetError(f"{label}: NaN or inf at index {tuple(int(i) for i in bad)}")


def _truncated_or(text: str) -> str:
    lowered = text.lower()
    if "mmap length" in lowered or "cannot reshape" in lowered or "truncated" in lowered or "not enough" in lowered:
        return "the file is truncated"
    return text.splitlines()[0] if text else "corrupt file"


def _resolve(root: Path, rel: object, what: str) -> Path:
    """A path named in the manifest, which must stay inside the dataset folder."""
    if not isinstance(rel, str) or not rel:
        raise DatasetError(f"{root / MANIFEST}: {what} must be a relative file name, got {rel!r}")
    path = (root / rel).resolve()
    if root != path and root not in path.parents:
        raise DatasetError(f"{root / MANIFEST}: {what} {rel!r} points outside the dataset folder")
    return path


def _read_manifest(path: Path) -> dict:
    if not path.is_file():
        raise DatasetError(f"{path}: file not found (a dataset folder needs a manifest.json)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(manifest, dict):
        raise DatasetError(f"{path}: must hold a JSON object")
    fmt = manifest.get("format", FORMAT)
    if fmt != FORMAT:
        raise DatasetError(f"{path}: format {fmt!r} is not supported (expected {FORMAT!r})")
    if "unit_space" not in manifest:
        raise DatasetError(f'{path}: "unit_space" is missing (surface with a mesh, or neurons)')
    return manifest


def _read_stimuli(root: Path, manifest: dict) -> Stimuli:
    where = root / MANIFEST
    entries = manifest.get("stimuli")
    if entries is None:
        folder = root / "images" if (root / "images").is_dir() else root
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DatasetError(f"{folder}: no images found ({', '.join(IMAGE_SUFFIXES)})")
        entries = [{"image": str(p.relative_to(root))} for p in files]
    if not isinstance(entries, list) or not entries:
        raise DatasetError(f'{where}: "stimuli" must be a non-empty list')

    ids, paths, splits, captions, categories = [], [], [], [], []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "image" not in entry:
            raise DatasetError(f'{where}: stimulus {i} needs an "image" file name')
        path = _resolve(root, entry["image"], f"stimulus {i} image")
        if not path.is_file():
            raise DatasetError(f"{path}: file not found (stimulus {i})")
        split = entry.get("split", "train")
        if split not in SPLITS:
            raise DatasetError(f"{where}: stimulus {i} has split {split!r}; use one of {SPLITS}")
        ids.append(str(entry.get("id", Path(entry["image"]).stem)))
        paths.append(path)
        splits.append(split)
        captions.append(entry.get("caption"))
        categories.append(entry.get("category"))
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{where}: stimulus ids are not unique")
    return Stimuli(tuple(ids), tuple(paths), tuple(splits), tuple(captions), tuple(categories))


def _read_responses(root: Path, rel: object) -> np.ndarray:
    path = _resolve(root, rel, "responses")
    responses = load_array(path, mmap=True, key="responses")
    if responses.ndim != 2:
        raise DatasetError(f"{path}: responses must be 2-D [n_stimuli, n_units], got shape {responses.shape}")
    if responses.dtype != np.float32:
        responses = responses.astype(np.float32)
    check_finite(responses, str(path))
    return responses


def _read_vector(root: Path, rel: object, n: int, what: str) -> np.ndarray:
    path = _resolve(root, rel, what)
    array = load_array(path)
    if array.shape != (n,):
        raise DatasetError(f"{path}: {what} must have shape ({n},), got {array.shape}")
    return array


def _read_unit_space(root: Path, spec: object, n_units: int) -> UnitSpace:
    where = root / MANIFEST
    if not isinstance(spec, dict) or spec.get("kind") not in ("surface", "neurons"):
        raise DatasetError(f'{where}: unit_space.kind must be "surface" or "neurons"')
    if spec["kind"] == "surface":
        return _read_surface_space(root, spec, n_units)
    return _read_neuron_space(root, spec, n_units)


def _read_surface_space(root: Path, spec: dict, n_units: int) -> SurfaceSpace:
    where = root / MANIFEST
    mesh = spec.get("mesh")
    if mesh not in SURFACE_MESHES:
        raise DatasetError(f"{where}: unknown mesh {mesh!r}; known: {', '.join(SURFACE_MESHES)}")
    n_mesh = 2 * SURFACE_MESHES[mesh]
    vertices = None
    if spec.get("vertices"):
        path = _resolve(root, spec["vertices"], "vertices")
        vertices = load_array(path).astype(np.int64)
        if vertices.shape != (n_units,):
            raise DatasetError(f"{path}: {vertices.shape[0] if vertices.ndim else 0} vertices but responses have {n_units} units")
        if len(vertices) and (vertices.min() < 0 or vertices.max() >= n_mesh):
            raise DatasetError(f"{path}: vertex indices must lie in 0..{n_mesh - 1} for {mesh} (both hemispheres)")
        if len(np.unique(vertices)) != len(vertices):
            raise DatasetError(f"{path}: vertex indices repeat")
    elif n_units != n_mesh:
        raise DatasetError(
            f"{where}: responses have {n_units} units but {mesh} has {n_mesh} vertices "
            "(both hemispheres); give unit_space.vertices for a subset"
        )
    names = spec.get("roi_names", ["none"])
    if spec.get("rois"):
        path = _resolve(root, spec["rois"], "rois")
        labels = load_array(path)
        if labels.shape != (n_units,):
            raise DatasetError(f"{path}: ROI labels must have shape ({n_units},), got {labels.shape}")
        if labels.dtype.kind == "f" and not np.array_equal(labels, np.round(labels)):
            raise DatasetError(f"{path}: ROI labels must be integers")
        labels = labels.astype(np.int16)
        if labels.min() < 0 or labels.max() >= len(names):
            raise DatasetError(f"{path}: ROI labels must index roi_names (0..{len(names) - 1})")
    else:
        labels = np.zeros(n_units, np.int16)
    return SurfaceSpace(mesh=mesh, roi_labels=labels, roi_names=tuple(map(str, names)), vertices=vertices)


def _read_neuron_space(root: Path, spec: dict, n_units: int) -> NeuronSpace:
    path = _resolve(root, spec.get("units", "neurons.npz"), "units")
    columns = {}
    for key in ("area", "x", "y", "depth", "cell_type"):
        try:
            columns[key] = load_array(path, key=key)
        except DatasetError:
            if key in ("area", "x", "y"):
                raise
            columns[key] = np.zeros(n_units)
        if columns[key].shape != (n_units,):
            raise DatasetError(f"{path}: {key} must have shape ({n_units},) to match the responses, got {columns[key].shape}")
    areas = tuple(map(str, spec.get("areas", ())))
    cell_types = tuple(map(str, spec.get("cell_types", ("unknown",))))
    for key, names in (("area", areas), ("cell_type", cell_types)):
        codes = columns[key]
        if len(codes) and (codes.min() < 0 or codes.max() >= len(names)):
            raise DatasetError(f"{path}: {key} codes must index the manifest's {key}s list ({len(names)} names)")
    outlines = {
        str(name): np.asarray(polygon, dtype=np.float32).reshape(-1, 2)
        for name, polygon in (spec.get("area_outlines") or {}).items()
    }
    return NeuronSpace(
        areas=areas,
        area=columns["area"].astype(np.int16),
        x=columns["x"].astype(np.float32),
        y=columns["y"].astype(np.float32),
        depth=columns["depth"].astype(np.float32),
        cell_types=cell_types,
        cell_type=columns["cell_type"].astype(np.int16),
        area_outlines=outlines,
    )


def _read_trials(root: Path, spec: object, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    where = root / MANIFEST
    if not isinstance(spec, dict) or "file" not in spec or "stimuli" not in spec:
        raise DatasetError(f'{where}: "trials" needs "file" (trials array) and "stimuli" (their rows)')
    path = _resolve(root, spec["file"], "trials")
    trials = load_array(path, mmap=True)
    rows = load_array(_resolve(root, spec["stimuli"], "trial stimuli")).astype(np.int64)
    if trials.ndim != 3 or trials.shape[1:] != (len(rows), shape[1]):
        raise DatasetError(
            f"{path}: trials must be [n_repeats, {len(rows)}, {shape[1]}] (repeats, trial stimuli, units), got {trials.shape}"
        )
    if len(rows) and (rows.min() < 0 or rows.max() >= shape[0]):
        raise DatasetError(f"{path}: trial stimulus rows must lie in 0..{shape[0] - 1}")
    check_finite(trials.reshape(-1, trials.shape[-1]), str(path))
    return trials, rows


def _read_captions(root: Path, rel: object, n: int) -> dict[str, tuple[str, ...]]:
    if rel is None:
        return {}
    path = _resolve(root, rel, "captions")
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(table, dict):
        raise DatasetError(f"{path}: must map captioner ids to lists of captions")
    for captioner, captions in table.items():
        if not isinstance(captions, list) or len(captions) != n or not all(isinstance(c, str) for c in captions):
            raise DatasetError(f"{path}: captioner {captioner!r} must give one string per stimulus ({n})")
    return {k: tuple(v) for k, v in table.items()}


def _read_truth(root: Path, spec: object, n_units: int) -> tuple[dict[str, str], Path | None]:
    if spec is None:
        return {}, None
    if not isinstance(spec, dict) or "file" not in spec:
        raise DatasetError(f'{root / MANIFEST}: "truth" needs "file" and "maps"')
    path = _resolve(root, spec["file"], "truth")
    maps = {str(k): str(v) for k, v in (spec.get("maps") or {}).items()}
    try:
        with np.load(path, allow_pickle=False) as npz:
            for name in maps:
                if name not in npz.files:
                    raise DatasetError(f"{path}: truth map {name!r} is missing")
                if npz[name].shape != (n_units,):
                    raise DatasetError(f"{path}: truth map {name!r} must have shape ({n_units},)")
    except DatasetError:
        raise
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except (ValueError, OSError, zipfile.BadZipFile) as err:
        raise DatasetError(f"{path}: unreadable ({_truncated_or(str(err))})") from None
    return maps, path
