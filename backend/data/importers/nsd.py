"""Import one Natural Scenes Dataset (NSD) subject on the fsaverage surface.

Files (found by name anywhere below the root, as in the NSD download layout):

    nsd_expdesign.mat          masterordering [1, 30000]: per trial, the 1-based index of the image
                               among the subject's 10,000 (a column of subjectim);
                               subjectim [8, 10000]: per subject, the 1-based 73k NSD id of each image;
                               sharedix [1, 1000]: the 1-based 73k ids of the shared images (test split)
    {lh,rh}.betas_session{NN}.mgh   [163842, 1, 1, 750] single-trial betas of session NN (1-based),
                               trial j of session NN is trial (NN-1)*750 + j of masterordering.
                               float32 percent signal change; int16 files are x300 (divided back)
    {lh,rh}.ncsnr.mgh          [163842, 1, 1] noise-ceiling SNR per vertex (optional)
    nsd_stim_info_merged.csv   nsdId (0-based) -> cocoId, cocoSplit, shared1000 (needed for captions)
    nsd_stimuli.hdf5           imgBrick [73000, 425, 425, 3] uint8, row = 0-based 73k id
    captions_*.json            COCO captions (optional)
    {lh,rh}.{streams,nsdgeneral,Kastner2015,HCP_MMP1}.mgz + {name}.mgz.ctab   fsaverage labels (optional)

So trial t (0-based) shows the image with 0-based NSD id ``subjectim[s-1, masterordering[t]-1] - 1``.
Stimulus ids are ``nsd-XXXXX`` with that 0-based id (as in Algonauts file names).

The dataset: betas z-scored per vertex within each session (``zscore``), averaged over each image's
repeats; single trials of the test images that have all repeats; the shared images as the test
split; the noise ceiling from ncsnr with the repeat counts of the test images; the first COCO
caption as reference caption. Data are kept on the first vertices of each hemisphere, so the
default ``mesh="fsaverage5"`` keeps 10,242 per hemisphere (fsaverage5 is the first 10,242 vertices
of fsaverage) and ``mesh="fsaverage"`` keeps all 163,842.

A partial download imports what is complete: sessions whose lh or rh file is missing or truncated
are left out and listed in the manifest's ``import.missing`` (``allow_partial=False`` refuses).

Every other input is checked before the first beta is read, so a bad file fails in seconds rather
than after the sessions were streamed: the design, every session file's header against its size
(.mgh), the ncsnr and label files (read completely: they are small), the captions and the
imgBrick's shape and dtype (at most 40 megapixels per image). Errors name files relative to root.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np

from backend.analysis.scores import noise_ceiling_from_ncsnr
from backend.data.folder import check_image_shape
from backend.data.importers import coco
from backend.data.importers.common import (
    Progress,
    Staging,
    dataset_error_for,
    find_one,
    fingerprint_files,
    import_record,
    relative_errors,
    reporter,
    save_npy_atomic,
    save_png_atomic,
    short_list,
)
from backend.data.importers.freesurfer import (
    SurfaceFile,
    check_vertex_count,
    compact_labels,
    open_surface_file,
    read_annotation,
    read_colour_table,
    read_label_values,
)
from backend.data.importers.nsd_betas import TRIALS_PER_SESSION, stream_betas, trial_layout
from backend.data.schema import SURFACE_MESHES, DatasetError

LABEL_SETS = ("streams", "nsdgeneral", "Kastner2015", "HCP_MMP1")
#: Core NSD sessions each subject completed (NSD data manual, "Technical notes"); later sessions of
#: the shared design are not expected, so they are not reported as missing.
SUBJECT_SESSIONS = {1: 40, 2: 40, 3: 32, 4: 30, 5: 40, 6: 32, 7: 40, 8: 30}
#: NSD stores some betas as int16 = round(300 x percent signal change).
INT_BETA_SCALE = 300.0
_SESSION_FILE = re.compile(r"^(lh|rh)\.betas_session(\d+)\.mg[hz]$")


@relative_errors
def import_nsd(
    root: Path,
    *,
    dataset_id: str | None = None,
    dest_root: Path | None = None,
    progress: Progress | None = None,
    subject: int = 1,
    mesh: str = "fsaverage5",
    sessions: list[int] | None = None,
    zscore: bool = True,
    beta_scale: float | None = None,
    trials: str = "test",
    roi_set: str = "streams",
    captions: list[Path] | None = None,
    missing_captions: str = "error",
    allow_partial: bool = True,
    betas_dir: Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert one NSD subject into a dataset folder; returns the folder under ``datasets_dir()``.

    subject: 1..8 (row of subjectim). mesh: fsaverage5 (default) .. fsaverage, vertices kept per
    hemisphere. sessions: 1-based session numbers to import (default all present).
    zscore: z-score betas per vertex within each session. beta_scale: multiply raw betas (default
    1/300 for int16 files, 1 for float). trials: which images keep single trials ("test", "all",
    "none"). roi_set: primary label set. captions: COCO caption json files (default: captions_*.json
    found below root). missing_captions: "error" or "skip". betas_dir: folder of the session files
    when several are present. Memory: about 3x one session-hemisphere of kept vertices (1.5 GB on
    full fsaverage), whatever the number of sessions.
    """
    started = time.perf_counter()
    report = reporter(progress)
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    if mesh not in SURFACE_MESHES:
        raise DatasetError(f"mesh {mesh!r} is not a fsaverage mesh; use one of {', '.join(SURFACE_MESHES)}")
    if trials not in ("test", "all", "none"):
        raise DatasetError(f"trials={trials!r}: use 'test', 'all' or 'none'")
    if missing_captions not in ("error", "skip"):
        raise DatasetError(f"missing_captions={missing_captions!r}: use 'error' or 'skip'")
    n_keep = SURFACE_MESHES[mesh]
    dataset_id = dataset_id or f"nsd-subj{subject:02d}" + ("" if mesh == "fsaverage5" else f"-{mesh}")

    report("reading the experimental design", 0.0)
    design_path = _require(find_one(root, "nsd_expdesign.mat"), root, "nsd_expdesign.mat")
    image_of_trial, shared_ids = read_design(design_path, subject)
    n_design_sessions = min(len(image_of_trial) // TRIALS_PER_SESSION, SUBJECT_SESSIONS.get(subject, 40))

    betas_folder = _betas_folder(root, subject, betas_dir)
    found, missing = scan_sessions(betas_folder, n_design_sessions, sessions, n_keep)
    if missing and not allow_partial:
        raise DatasetError(missing[0])
    if not found:
        raise DatasetError(f"{betas_folder}: no complete session of betas ({{lh,rh}}.betas_sessionNN.mgh); " + "; ".join(missing[:3]))
    if missing:
        report(f"missing: {len(missing)} session(s) left out: " + short_list(missing, 3), 0.01)
    numbers = sorted(found)
    dtype = found[numbers[0]]["lh"].dtype
    scale = beta_scale if beta_scale is not None else (1.0 / INT_BETA_SCALE if dtype.kind in "iu" else 1.0)

    # Trials of the imported sessions -> images (rows of the dataset, sorted by NSD id).
    trial_index = np.concatenate([np.arange((s - 1) * TRIALS_PER_SESSION, s * TRIALS_PER_SESSION) for s in numbers])
    nsd_of_trial = image_of_trial[trial_index]
    nsd_ids = np.unique(nsd_of_trial)
    image_row_of_trial = np.searchsorted(nsd_ids, nsd_of_trial)
    notes = []
    if shared_ids is None:
        info_path = find_one(root, "nsd_stim_info_merged.csv")
        if info_path is None:
            raise DatasetError(f"{design_path}: no sharedix and no nsd_stim_info_merged.csv to tell the shared (test) images")
        shared_ids = np.array(sorted(coco.read_stim_info(info_path).shared1000), np.int64)
        notes.append(f"test split from shared1000 in {info_path.name}")
    is_test = np.isin(nsd_ids, shared_ids)
    keep = {"test": is_test, "all": np.ones(len(nsd_ids), bool), "none": np.zeros(len(nsd_ids), bool)}[trials]
    layout = trial_layout(image_row_of_trial, len(nsd_ids), keep)

    # Captions and images are checked before the long part, so bad input fails early.
    stim_info, all_captions, caption_files = _captions(root, nsd_ids, captions, missing_captions, notes)
    stimuli_path = _require(find_one(root, "nsd_stimuli.hdf5"), root, "nsd_stimuli.hdf5")
    _check_image_brick(stimuli_path, int(nsd_ids.max()))
    ncsnr_files = _ncsnr_files(betas_folder, root)
    label_sets = _label_files(root)
    report("checking the noise ceiling and label files", 0.01)
    ncsnr = np.concatenate([_read_ncsnr(ncsnr_files[h], n_keep) for h in ("lh", "rh")]) if ncsnr_files else None
    labels = _read_labels(label_sets, n_keep, roi_set) if label_sets else None

    sources = [design_path, stimuli_path, *caption_files, *ncsnr_files.values()]
    sources += [p for files in label_sets.values() for p in files]
    sources += [f.path for s in numbers for f in found[s].values()]
    if stim_info is not None:
        sources.append(stim_info.path)
    options = dict(
        subject=subject, mesh=mesh, sessions=numbers, zscore=zscore, beta_scale=scale, trials=trials,
        roi_set=roi_set, missing_captions=missing_captions,
    )
    params = {"kind": "nsd", "root": str(root), "options": options, "sources": fingerprint_files(sources)}
    with Staging(dataset_id, params, dest_root=dest_root, overwrite=overwrite) as staging:
        if staging.resumed:
            report("resuming an interrupted import", 0.02)
        stream_betas(
            staging, [found[s] for s in numbers], layout, n_keep=n_keep, zscore=zscore, scale=scale,
            report=lambda stage, f: report(stage, 0.02 + 0.78 * f),
        )
        if len(layout.trial_stimuli):
            save_npy_atomic(staging.path("trial_stimuli.npy"), layout.trial_stimuli)

        unit_space: dict = {"kind": "surface", "mesh": mesh}
        extra: dict = {}
        if ncsnr is not None:
            report("noise ceiling from ncsnr", 0.8)
            counts = layout.counts[is_test] if is_test.any() else layout.counts
            ceiling = noise_ceiling_from_ncsnr(ncsnr, counts).astype(np.float32)
            save_npy_atomic(staging.path("noise_ceiling.npy"), ceiling)
            extra["noise_ceiling"] = "noise_ceiling.npy"
        else:
            notes.append("no {lh,rh}.ncsnr.mgh: no noise ceiling")
        if labels is not None:
            report("ROI labels", 0.81)
            unit_space.update(_write_labels(staging, labels))

        _write_images(staging, stimuli_path, nsd_ids, lambda stage, f: report(stage, 0.82 + 0.17 * f))

        stimuli = []
        for row, nsd_id in enumerate(nsd_ids.tolist()):
            entry = {
                "id": f"nsd-{nsd_id:05d}",
                "image": f"images/nsd-{nsd_id:05d}.png",
                "split": "test" if is_test[row] else "train",
                "nsd_id": nsd_id,
                "n_trials": int(layout.counts[row]),
            }
            if all_captions is not None:
                entry["caption"] = all_captions[row][0] if all_captions[row] else None
                entry["captions_all"] = all_captions[row]
            if stim_info is not None:
                entry["coco_id"] = stim_info.coco_id.get(nsd_id)
                entry["coco_split"] = stim_info.coco_split.get(nsd_id)
            stimuli.append(entry)
        if len(layout.trial_stimuli):
            extra["trials"] = {"file": "trials.npy", "stimuli": "trial_stimuli.npy"}
        n_test = int(is_test.sum())
        description = (
            f"NSD subject {subject}: {len(nsd_ids):,} images ({n_test:,} shared images as test split) from "
            f"{len(numbers)} session(s); betas {'z-scored per session, ' if zscore else ''}averaged over up to "
            f"{layout.n_repeats} repeats; {mesh} ({n_keep:,} vertices per hemisphere"
            + (", the first of each fsaverage hemisphere)" if mesh != "fsaverage" else ")")
            + (f". Missing: {len(missing)} session(s)." if missing else ".")
        )
        manifest = {
            "name": f"NSD subject {subject} ({mesh})",
            "description": description,
            "simulated": False,
            "responses": "responses.npy",
            "response_units": "z-scored beta (per vertex and session)" if zscore else "percent signal change",
            "stimuli": stimuli,
            "unit_space": unit_space,
            **extra,
            "subject": subject,
            "sessions": numbers,
            "import": import_record("nsd", root, options, started=started, missing=missing, notes=notes),
        }
        final = staging.finish(manifest)
    report(f"done: {final}" + (f"; missing {len(missing)} session(s)" if missing else ""), 1.0)
    return final


def read_design(path: Path, subject: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(0-based NSD id of every trial int64 [n_trials], 0-based shared ids or None) from nsd_expdesign.mat."""
    mat = _load_mat(path)
    for key in ("masterordering", "subjectim"):
        if key not in mat:
            raise DatasetError(f"{path}: variable {key!r} is missing")
    order = np.asarray(mat["masterordering"]).ravel().astype(np.int64)
    subjectim = np.atleast_2d(np.asarray(mat["subjectim"])).astype(np.int64)
    if not 1 <= subject <= subjectim.shape[0]:
        raise DatasetError(f"{path}: subject {subject} is not among the {subjectim.shape[0]} rows of subjectim")
    if len(order) % TRIALS_PER_SESSION:
        raise DatasetError(f"{path}: masterordering has {len(order)} trials, not a multiple of {TRIALS_PER_SESSION}")
    if order.min() < 1 or order.max() > subjectim.shape[1]:
        raise DatasetError(f"{path}: masterordering must hold 1-based indices into the {subjectim.shape[1]} columns of subjectim")
    images = subjectim[subject - 1]
    if images.min() < 1:
        raise DatasetError(f"{path}: subjectim must hold 1-based NSD ids (found {images.min()})")
    image_of_trial = images[order - 1] - 1  # both 1-based (MATLAB): to a 0-based NSD id
    shared = None
    if "sharedix" in mat:
        shared = np.asarray(mat["sharedix"]).ravel().astype(np.int64) - 1
    return image_of_trial, shared


def _load_mat(path: Path) -> dict:
    """Variables of a MATLAB file: v5 through scipy; v7.3 (HDF5) through h5py, transposed back."""
    import scipy.io

    try:
        with dataset_error_for(path, "MATLAB file"):
            return scipy.io.loadmat(str(path))
    except NotImplementedError:  # v7.3: an HDF5 file whose arrays are stored transposed
        import h5py

        with dataset_error_for(path, "MATLAB v7.3 file"), h5py.File(path, "r") as f:
            return {k: np.asarray(f[k]).T for k in f if isinstance(f[k], h5py.Dataset)}


def _betas_folder(root: Path, subject: int, betas_dir: Path | None) -> Path:
    """The folder of the subject's {lh,rh}.betas_sessionNN.mgh files."""
    if betas_dir is not None:
        folder = Path(betas_dir).expanduser().resolve()
        if not folder.is_dir():
            raise DatasetError(f"{folder}: betas folder not found")
        return folder
    folders = sorted({p.parent for p in root.rglob("*h.betas_session*.mg[hz]") if _SESSION_FILE.match(p.name)})
    if not folders:
        raise DatasetError(f"{root}: no {{lh,rh}}.betas_sessionNN.mgh files found")
    tag = f"subj{subject:02d}"
    tagged = [f for f in folders if tag in f.parts or any(tag in part for part in f.relative_to(root).parts)]
    if tagged:
        folders = tagged
    elif any(re.search(r"subj\d\d", str(f.relative_to(root))) for f in folders):
        raise DatasetError(f"{root}: no betas for {tag} (found {short_list(f.relative_to(root) for f in folders)})")
    if len(folders) > 1:
        preferred = [f for f in folders if f.name == "betas_fithrf_GLMdenoise_RR"]
        if len(preferred) == 1:
            return preferred[0]
        raise DatasetError(f"{root}: several folders of betas ({short_list(folders)}); choose one with betas_dir")
    return folders[0]


def scan_sessions(
    folder: Path, n_design_sessions: int, wanted: list[int] | None, n_keep: int
) -> tuple[dict[int, dict[str, SurfaceFile]], list[str]]:
    """Complete sessions {number: {"lh": file, "rh": file}} and one line per missing/incomplete session.

    Missing or truncated files make a session incomplete (a partial download); wrong vertex or
    trial counts are errors (wrong data).
    """
    present: dict[int, dict[str, Path]] = {}
    for path in folder.iterdir():
        match = _SESSION_FILE.match(path.name)
        if match:
            present.setdefault(int(match.group(2)), {})[match.group(1)] = path
    extra = sorted(s for s in present if not 1 <= s <= n_design_sessions)
    if extra:
        raise DatasetError(f"{folder}: session(s) {short_list(extra)} are beyond the {n_design_sessions} sessions expected for this subject and design")
    numbers = sorted(wanted) if wanted else list(range(1, n_design_sessions + 1))
    found: dict[int, dict[str, SurfaceFile]] = {}
    missing: list[str] = []
    n_vertices = None
    for s in numbers:
        if not 1 <= s <= n_design_sessions:
            raise DatasetError(f"session {s}: this subject and design have sessions 1..{n_design_sessions}")
        files = {}
        for hemi in ("lh", "rh"):
            path = present.get(s, {}).get(hemi, folder / f"{hemi}.betas_session{s:02d}.mgh")
            if not path.is_file():
                missing.append(f"{path}: file not found (session {s})")
                break
            try:
                surface = open_surface_file(path)
            except DatasetError as err:
                if "truncated" not in str(err):
                    raise
                missing.append(f"{err} (session {s})")
                break
            check_vertex_count(surface.n_vertices, path, at_least=n_keep)
            if surface.n_frames != TRIALS_PER_SESSION:
                raise DatasetError(f"{path}: {surface.n_frames} trials, expected {TRIALS_PER_SESSION} per session")
            if n_vertices is not None and surface.n_vertices != n_vertices:
                raise DatasetError(f"{path}: {surface.n_vertices:,} vertices but other session files have {n_vertices:,}")
            n_vertices = surface.n_vertices
            files[hemi] = surface
        if len(files) == 2:
            found[s] = files
    return found, missing


def _captions(root: Path, nsd_ids: np.ndarray, captions: list[Path] | None, missing: str, notes: list[str]):
    """(stim info or None, captions per image or None, caption files)."""
    caption_files = [Path(p).expanduser().resolve() for p in captions] if captions else coco.find_caption_files(root)
    info_path = find_one(root, "nsd_stim_info_merged.csv")
    stim_info = coco.read_stim_info(info_path) if info_path is not None else None
    if not caption_files:
        notes.append("no COCO caption files (captions_*.json): no reference captions")
        return stim_info, None, []
    if stim_info is None:
        raise DatasetError(f"{root}: nsd_stim_info_merged.csv not found; it maps NSD images to the COCO ids of the captions")
    all_captions, without = coco.captions_for_nsd(nsd_ids.tolist(), stim_info, caption_files, missing=missing)
    if without:
        notes.append(f"{len(without)} image(s) without COCO captions: nsd ids {short_list(without)}")
    return stim_info, all_captions, caption_files


def _check_image_brick(path: Path, max_id: int) -> None:
    """imgBrick: uint8 [n, H, W, 3] (or [n, H, W]) with every needed NSD id and images of at most 40 MP.

    HDF5 itself refuses a file shorter than its recorded end (a truncated download) when opened.
    """
    import h5py

    with dataset_error_for(path, "HDF5 file"), h5py.File(path, "r") as f:
        if "imgBrick" not in f or not isinstance(f["imgBrick"], h5py.Dataset):
            raise DatasetError(f"{path}: dataset 'imgBrick' is missing")
        brick = f["imgBrick"]
        if brick.ndim not in (3, 4) or (brick.ndim == 4 and brick.shape[3] != 3):
            raise DatasetError(f"{path}: imgBrick must be [n, H, W, 3] (or [n, H, W]), got {brick.shape}")
        if brick.dtype != np.uint8:
            raise DatasetError(f"{path}: imgBrick must hold uint8 pixels (NSD's format), got {brick.dtype}")
        check_image_shape(brick.shape[1], brick.shape[2], f"{path}: imgBrick")
        if brick.shape[0] <= max_id:
            raise DatasetError(f"{path}: imgBrick has {brick.shape[0]} images but the design needs NSD id {max_id}")


def _write_images(staging: Staging, path: Path, nsd_ids: np.ndarray, report) -> None:
    """One PNG per image at native size; files already written by an interrupted run are kept."""
    import h5py

    if staging.done("images"):
        return
    with dataset_error_for(path, "HDF5 file"), h5py.File(path, "r") as f:
        brick = f["imgBrick"]
        for k, nsd_id in enumerate(nsd_ids.tolist()):
            target = staging.path(f"images/nsd-{nsd_id:05d}.png")
            if not target.exists():
                save_png_atomic(target, np.asarray(brick[nsd_id]))
            if k % 200 == 0:
                report(f"images {k:,}/{len(nsd_ids):,}", k / len(nsd_ids))
    staging.mark("images")


def _ncsnr_files(betas_folder: Path, root: Path) -> dict[str, Path]:
    files = {}
    for hemi in ("lh", "rh"):
        path = next((p for p in (betas_folder / f"{hemi}.ncsnr.mgh", betas_folder / f"{hemi}.ncsnr.mgz") if p.is_file()), None)
        path = path or find_one(root, (f"{hemi}.ncsnr.mgh", f"{hemi}.ncsnr.mgz"))
        if path is not None:
            files[hemi] = path
    if len(files) == 1:
        raise DatasetError(f"{next(iter(files.values()))}: found ncsnr for one hemisphere only")
    return files


def _read_ncsnr(path: Path, n_keep: int) -> np.ndarray:
    surface = open_surface_file(path)
    check_vertex_count(surface.n_vertices, path, at_least=n_keep)
    if surface.n_frames != 1:
        raise DatasetError(f"{path}: ncsnr has one value per vertex, found {surface.n_frames}")
    values = surface.read(0, n_keep)[:, 0]
    if not np.isfinite(values).all():
        raise DatasetError(f"{path}: ncsnr holds NaN or inf")
    return values


def _label_files(root: Path) -> dict[str, list[Path]]:
    """name -> [lh file, rh file, colour table or nothing] for each label set present."""
    sets = {}
    for name in LABEL_SETS:
        files = []
        for hemi in ("lh", "rh"):
            path = find_one(root, (f"{hemi}.{name}.mgz", f"{hemi}.{name}.mgh", f"{hemi}.{name}.annot"), prefer="fsaverage")
            if path is not None:
                files.append(path)
        if len(files) == 1:
            raise DatasetError(f"{files[0]}: label set {name!r} found for one hemisphere only")
        if files:
            ctab = find_one(root, (f"{name}.mgz.ctab", f"{name}.ctab"), prefer="fsaverage")
            sets[name] = files + ([ctab] if ctab is not None else [])
    return sets


def _read_labels(label_sets: dict[str, list[Path]], n_keep: int, primary: str) -> dict:
    """Every label set read and renumbered: {"primary": name, "sets": {name: (int16 labels, names)}}."""
    primary = primary if primary in label_sets else next(iter(label_sets))
    sets: dict[str, tuple[np.ndarray, list[str]]] = {}
    for name, files in label_sets.items():
        values, table = [], {}
        for path in files[:2]:
            if path.suffix == ".annot":
                hemi_values, table = read_annotation(path)
            else:
                hemi_values = read_label_values(path)
            check_vertex_count(len(hemi_values), path, at_least=n_keep)
            values.append(hemi_values[:n_keep])
        if len(files) > 2:
            table = read_colour_table(files[2])
        sets[name] = compact_labels(values, table)
    return {"primary": primary, "sets": sets}


def _write_labels(staging: Staging, labels: dict) -> dict:
    """Write rois.npy (primary set) and rois_<set>.npy (others); returns the unit_space entries."""
    primary = labels["primary"]
    written: dict[str, dict] = {}
    for name, (values, names) in labels["sets"].items():
        file = "rois.npy" if name == primary else f"rois_{name}.npy"
        save_npy_atomic(staging.path(file), values)
        written[name] = {"file": file, "names": names}
    return {
        "rois": "rois.npy",
        "roi_names": written[primary]["names"],
        "roi_set": primary,
        "roi_sets": written,
    }


def _require(path: Path | None, root: Path, name: str) -> Path:
    if path is None:
        raise DatasetError(f"{root}: {name} not found below this folder")
    return path
