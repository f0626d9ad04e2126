"""Import Allen Brain Observatory Visual Coding 2P natural-scenes responses from NWB files.

The Brain Observatory's ``ophys_experiment_<id>.nwb`` files (NWB 1.x, HDF5) are read directly with
h5py, at the paths the AllenSDK reads (``BrainObservatoryNwbDataSet``)::

    processing/brain_observatory_pipeline/DfOverF/imaging_plane_1/data        float [n_cells, n_frames]
    processing/brain_observatory_pipeline/DfOverF/imaging_plane_1/timestamps  float [n_frames], s
    processing/brain_observatory_pipeline/ImageSegmentation/cell_specimen_ids int [n_cells]
    processing/brain_observatory_pipeline/ImageSegmentation/imaging_plane_1/roi_list, <roi>/img_mask
    stimulus/presentation/natural_scenes_stimulus/data            [n] scene index, -1 = blank
    stimulus/presentation/natural_scenes_stimulus/frame_duration  [n, 2] start, end imaging frame
    stimulus/templates/natural_scenes_image_stack/data            [118, 918, 1174] grayscale scenes
    general/optophysiology/imaging_plane_1/location        targeted area, e.g. "VISp"
    general/optophysiology/imaging_plane_1/imaging depth   e.g. "175 microns"
    general/subject/genotype                               Cre line first, e.g. "Cux2-CreERT2/wt;..."

Response of a neuron to one presentation, by the timestamps: with t = the timestamp of the onset
frame, the mean dF/F of the frames whose timestamps lie in [t + window_s[0], t + window_s[1])
minus the mean of those in [t - baseline_s, t). (Counting frames instead would be wrong: at the
Brain Observatory's 30.14 Hz half a second holds 16 frames after onset, not 15.) Responses
average all presentations of a scene, and the first ``n_repeats`` presentations of each scene (the
fewest any scene had) are kept as single trials. Blank sweeps (-1) are not stimuli. Several
experiments (areas, depths, Cre lines) combine into one dataset, neurons placed on the app's map
of the dorsal visual areas: each experiment's 400 um field of view is centred in its area (spread
when an area has several), each cell at its ROI centroid. The noise ceiling comes from ncsnr
estimated from the single trials (NSD formula, :mod:`backend.analysis.scores`); with a single
presentation of some scene there is no ceiling.

Every file is checked (datasets present, shapes agreeing, timestamps increasing, template of at
most 40 megapixels per scene) before the traces of any are read. Errors name files relative to root.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.analysis.scores import ncsnr_from_trials, noise_ceiling_from_ncsnr
from backend.data.demo.mouse import MOUSE_AREAS, area_outline
from backend.data.folder import check_image_shape
from backend.data.importers.common import (
    Progress,
    Staging,
    dataset_error_for,
    fingerprint_files,
    import_record,
    relative_errors,
    relative_message,
    reporter,
    save_npy_atomic,
    save_npz_atomic,
    save_png_atomic,
    short_list,
)
from backend.data.schema import DatasetError

PIPELINE = "processing/brain_observatory_pipeline"
DFF = f"{PIPELINE}/DfOverF/imaging_plane_1"
CELL_IDS = f"{PIPELINE}/ImageSegmentation/cell_specimen_ids"
ROIS = f"{PIPELINE}/ImageSegmentation/imaging_plane_1"
SCENES = ("stimulus/presentation/natural_scenes_stimulus", "stimulus/presentation/natural_scenes")
TEMPLATE = "stimulus/templates/natural_scenes_image_stack/data"
PLANE = "general/optophysiology/imaging_plane_1"
#: The 2P field of view: 512 x 512 pixels over about 400 um.
FOV_PIXELS = 512
FOV_MM = 0.4
#: Window edges are compared with timestamps this much early, so a frame whose timestamp is
#: mathematically on an edge (t + 0.5 s at exactly 30 Hz) falls on the side the half-open interval
#: says, whatever the last bit of the sum. Far below a frame interval (33 ms), far above rounding.
_EDGE_S = 1e-6


@dataclass
class Experiment:
    """One NWB file's natural-scenes responses.

    responses: float32 [n_scenes, n_cells] mean over presentations; trials: float32
    [n_presentations_kept, n_scenes, n_cells]; counts: int [n_scenes] presentations per scene;
    roi_xy: float [n_cells, 2] ROI centroid (column, row) in FOV pixels, NaN where unknown.
    """

    path: Path
    area: str
    depth_um: float
    cre_line: str
    experiment_id: int | None
    container_id: int | None
    cell_ids: np.ndarray
    responses: np.ndarray
    trials: np.ndarray
    counts: np.ndarray
    roi_xy: np.ndarray
    n_scenes: int
    template_shape: tuple[int, ...]


@relative_errors
def import_allen(
    root: Path,
    *,
    dataset_id: str | None = None,
    dest_root: Path | None = None,
    progress: Progress | None = None,
    files: list[Path] | None = None,
    window_s: tuple[float, float] = (0.0, 0.5),
    baseline_s: float = 0.5,
    test_fraction: float = 0.15,
    seed: int = 0,
    skip_without_scenes: bool = False,
    overwrite: bool = False,
) -> Path:
    """Combine the natural-scenes responses of NWB files into one neurons dataset; returns the folder.

    files: NWB files (default every *.nwb below root). window_s: response window after onset, s.
    baseline_s: baseline before onset, s (0: no baseline). test_fraction/seed: scenes held out as
    the test split. skip_without_scenes: leave out (and list) files without natural scenes
    instead of failing.
    """
    started = time.perf_counter()
    report = reporter(progress)
    root = Path(root).expanduser().resolve()
    paths = [Path(p).expanduser().resolve() for p in files] if files else sorted(p for p in root.rglob("*.nwb") if p.is_file())
    if not paths:
        raise DatasetError(f"{root}: no .nwb files found")
    if not window_s[1] > window_s[0] >= 0 or baseline_s < 0:
        raise DatasetError(f"window_s={window_s}, baseline_s={baseline_s}: need 0 <= start < end and baseline >= 0")
    if not 0 < test_fraction < 1:
        raise DatasetError(f"test_fraction={test_fraction}: must lie between 0 and 1")

    # Every file is checked before the traces of any are read: a bad last file fails at once.
    readable: list[Path] = []
    missing: list[str] = []
    shapes: dict[Path, tuple[int, ...]] = {}
    for k, path in enumerate(paths):
        report(f"checking {path.name}", 0.05 * k / len(paths))
        try:
            shapes[path] = check_experiment(path)
            readable.append(path)
        except NoNaturalScenes as err:
            if not skip_without_scenes:
                raise DatasetError(str(err)) from None
            missing.append(relative_message(str(err), root))
    if not readable:
        raise DatasetError(f"{root}: none of the {len(paths)} NWB file(s) has natural scenes")
    first = readable[0]
    for path in readable[1:]:
        if shapes[path] != shapes[first]:
            raise DatasetError(f"{path}: natural-scenes template {shapes[path]} differs from {first.name}'s {shapes[first]}")

    experiments: list[Experiment] = []
    for k, path in enumerate(readable):
        report(f"reading {path.name}", 0.05 + 0.55 * k / len(readable))
        experiments.append(read_experiment(path, window_s=window_s, baseline_s=baseline_s))
    first = experiments[0]

    n_scenes = first.n_scenes
    n_repeats = min(exp.trials.shape[0] for exp in experiments)
    responses = np.concatenate([exp.responses for exp in experiments], axis=1)
    trials = np.concatenate([exp.trials[:n_repeats] for exp in experiments], axis=2)
    ceiling = None
    if n_repeats >= 2:  # ncsnr needs repeats; the ceiling is for the mean over each scene's presentations
        ceiling = np.concatenate(
            [noise_ceiling_from_ncsnr(ncsnr_from_trials(exp.trials[:n_repeats]), exp.counts) for exp in experiments]
        ).astype(np.float32)
        notes = []
    else:
        notes = ["a scene was presented only once: no noise ceiling"]
    units, areas, cell_types, outlines = _place_neurons(experiments)
    is_test = np.zeros(n_scenes, bool)
    is_test[np.random.default_rng(seed).choice(n_scenes, max(1, int(round(test_fraction * n_scenes))), replace=False)] = True

    options = dict(window_s=list(window_s), baseline_s=baseline_s, test_fraction=test_fraction, seed=seed)
    params = {"kind": "allen", "options": options, "sources": fingerprint_files([e.path for e in experiments])}
    dataset_id = dataset_id or "allen-natural-scenes"
    with Staging(dataset_id, params, dest_root=dest_root, overwrite=overwrite) as staging:
        _write_templates(staging, first.path, n_scenes, lambda stage, f: report(stage, 0.6 + 0.35 * f))
        save_npy_atomic(staging.path("responses.npy"), responses)
        save_npy_atomic(staging.path("trials.npy"), trials)
        save_npy_atomic(staging.path("trial_stimuli.npy"), np.arange(n_scenes, dtype=np.int64))
        if ceiling is not None:
            save_npy_atomic(staging.path("noise_ceiling.npy"), ceiling)
        save_npz_atomic(staging.path("neurons.npz"), units)
        stimuli = [
            {"id": f"scene-{k:03d}", "image": f"images/scene-{k:03d}.png", "split": "test" if is_test[k] else "train", "scene": k}
            for k in range(n_scenes)
        ]
        record = [
            {
                "file": exp.path.name,
                "ophys_experiment_id": exp.experiment_id,
                "experiment_container_id": exp.container_id,
                "area": exp.area,
                "imaging_depth_um": exp.depth_um,
                "cre_line": exp.cre_line,
                "n_cells": int(len(exp.cell_ids)),
                "presentations_per_scene": [int(exp.counts.min()), int(exp.counts.max())],
            }
            for exp in experiments
        ]
        manifest = {
            "name": f"Allen Brain Observatory natural scenes ({len(experiments)} experiment{'s' * (len(experiments) > 1)})",
            "description": (
                f"{responses.shape[1]:,} neurons in {', '.join(sorted({e.area for e in experiments}))} responding to "
                f"{n_scenes} natural scenes (mean dF/F {window_s[0]:g}-{window_s[1]:g} s after onset minus the "
                f"{baseline_s:g} s before, averaged over presentations; {n_repeats} single trials kept per scene)."
            ),
            "simulated": False,
            "responses": "responses.npy",
            "response_units": "dF/F (window mean minus baseline mean)",
            "stimuli": stimuli,
            "unit_space": {
                "kind": "neurons",
                "units": "neurons.npz",
                "areas": areas,
                "cell_types": cell_types,
                "area_outlines": outlines,
            },
            "trials": {"file": "trials.npy", "stimuli": "trial_stimuli.npy"},
            **({"noise_ceiling": "noise_ceiling.npy"} if ceiling is not None else {}),
            "experiments": record,
            "import": import_record("allen", root, options, started=started, missing=missing, notes=notes),
        }
        final = staging.finish(manifest)
    report(f"done: {final}", 1.0)
    return final


class NoNaturalScenes(Exception):
    """An NWB file without the natural-scenes stimulus (e.g. a three_session_A or C file)."""


def check_experiment(path: Path) -> tuple[int, ...]:
    """Check one NWB file without reading its traces; returns the template shape [n_scenes, H, W].

    Raises NoNaturalScenes for a file of another session type, DatasetError for anything else.
    """
    import h5py

    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    with dataset_error_for(path, "NWB file"), h5py.File(path, "r") as f:
        return _check_file(f, path)


def _check_file(f, path: Path) -> tuple[int, ...]:
    """The datasets an open NWB file needs, their shapes and the template's size (no trace read)."""
    import h5py

    group = next((f[name] for name in SCENES if name in f), None)
    if group is None:
        session = _text(f, "general/session_type") or "unknown session type"
        raise NoNaturalScenes(f"{path}: no natural scenes stimulus (stimulus/presentation/natural_scenes_stimulus; {session})")
    for key in ("data", "frame_duration"):
        if key not in group or not isinstance(group[key], h5py.Dataset):
            raise DatasetError(f"{path}: {group.name}/{key} is missing")
    for key, what in ((TEMPLATE, "the natural scenes"), (f"{DFF}/data", "dF/F traces"), (f"{DFF}/timestamps", "frame times")):
        if key not in f or not isinstance(f[key], h5py.Dataset):
            raise DatasetError(f"{path}: {key} ({what}) is missing")
    template = f[TEMPLATE]
    if template.ndim != 3:
        raise DatasetError(f"{path}: natural-scenes template must be [n_scenes, height, width], got {template.shape}")
    if template.dtype.kind not in "uif":
        raise DatasetError(f"{path}: natural-scenes template must hold numbers, got {template.dtype}")
    check_image_shape(template.shape[1], template.shape[2], f"{path}: natural-scenes template")
    dff, times = f[f"{DFF}/data"], f[f"{DFF}/timestamps"]
    if dff.ndim != 2 or dff.dtype.kind not in "uif":
        raise DatasetError(f"{path}: dF/F traces must be numbers [n_cells, n_frames], got {dff.dtype} {dff.shape}")
    if times.size != dff.shape[1]:
        raise DatasetError(f"{path}: {times.size} frame times but {dff.shape[1]} frames of dF/F")
    if CELL_IDS in f and f[CELL_IDS].size != dff.shape[0]:
        raise DatasetError(f"{path}: dF/F traces {dff.shape} do not match {f[CELL_IDS].size} cell ids")
    n_shown, n_durations = group["data"].size, group["frame_duration"].size // 2
    if n_shown != n_durations or group["frame_duration"].size % 2:
        raise DatasetError(f"{path}: {n_shown} natural-scene presentations but {group['frame_duration'].shape} frame durations")
    return tuple(int(n) for n in template.shape)


def read_experiment(path: Path, *, window_s: tuple[float, float], baseline_s: float) -> Experiment:
    """Responses of one NWB file's cells to the natural scenes."""
    import h5py

    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    with dataset_error_for(path, "NWB file"), h5py.File(path, "r") as f:
        template_shape = _check_file(f, path)
        group = next(f[name] for name in SCENES if name in f)
        frames = np.asarray(group["data"], dtype=np.float64).reshape(-1)
        frame_duration = np.asarray(group["frame_duration"], dtype=np.float64).reshape(-1, 2)
        dff = np.asarray(f[f"{DFF}/data"], dtype=np.float64)
        timestamps = np.asarray(f[f"{DFF}/timestamps"], dtype=np.float64).reshape(-1)
        cell_ids = np.asarray(f[CELL_IDS]).reshape(-1).astype(np.int64) if CELL_IDS in f else np.arange(dff.shape[0], dtype=np.int64)
        area = _area(_text(f, f"{PLANE}/location"), path)
        depth = _depth(_text(f, f"{PLANE}/imaging depth"))
        cre = (_text(f, "general/subject/genotype") or "unknown").split(";")[0].split("/")[0].strip() or "unknown"
        experiment_id = _int(_text(f, "general/session_id"))
        container_id = _int(_text(f, "general/experiment_container_id"))
        roi_xy = _roi_centroids(f, dff.shape[0])

    n_scenes, n_frames = template_shape[0], dff.shape[1]
    if not np.isfinite(frames).all() or not np.isfinite(frame_duration).all():
        raise DatasetError(f"{path}: natural-scene presentations hold NaN or inf")
    scene = np.round(frames).astype(np.int64)
    if scene.max(initial=-1) >= n_scenes or scene.min(initial=0) < -1:
        raise DatasetError(f"{path}: scene indices must lie in -1..{n_scenes - 1}")
    if not np.isfinite(timestamps).all() or (n_frames > 1 and not (np.diff(timestamps) > 0).all()):
        raise DatasetError(f"{path}: {DFF}/timestamps must be finite and increasing")
    if not np.isfinite(dff).all():
        cell, frame = (int(i) for i in np.argwhere(~np.isfinite(dff))[0])
        raise DatasetError(f"{path}: dF/F traces hold NaN or inf (cell {cell}, frame {frame})")
    shown = scene >= 0
    onset = np.round(frame_duration[:, 0]).astype(np.int64)
    if ((onset < 0) | (onset >= n_frames))[shown].any():
        raise DatasetError(f"{path}: natural-scene onset frames must lie in 0..{n_frames - 1}")
    scene, onset = scene[shown], onset[shown]
    counts = np.bincount(scene, minlength=n_scenes)
    if counts.min() == 0:
        raise DatasetError(f"{path}: scene(s) {short_list(np.flatnonzero(counts == 0))} were never shown")

    response = window_responses(dff, timestamps, onset, window_s, baseline_s, path).T  # [presentations, cells]
    n_repeats = int(counts.min())
    responses = np.zeros((n_scenes, dff.shape[0]))
    np.add.at(responses, scene, response)
    responses /= counts[:, None]
    order = np.argsort(scene, kind="stable")  # presentations of each scene in the order shown
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    trials = np.empty((n_repeats, n_scenes, dff.shape[0]))
    for r in range(n_repeats):
        trials[r] = response[order[starts + r]]
    return Experiment(
        path=path, area=area, depth_um=depth, cre_line=cre, experiment_id=experiment_id, container_id=container_id,
        cell_ids=cell_ids, responses=responses.astype(np.float32), trials=trials.astype(np.float32), counts=counts,
        roi_xy=roi_xy, n_scenes=n_scenes, template_shape=template_shape,
    )


def window_responses(
    dff: np.ndarray, timestamps: np.ndarray, onset: np.ndarray, window_s: tuple[float, float], baseline_s: float, path: Path
) -> np.ndarray:
    """float64 [n_cells, n_presentations]: window mean minus baseline mean of each presentation.

    dff: [n_cells, n_frames] dF/F; timestamps: [n_frames] s, increasing; onset: [n_presentations]
    onset frame indices. With t = timestamps[onset], the window is the frames with timestamps in
    [t + window_s[0], t + window_s[1]) and the baseline those in [t - baseline_s, t) (none when
    baseline_s is 0). A presentation whose window or baseline the recording cuts is an error, as
    is an empty window (shorter than a frame interval).
    """
    t = timestamps[onset]
    edges = lambda offset: np.searchsorted(timestamps, t + offset - _EDGE_S)  # noqa: E731 - first frame at or after t + offset
    lo, hi = edges(window_s[0]), edges(window_s[1])
    cut = timestamps[-1] < t + window_s[1] - _EDGE_S  # no frame at or after the window's end: cut short
    if baseline_s > 0:
        b_lo, b_hi = edges(-baseline_s), edges(0.0)
        cut |= timestamps[0] > t - baseline_s + _EDGE_S  # the baseline starts before the first frame
    if cut.any():
        raise DatasetError(f"{path}: {int(cut.sum())} presentation(s) too close to the start or end of the recording for the window")
    if (hi <= lo).any() or (baseline_s > 0 and (b_hi <= b_lo).any()):
        raise DatasetError(f"{path}: window_s={tuple(window_s)} / baseline_s={baseline_s} holds no frame for some presentation")
    # Window means through cumulative sums: one pass over the traces, whatever the number of presentations.
    cumulative = np.concatenate([np.zeros((dff.shape[0], 1)), np.cumsum(dff, axis=1)], axis=1)
    response = (cumulative[:, hi] - cumulative[:, lo]) / (hi - lo)
    if baseline_s > 0:
        response -= (cumulative[:, b_hi] - cumulative[:, b_lo]) / (b_hi - b_lo)
    return response


def _write_templates(staging: Staging, path: Path, n_scenes: int, report) -> None:
    """Grayscale PNG per scene at native size (918 x 1174 in the Brain Observatory)."""
    import h5py

    with dataset_error_for(path, "NWB file"), h5py.File(path, "r") as f:
        stack = f[TEMPLATE]
        for k in range(n_scenes):
            target = staging.path(f"images/scene-{k:03d}.png")
            if not target.exists():
                # Some files store the uint8 scenes as float32.
                save_png_atomic(target, np.clip(np.round(np.asarray(stack[k], dtype=np.float64)), 0, 255).astype(np.uint8))
            if k % 20 == 0:
                report(f"scenes {k}/{n_scenes}", k / n_scenes)


def _place_neurons(experiments: list[Experiment]) -> tuple[dict[str, np.ndarray], list[str], list[str], dict]:
    """neurons.npz columns, area names, cell-type names and outlines for the dorsal map."""
    found = {e.area for e in experiments}
    areas = [a for a in MOUSE_AREAS if a in found] + sorted(found - set(MOUSE_AREAS))
    cell_types = sorted({e.cre_line for e in experiments})
    per_area: dict[str, list[int]] = {}
    for k, e in enumerate(experiments):
        per_area.setdefault(e.area, []).append(k)
    columns: dict[str, list[np.ndarray]] = {key: [] for key in ("area", "x", "y", "depth", "cell_type", "cell_specimen_id", "experiment")}
    for k, e in enumerate(experiments):
        n = len(e.cell_ids)
        if e.area in MOUSE_AREAS:
            (cx, cy, rx, ry), _ = MOUSE_AREAS[e.area]
        else:  # an area the map does not draw: a row below the map
            cx, cy, rx, ry = 0.0, -2.0 - 0.6 * areas.index(e.area), 0.3, 0.3
        siblings = per_area[e.area]
        if len(siblings) > 1:  # several fields of view in one area: spread them on a ring
            angle = 2 * np.pi * siblings.index(k) / len(siblings)
            cx, cy = cx + 0.45 * rx * np.cos(angle), cy + 0.45 * ry * np.sin(angle)
        xy = e.roi_xy.copy()
        unknown = ~np.isfinite(xy).all(axis=1)
        if unknown.any():  # no ROI masks: a deterministic spiral over the field of view
            i = np.arange(unknown.sum())
            radius = 0.45 * FOV_PIXELS * np.sqrt((i + 0.5) / max(1, unknown.sum()))
            xy[unknown] = FOV_PIXELS / 2 + np.stack([radius * np.cos(2.4 * i), radius * np.sin(2.4 * i)], axis=1)
        scale = FOV_MM / FOV_PIXELS
        columns["area"].append(np.full(n, areas.index(e.area)))
        columns["x"].append(cx + (xy[:, 0] - FOV_PIXELS / 2) * scale)
        columns["y"].append(cy - (xy[:, 1] - FOV_PIXELS / 2) * scale)  # image rows grow downwards
        columns["depth"].append(np.full(n, e.depth_um))
        columns["cell_type"].append(np.full(n, cell_types.index(e.cre_line)))
        columns["cell_specimen_id"].append(e.cell_ids)
        columns["experiment"].append(np.full(n, k))
    dtypes = {"area": np.int16, "x": np.float32, "y": np.float32, "depth": np.float32, "cell_type": np.int16,
              "cell_specimen_id": np.int64, "experiment": np.int16}
    units = {key: np.concatenate(parts).astype(dtypes[key]) for key, parts in columns.items()}
    outlines = {a: area_outline(a).round(4).tolist() for a in areas if a in MOUSE_AREAS}
    return units, areas, cell_types, outlines


def _roi_centroids(f, n_cells: int) -> np.ndarray:
    """float [n_cells, 2] ROI centroid (column, row) in pixels from the segmentation masks; NaN if absent."""
    out = np.full((n_cells, 2), np.nan)
    if f"{ROIS}/roi_list" not in f:
        return out
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in np.asarray(f[f"{ROIS}/roi_list"]).reshape(-1)]
    for i, name in enumerate(names[:n_cells]):
        key = f"{ROIS}/{name}/img_mask"
        if key in f:
            rows, cols = np.nonzero(np.asarray(f[key]))
            if len(rows):
                out[i] = cols.mean(), rows.mean()
    return out


def _text(f, key: str) -> str | None:
    if key not in f:
        return None
    value = f[key][()]
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0] if value.size else ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _area(location: str | None, path: Path) -> str:
    if not location:
        raise DatasetError(f"{path}: {PLANE}/location (the targeted area) is missing")
    match = re.search(r"VIS[A-Za-z]*", location)
    return match.group(0) if match else location.strip()


def _depth(text: str | None) -> float:
    match = re.search(r"[-+]?\d+(\.\d+)?", text or "")
    return float(match.group(0)) if match else 0.0


def _int(text: str | None) -> int | None:
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return None
