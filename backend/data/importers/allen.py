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

Response of a neuron to one presentation = mean dF/F over ``window_s`` after the onset frame minus
the mean over ``baseline_s`` before it; responses average all presentations of a scene, and the
first ``n_repeats`` presentations of each scene (the fewest any scene had) are kept as single
trials. Blank sweeps (-1) are not stimuli. Several experiments (areas, depths, Cre lines) combine
into one dataset, neurons placed on the app's map of the dorsal visual areas: each experiment's
400 um field of view is centred in its area (spread when an area has several), each cell at its
ROI centroid. The noise ceiling comes from ncsnr estimated from the single trials (NSD formula).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.data.demo.mouse import MOUSE_AREAS, area_outline
from backend.data.importers.ceiling import ncsnr_from_trials, noise_ceiling_from_ncsnr
from backend.data.importers.common import (
    Progress,
    Staging,
    dataset_error_for,
    fingerprint_files,
    import_record,
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

    experiments: list[Experiment] = []
    missing: list[str] = []
    for k, path in enumerate(paths):
        report(f"reading {path.name}", 0.6 * k / len(paths))
        try:
            experiments.append(read_experiment(path, window_s=window_s, baseline_s=baseline_s))
        except NoNaturalScenes as err:
            if not skip_without_scenes:
                raise DatasetError(str(err)) from None
            missing.append(str(err))
    if not experiments:
        raise DatasetError(f"{root}: none of the {len(paths)} NWB file(s) has natural scenes")
    first = experiments[0]
    for exp in experiments[1:]:
        if exp.template_shape != first.template_shape:
            raise DatasetError(f"{exp.path}: natural-scenes template {exp.template_shape} differs from {first.path.name}'s {first.template_shape}")

    n_scenes = first.n_scenes
    n_repeats = min(exp.trials.shape[0] for exp in experiments)
    responses = np.concatenate([exp.responses for exp in experiments], axis=1)
    trials = np.concatenate([exp.trials[:n_repeats] for exp in experiments], axis=2)
    ceiling = np.concatenate(
        [noise_ceiling_from_ncsnr(ncsnr_from_trials(exp.trials[:n_repeats]), exp.counts) for exp in experiments]
    )
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
            "noise_ceiling": "noise_ceiling.npy",
            "experiments": record,
            "import": import_record("allen", root, options, started=started, missing=missing),
        }
        final = staging.finish(manifest)
    report(f"done: {final}", 1.0)
    return final


class NoNaturalScenes(Exception):
    """An NWB file without the natural-scenes stimulus (e.g. a three_session_A or C file)."""


def read_experiment(path: Path, *, window_s: tuple[float, float], baseline_s: float) -> Experiment:
    """Responses of one NWB file's cells to the natural scenes."""
    import h5py

    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    with dataset_error_for(path, "NWB file"), h5py.File(path, "r") as f:
        group = next((f[name] for name in SCENES if name in f), None)
        if group is None:
            session = _text(f, "general/session_type") or "unknown session type"
            raise NoNaturalScenes(f"{path}: no natural scenes stimulus (stimulus/presentation/natural_scenes_stimulus; {session})")
        for key in ("data", "frame_duration"):
            if key not in group:
                raise DatasetError(f"{path}: {group.name}/{key} is missing")
        if TEMPLATE not in f:
            raise DatasetError(f"{path}: {TEMPLATE} (the natural scenes) is missing")
        if f"{DFF}/data" not in f:
            raise DatasetError(f"{path}: {DFF}/data (dF/F traces) is missing")
        frames = np.asarray(group["data"]).reshape(-1)
        frame_duration = np.asarray(group["frame_duration"]).reshape(-1, 2)
        dff = np.asarray(f[f"{DFF}/data"], dtype=np.float64)
        timestamps = np.asarray(f[f"{DFF}/timestamps"], dtype=np.float64) if f"{DFF}/timestamps" in f else None
        cell_ids = np.asarray(f[CELL_IDS]).astype(np.int64) if CELL_IDS in f else np.arange(dff.shape[0], dtype=np.int64)
        template_shape = tuple(int(s) for s in f[TEMPLATE].shape)
        area = _area(_text(f, f"{PLANE}/location"), path)
        depth = _depth(_text(f, f"{PLANE}/imaging depth"))
        cre = (_text(f, "general/subject/genotype") or "unknown").split(";")[0].split("/")[0].strip() or "unknown"
        experiment_id = _int(_text(f, "general/session_id"))
        container_id = _int(_text(f, "general/experiment_container_id"))
        roi_xy = _roi_centroids(f, dff.shape[0])

    if dff.ndim != 2 or len(cell_ids) != dff.shape[0]:
        raise DatasetError(f"{path}: dF/F traces {dff.shape} do not match {len(cell_ids)} cell ids")
    if len(frames) != len(frame_duration):
        raise DatasetError(f"{path}: {len(frames)} natural-scene presentations but {len(frame_duration)} frame durations")
    if len(template_shape) != 3:
        raise DatasetError(f"{path}: natural-scenes template must be [n_scenes, height, width], got {template_shape}")
    n_scenes = template_shape[0]
    scene = np.round(frames).astype(np.int64)
    if scene.max(initial=-1) >= n_scenes or scene.min(initial=0) < -1:
        raise DatasetError(f"{path}: scene indices must lie in -1..{n_scenes - 1}")
    shown = scene >= 0
    onset = np.round(frame_duration[:, 0]).astype(np.int64)

    rate = 1.0 / float(np.median(np.diff(timestamps))) if timestamps is not None and len(timestamps) > 1 else 30.0
    w0, w1 = int(round(window_s[0] * rate)), max(int(round(window_s[1] * rate)), int(round(window_s[0] * rate)) + 1)
    nb = int(round(baseline_s * rate))
    n_frames = dff.shape[1]
    inside = (onset - nb >= 0) & (onset + w1 <= n_frames)
    if (shown & ~inside).any():
        raise DatasetError(f"{path}: {int((shown & ~inside).sum())} presentation(s) too close to the end of the recording for the window")
    scene, onset = scene[shown], onset[shown]
    counts = np.bincount(scene, minlength=n_scenes)
    if counts.min() == 0:
        raise DatasetError(f"{path}: scene(s) {short_list(np.flatnonzero(counts == 0))} were never shown")

    # Window means through cumulative sums: one pass over the traces, whatever the number of presentations.
    cumulative = np.concatenate([np.zeros((dff.shape[0], 1)), np.cumsum(dff, axis=1)], axis=1)
    response = (cumulative[:, onset + w1] - cumulative[:, onset + w0]) / (w1 - w0)
    if nb > 0:
        response -= (cumulative[:, onset] - cumulative[:, onset - nb]) / nb
    response = response.T  # [presentations, cells]

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
