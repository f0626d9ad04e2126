"""Import a generic dataset folder (images + responses .npy/.npz + manifest.json).

The folder is opened and checked completely with :func:`backend.data.folder.load_folder`, every
image is opened and decoded (:func:`backend.data.folder.check_image`: readable, at most 40
megapixels) and extra ROI label sets are checked, all before anything is written. Then a
normalised copy is written into the datasets folder: responses as a memory-mappable float32
``responses.npy`` (also when given as .npz or another dtype), images under ``images/``, each
array in its canonical file, and the manifest rewritten to point at them. Keys of the manifest and
of its stimulus entries that Cortextual does not interpret are kept. Every problem is one
DatasetError line naming the file relative to the folder.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np

from backend.data.folder import MANIFEST, check_stimulus_images, load_folder, read_roi_sets
from backend.data.importers.common import (
    Progress,
    Staging,
    copy_atomic,
    ensure_npy,
    fingerprint_files,
    import_record,
    reporter,
    save_npy_atomic,
    save_npz_atomic,
    write_text_atomic,
)
from backend.data.schema import DatasetError, NeuronSpace, SurfaceSpace
from backend.data.ids import id_from_name

_ROW_BYTES = 256 * 2**20
_REWRITTEN = ("format", "id", "responses", "stimuli", "unit_space", "trials", "noise_ceiling", "captions", "truth", "import")


def import_folder(
    root: Path,
    *,
    dataset_id: str | None = None,
    dest_root: Path | None = None,
    progress: Progress | None = None,
    overwrite: bool = False,
) -> Path:
    """Check the folder at ``root`` and write its normalised copy; returns the new folder."""
    started = time.perf_counter()
    report = reporter(progress)
    root = Path(root).expanduser().resolve()
    report("checking the folder", 0.0)
    dataset = load_folder(root)
    manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    roi_sets = {}
    if isinstance(dataset.space, SurfaceSpace):
        roi_sets = read_roi_sets(root, (manifest.get("unit_space") or {}).get("roi_sets"), dataset.n_units)
    # Images last among the checks: the slowest (each is decoded), and nothing is written until all pass.
    check_stimulus_images(dataset, lambda done, total: report(f"checking images {done:,}/{total:,}", 0.05 * done / total))
    dataset_id = dataset_id or id_from_name(str(manifest.get("id") or root.name))
    sources = [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")]
    params = {"kind": "folder", "root": str(root), "sources": fingerprint_files(sources)}

    with Staging(dataset_id, params, dest_root=dest_root, overwrite=overwrite) as staging:
        out = {k: v for k, v in manifest.items() if k not in _REWRITTEN}
        report("copying images", 0.05)
        entries = manifest.get("stimuli") or [{} for _ in dataset.stimuli.ids]
        stimuli = []
        for i, (entry, sid, path) in enumerate(zip(entries, dataset.stimuli.ids, dataset.stimuli.image_paths, strict=True)):
            rel = f"images/{i:05d}-{_safe(sid)}{path.suffix.lower()}"
            if not staging.path(rel).exists():
                copy_atomic(path, staging.path(rel))
            stimuli.append(
                {**entry, "id": sid, "image": rel, "split": dataset.stimuli.splits[i]}
                | ({"caption": dataset.stimuli.captions[i]} if dataset.stimuli.captions[i] is not None else {})
                | ({"category": dataset.stimuli.categories[i]} if dataset.stimuli.categories[i] is not None else {})
            )
        report("copying responses", 0.4)
        if not staging.done("responses"):
            _copy_rows(dataset.responses, staging.path("responses.npy"))
            staging.mark("responses")
        out.update(stimuli=stimuli, responses="responses.npy", unit_space=_write_space(staging, dataset.space, manifest, roi_sets))
        if dataset.trials is not None:
            report("copying single trials", 0.7)
            if not staging.done("trials"):
                _copy_rows(dataset.trials, staging.path("trials.npy"))
                staging.mark("trials")
            save_npy_atomic(staging.path("trial_stimuli.npy"), dataset.trial_stimuli.astype(np.int64))
            out["trials"] = {"file": "trials.npy", "stimuli": "trial_stimuli.npy"}
        if dataset.noise_ceiling is not None:
            save_npy_atomic(staging.path("noise_ceiling.npy"), dataset.noise_ceiling.astype(np.float32))
            out["noise_ceiling"] = "noise_ceiling.npy"
        if dataset.captions:
            write_text_atomic(staging.path("captions.json"), json.dumps({k: list(v) for k, v in dataset.captions.items()}))
            out["captions"] = "captions.json"
        if dataset.truth and dataset.truth_file is not None:
            copy_atomic(dataset.truth_file, staging.path("truth.npz"))
            out["truth"] = {"file": "truth.npz", "maps": dict(dataset.truth)}
        out.setdefault("name", dataset.name)
        out["import"] = import_record("folder", root, {}, started=started)
        final = staging.finish(out)
    report(f"done: {final}", 1.0)
    return final


def _write_space(staging: Staging, space, manifest: dict, roi_sets: dict) -> dict:
    if isinstance(space, SurfaceSpace):
        spec: dict = {"kind": "surface", "mesh": space.mesh, "rois": "rois.npy", "roi_names": list(space.roi_names)}
        save_npy_atomic(staging.path("rois.npy"), space.roi_labels.astype(np.int16))
        if space.vertices is not None:
            save_npy_atomic(staging.path("vertices.npy"), space.vertices.astype(np.int64))
            spec["vertices"] = "vertices.npy"
        # Extra ROI sets written by importers (checked by read_roi_sets) travel along; the set
        # stored in the primary rois file keeps pointing at it.
        source = manifest.get("unit_space") or {}
        primary = source.get("rois")
        if roi_sets and isinstance(source.get("roi_set"), str):
            spec["roi_set"] = source["roi_set"]  # the name of the primary set (importers write it)
        for name, (labels, names, file) in roi_sets.items():
            target = "rois.npy" if file == primary else f"rois_{_safe(name)}.npy"
            if target != "rois.npy":
                save_npy_atomic(staging.path(target), labels)
            spec.setdefault("roi_sets", {})[name] = {"file": target, "names": list(names)}
        return spec
    assert isinstance(space, NeuronSpace)
    save_npz_atomic(
        staging.path("neurons.npz"),
        {"area": space.area, "x": space.x, "y": space.y, "depth": space.depth, "cell_type": space.cell_type},
    )
    return {
        "kind": "neurons",
        "units": "neurons.npz",
        "areas": list(space.areas),
        "cell_types": list(space.cell_types),
        "area_outlines": {k: np.asarray(v).round(4).tolist() for k, v in space.area_outlines.items()},
    }


def _copy_rows(source: np.ndarray, target: Path) -> None:
    """Copy a (memory-mapped) array into a float32 .npy of the same shape, a block of rows at a time."""
    ensure_npy(target, source.shape)
    out = np.load(target, mmap_mode="r+", allow_pickle=False)
    row_bytes = max(1, int(np.prod(source.shape[1:])) * 4)
    step = max(1, _ROW_BYTES // row_bytes)
    for start in range(0, source.shape[0], step):
        out[start : start + step] = np.asarray(source[start : start + step], dtype=np.float32)
    out.flush()
    del out


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:60] or "stimulus"
