"""Import one subject of the Algonauts 2023 challenge data (NSD responses in "challenge space").

Files of one subject (``subjNN/``, found by name below the root)::

    training_split/training_fmri/{lh,rh}_training_fmri.npy   float32 [n_images, n_challenge_vertices]
        responses z-scored per NSD session and averaged over repeats (row = image)
    training_split/training_images/train-0001_nsd-00013.png  the first number is the 1-based row,
        the second the 0-based NSD (73k) id
    roi_masks/{lh,rh}.all-vertices_fsaverage_space.npy       0/1 [163842]: the fsaverage vertices of
        challenge space; challenge vertex j is the j-th vertex where the mask is 1
    roi_masks/{lh,rh}.<class>_challenge_space.npy            int [n_challenge_vertices] ROI codes
        (streams, prf-visualrois, floc-bodies, floc-faces, floc-places, floc-words)

The ``mapping_<class>.npy`` files that name the ROI codes are pickled dictionaries, which Cortextual
never loads; the names below are those the challenge documents (the NSD colour tables).

Challenge vertices are mapped onto fsaverage and, for display on ``mesh="fsaverage5"`` (default),
only those among the first 10,242 of each hemisphere are kept (how many: manifest
``vertices_kept``); ``mesh="fsaverage"`` keeps every challenge vertex. The subset is stored as the
unit space's ``vertices`` list (lh indices, then rh indices offset by the mesh's hemisphere size).

Every input is checked before the responses are copied: the .npy headers against their file
sizes, the masks and ROI files completely, and every training image (opened and decoded, at most
40 megapixels). Errors name files relative to root.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np

from backend.data.folder import check_image, load_array
from backend.data.importers import coco
from backend.data.importers.common import (
    Progress,
    Staging,
    copy_atomic,
    ensure_npy,
    find_one,
    fingerprint_files,
    import_record,
    relative_errors,
    reporter,
    save_npy_atomic,
    short_list,
)
from backend.data.importers.freesurfer import compact_labels
from backend.data.schema import SURFACE_MESHES, DatasetError

#: ROI class -> {code: name}, as documented by the challenge (code 0 is "Unknown").
ROI_CLASS_NAMES: dict[str, dict[int, str]] = {
    "streams": dict(enumerate(["Unknown", "early", "midventral", "midlateral", "midparietal", "ventral", "lateral", "parietal"])),
    "prf-visualrois": dict(enumerate(["Unknown", "V1v", "V1d", "V2v", "V2d", "V3v", "V3d", "hV4"])),
    "floc-bodies": dict(enumerate(["Unknown", "EBA", "FBA-1", "FBA-2", "mTL-bodies"])),
    "floc-faces": dict(enumerate(["Unknown", "OFA", "FFA-1", "FFA-2", "mTL-faces", "aTL-faces"])),
    "floc-places": dict(enumerate(["Unknown", "OPA", "PPA", "RSC"])),
    "floc-words": dict(enumerate(["Unknown", "OWFA", "VWFA-1", "VWFA-2", "mfs-words", "mTL-words"])),
}
_IMAGE_NAME = re.compile(r"^train-(\d+)_nsd-(\d+)\.png$")
_ROW_BLOCK = 1024


@relative_errors
def import_algonauts(
    root: Path,
    *,
    dataset_id: str | None = None,
    dest_root: Path | None = None,
    progress: Progress | None = None,
    subject: int | None = None,
    mesh: str = "fsaverage5",
    roi_set: str = "streams",
    test_split: str = "auto",
    test_fraction: float = 0.1,
    seed: int = 0,
    captions: list[Path] | None = None,
    stim_info: Path | None = None,
    missing_captions: str = "error",
    overwrite: bool = False,
) -> Path:
    """Convert one Algonauts 2023 subject into a dataset folder; returns the folder.

    test_split: "shared1000" (NSD shared images, needs nsd_stim_info_merged.csv), "random"
    (``test_fraction`` of the images, chosen with ``seed``), or "auto" (shared1000 when the table
    is there). captions: COCO caption files (default captions_*.json below root), which need
    ``stim_info`` (default nsd_stim_info_merged.csv below root) to map NSD ids to COCO ids.
    """
    started = time.perf_counter()
    report = reporter(progress)
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    if mesh not in SURFACE_MESHES:
        raise DatasetError(f"mesh {mesh!r} is not a fsaverage mesh; use one of {', '.join(SURFACE_MESHES)}")
    if test_split not in ("auto", "shared1000", "random"):
        raise DatasetError(f"test_split={test_split!r}: use 'auto', 'shared1000' or 'random'")

    report("reading the challenge files", 0.0)
    fmri_paths, subject_root, subject = _locate(root, subject)
    fmri = {hemi: load_array(path, mmap=True) for hemi, path in fmri_paths.items()}
    for hemi, array in fmri.items():
        if array.ndim != 2:
            raise DatasetError(f"{fmri_paths[hemi]}: expected [n_images, n_vertices], got shape {array.shape}")
    if fmri["lh"].shape[0] != fmri["rh"].shape[0]:
        raise DatasetError(f"{fmri_paths['rh']}: {fmri['rh'].shape[0]} images but the lh file has {fmri['lh'].shape[0]}")
    n_images = fmri["lh"].shape[0]
    image_files, nsd_ids = _images(subject_root, n_images)

    mask_dir = subject_root / "roi_masks"
    challenge_vertices = {hemi: _challenge_vertices(mask_dir, hemi, fmri[hemi].shape[1], fmri_paths[hemi]) for hemi in ("lh", "rh")}
    n_mesh = SURFACE_MESHES[mesh]
    keep = {hemi: np.flatnonzero(v < n_mesh) for hemi, v in challenge_vertices.items()}
    vertices = np.concatenate([challenge_vertices["lh"][keep["lh"]], n_mesh + challenge_vertices["rh"][keep["rh"]]]).astype(np.int64)
    if len(vertices) == 0:
        raise DatasetError(f"{mask_dir}: no challenge vertex lies on {mesh}; import with mesh='fsaverage'")

    notes: list[str] = []
    info_path = Path(stim_info).expanduser().resolve() if stim_info else find_one(root, "nsd_stim_info_merged.csv")
    info = coco.read_stim_info(info_path) if info_path is not None else None
    is_test = _test_split(nsd_ids, info, test_split, test_fraction, seed, notes)
    caption_files = [Path(p).expanduser().resolve() for p in captions] if captions else coco.find_caption_files(root)
    all_captions = None
    if caption_files:
        if info is None:
            raise DatasetError(f"{root}: nsd_stim_info_merged.csv not found; it maps the NSD ids of the images to COCO ids for the captions")
        all_captions, without = coco.captions_for_nsd(nsd_ids.tolist(), info, caption_files, missing=missing_captions)
        if without:
            notes.append(f"{len(without)} image(s) without COCO captions: nsd ids {short_list(without)}")
    else:
        notes.append("no COCO caption files (captions_*.json): no reference captions")
    rois = _read_rois(mask_dir, keep, {h: fmri[h].shape[1] for h in fmri})
    for k, path in enumerate(image_files):
        check_image(path, str(path))
        if k % 500 == 0:
            report(f"checking images {k:,}/{n_images:,}", 0.04 * k / n_images)

    options = dict(subject=subject, mesh=mesh, roi_set=roi_set, test_split=test_split, test_fraction=test_fraction, seed=seed)
    sources = [*fmri_paths.values(), *sorted(mask_dir.glob("*.npy")), *caption_files] + ([info_path] if info_path else [])
    params = {"kind": "algonauts", "root": str(root), "options": options, "sources": fingerprint_files(sources), "n_images": n_images}
    dataset_id = dataset_id or f"algonauts-subj{subject:02d}" + ("" if mesh == "fsaverage5" else f"-{mesh}")
    with Staging(dataset_id, params, dest_root=dest_root, overwrite=overwrite) as staging:
        if not staging.done("responses"):
            report("responses", 0.05)
            _write_responses(staging, fmri, fmri_paths, keep)
            staging.mark("responses")
        save_npy_atomic(staging.path("vertices.npy"), vertices)
        unit_space = {"kind": "surface", "mesh": mesh, "vertices": "vertices.npy"}
        unit_space.update(_write_rois(staging, rois, roi_set))

        for k, (source, nsd_id) in enumerate(zip(image_files, nsd_ids.tolist(), strict=True)):
            target = staging.path(f"images/nsd-{nsd_id:05d}.png")
            if not target.exists():
                copy_atomic(source, target)
            if k % 500 == 0:
                report(f"images {k:,}/{n_images:,}", 0.3 + 0.65 * k / n_images)

        stimuli = []
        for row, nsd_id in enumerate(nsd_ids.tolist()):
            entry = {
                "id": f"nsd-{nsd_id:05d}",
                "image": f"images/nsd-{nsd_id:05d}.png",
                "split": "test" if is_test[row] else "train",
                "nsd_id": nsd_id,
                "source_image": image_files[row].name,
            }
            if all_captions is not None:
                entry["caption"] = all_captions[row][0] if all_captions[row] else None
                entry["captions_all"] = all_captions[row]
            if info is not None and nsd_id in info.coco_id:
                entry["coco_id"] = info.coco_id[nsd_id]
            stimuli.append(entry)
        kept = {hemi: int(len(keep[hemi])) for hemi in ("lh", "rh")}
        total = {hemi: int(len(challenge_vertices[hemi])) for hemi in ("lh", "rh")}
        manifest = {
            "name": f"Algonauts 2023 subject {subject} ({mesh})",
            "description": (
                f"Algonauts 2023 challenge data, subject {subject}: {n_images:,} images ({int(is_test.sum()):,} test), "
                f"responses z-scored per NSD session and averaged over repeats. {kept['lh'] + kept['rh']:,} of "
                f"{total['lh'] + total['rh']:,} challenge-space vertices lie on {mesh} and are kept."
            ),
            "simulated": False,
            "responses": "responses.npy",
            "response_units": "z-scored beta (per vertex and NSD session), averaged over repeats",
            "stimuli": stimuli,
            "unit_space": unit_space,
            "vertices_kept": {"lh": kept["lh"], "rh": kept["rh"], "challenge_lh": total["lh"], "challenge_rh": total["rh"]},
            "subject": subject,
            "import": import_record("algonauts", root, options, started=started, notes=notes),
        }
        final = staging.finish(manifest)
    report(f"done: {final}", 1.0)
    return final


def _locate(root: Path, subject: int | None) -> tuple[dict[str, Path], Path, int]:
    """({"lh": path, "rh": path}, the subject's folder, subject number)."""
    candidates = sorted(p for p in root.rglob("lh_training_fmri.npy") if p.is_file())
    if not candidates:
        raise DatasetError(f"{root}: no lh_training_fmri.npy below this folder (Algonauts 2023 training_split/training_fmri)")

    def number(path: Path) -> int | None:
        hits = re.findall(r"subj(\d+)", str(path.relative_to(root.parent)))
        return int(hits[-1]) if hits else None

    if subject is not None:
        candidates = [p for p in candidates if number(p) == subject] or []
        if not candidates:
            raise DatasetError(f"{root}: no training data for subj{subject:02d}")
    if len(candidates) > 1:
        subjects = sorted({number(p) for p in candidates}, key=str)
        raise DatasetError(f"{root}: data of several subjects ({short_list(subjects)}); choose one with subject")
    lh = candidates[0]
    rh = lh.with_name("rh_training_fmri.npy")
    if not rh.is_file():
        raise DatasetError(f"{rh}: file not found")
    subject_root = lh.parent
    while subject_root != root.parent and not (subject_root / "roi_masks").is_dir():
        subject_root = subject_root.parent
    if not (subject_root / "roi_masks").is_dir():
        raise DatasetError(f"{lh.parent}: no roi_masks folder beside the training data")
    return {"lh": lh, "rh": rh}, subject_root, number(lh) or 1


def _images(subject_root: Path, n_images: int) -> tuple[list[Path], np.ndarray]:
    """Training images in fMRI row order and their 0-based NSD ids."""
    folder = next((p for p in sorted(subject_root.rglob("training_images")) if p.is_dir()), None)
    if folder is None:
        raise DatasetError(f"{subject_root}: no training_images folder")
    rows: dict[int, tuple[Path, int]] = {}
    for path in folder.iterdir():
        match = _IMAGE_NAME.match(path.name)
        if match:
            rows[int(match.group(1))] = (path, int(match.group(2)))
    if sorted(rows) != list(range(1, n_images + 1)):
        raise DatasetError(
            f"{folder}: expected images train-0001 .. train-{n_images:04d} (one per fMRI row), found {len(rows)} "
            f"named train-NNNN_nsd-NNNNN.png"
        )
    files = [rows[i][0] for i in range(1, n_images + 1)]
    nsd_ids = np.array([rows[i][1] for i in range(1, n_images + 1)], np.int64)
    if len(np.unique(nsd_ids)) != len(nsd_ids):
        raise DatasetError(f"{folder}: an NSD id appears in two image names")
    return files, nsd_ids


def _challenge_vertices(mask_dir: Path, hemi: str, n_columns: int, fmri_path: Path) -> np.ndarray:
    """int64 [n_columns]: the fsaverage vertex (within the hemisphere) of each challenge-space column."""
    path = mask_dir / f"{hemi}.all-vertices_fsaverage_space.npy"
    mask = load_array(path)
    if mask.ndim != 1 or mask.shape[0] not in SURFACE_MESHES.values():
        raise DatasetError(f"{path}: expected a 0/1 mask over the vertices of one fsaverage hemisphere, got shape {mask.shape}")
    if not np.isin(mask, (0, 1)).all():
        raise DatasetError(f"{path}: mask values must be 0 or 1")
    vertices = np.flatnonzero(mask).astype(np.int64)
    if len(vertices) != n_columns:
        raise DatasetError(f"{fmri_path}: {n_columns:,} vertices but {path.name} selects {len(vertices):,}")
    return vertices


def _write_responses(staging: Staging, fmri: dict[str, np.ndarray], paths: dict[str, Path], keep: dict[str, np.ndarray]) -> None:
    """responses.npy float32 [n_images, kept lh + kept rh], copied in row blocks (bounded memory)."""
    n_images = fmri["lh"].shape[0]
    n_lh, n_rh = len(keep["lh"]), len(keep["rh"])
    out_path = staging.path("responses.npy")
    ensure_npy(out_path, (n_images, n_lh + n_rh))
    out = np.load(out_path, mmap_mode="r+", allow_pickle=False)
    for start in range(0, n_images, _ROW_BLOCK):
        stop = min(start + _ROW_BLOCK, n_images)
        for hemi, columns in (("lh", slice(0, n_lh)), ("rh", slice(n_lh, n_lh + n_rh))):
            block = np.asarray(fmri[hemi][start:stop], dtype=np.float32)[:, keep[hemi]]
            if not np.isfinite(block).all():
                bad = np.argwhere(~np.isfinite(block))[0]
                raise DatasetError(f"{paths[hemi]}: NaN or inf at image {start + int(bad[0])}")
            out[start:stop, columns] = block
    out.flush()
    del out


def _read_rois(mask_dir: Path, keep: dict[str, np.ndarray], n_columns: dict[str, int]) -> dict[str, tuple[np.ndarray, list[str]]]:
    """ROI class -> (int16 labels of the kept vertices, lh then rh; names), for each class present."""
    out: dict[str, tuple[np.ndarray, list[str]]] = {}
    for name, table in ROI_CLASS_NAMES.items():
        paths = {hemi: mask_dir / f"{hemi}.{name}_challenge_space.npy" for hemi in ("lh", "rh")}
        if not any(p.is_file() for p in paths.values()):
            continue
        values = []
        for hemi, path in paths.items():
            codes = load_array(path)
            if codes.shape != (n_columns[hemi],):
                raise DatasetError(f"{path}: expected {n_columns[hemi]:,} values (one per challenge vertex), got shape {codes.shape}")
            if codes.dtype.kind == "f" and not np.array_equal(codes, np.round(codes)):  # NaN included
                raise DatasetError(f"{path}: ROI codes must be integers")
            values.append(codes.astype(np.int64)[keep[hemi]])
        out[name] = compact_labels(values, table)
    return out


def _write_rois(staging: Staging, rois: dict[str, tuple[np.ndarray, list[str]]], primary: str) -> dict:
    """rois.npy (the primary class) and rois_<class>.npy; returns the unit_space entries."""
    if not rois:
        return {}
    primary = primary if primary in rois else next(iter(rois))
    written: dict[str, dict] = {}
    for name, (labels, names) in rois.items():
        written[name] = {"file": "rois.npy" if name == primary else f"rois_{name}.npy", "names": names}
        save_npy_atomic(staging.path(written[name]["file"]), labels)
    return {"rois": "rois.npy", "roi_names": written[primary]["names"], "roi_set": primary, "roi_sets": written}


def _test_split(nsd_ids: np.ndarray, info, how: str, fraction: float, seed: int, notes: list[str]) -> np.ndarray:
    """bool [n_images]: which images form the test split."""
    if how in ("auto", "shared1000") and info is not None:
        is_test = np.isin(nsd_ids, np.fromiter(info.shared1000, np.int64, len(info.shared1000)))
        if is_test.any() or how == "shared1000":
            notes.append(f"test split: the {int(is_test.sum())} NSD shared images (shared1000)")
            return is_test
    if how == "shared1000":
        raise DatasetError("test_split='shared1000' needs nsd_stim_info_merged.csv (stim_info)")
    if not 0 < fraction < 1:
        raise DatasetError(f"test_fraction={fraction}: must lie between 0 and 1")
    n_test = max(1, int(round(fraction * len(nsd_ids))))
    is_test = np.zeros(len(nsd_ids), bool)
    is_test[np.random.default_rng(seed).choice(len(nsd_ids), n_test, replace=False)] = True
    notes.append(f"test split: {n_test} images drawn at random (seed {seed})")
    return is_test
