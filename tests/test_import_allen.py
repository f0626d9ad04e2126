"""Allen Brain Observatory import: miniature NWB (HDF5) files at the Brain Observatory's paths, every number checked."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from backend.data.demo.mouse import MOUSE_AREAS
from backend.data.folder import load_folder
from backend.data.importers import IMPORTERS
from backend.data.importers.allen import import_allen
from backend.data.schema import DatasetError

N_SCENES = 5
RATE = 30.0  # imaging frames per second
PIPE = "processing/brain_observatory_pipeline"


def write_nwb(
    path: Path, *, seed: int, area: str, depth: str, genotype: str, n_cells: int, repeats: int, float_template=False, scenes=True,
    rate: float = RATE, identical_cell: bool = False,
) -> dict:
    """A Brain Observatory NWB file; ``identical_cell``: cell 0 holds a level per scene for the whole
    time a scene is up (blank: 0), so with no baseline every presentation of a scene gives the same
    response (dyadic levels: exact in float32)."""
    rng = np.random.default_rng(seed)
    order = np.concatenate([np.repeat(np.arange(N_SCENES), repeats), [-1, -1]])  # -1: blank sweeps
    order = rng.permutation(order)
    onsets = 20 + 20 * np.arange(len(order))
    n_frames = int(onsets[-1] + 40)
    dff = rng.normal(size=(n_cells, n_frames)).astype(np.float32)
    if identical_cell:
        dff[0] = 0
        for scene, onset in zip(order, onsets, strict=True):
            dff[0, onset : onset + 20] = 0.5 + 0.25 * scene if scene >= 0 else 0.0
    timestamps = 10.0 + np.arange(n_frames) / rate
    template = rng.integers(0, 256, (N_SCENES, 6, 8)).astype(np.float32 if float_template else np.uint8)
    centroids = rng.integers(20, 490, (n_cells, 2))  # (row, col) of each ROI's 3x3 mask centre
    with h5py.File(path, "w") as f:
        f[f"{PIPE}/DfOverF/imaging_plane_1/data"] = dff
        f[f"{PIPE}/DfOverF/imaging_plane_1/timestamps"] = timestamps
        f[f"{PIPE}/ImageSegmentation/cell_specimen_ids"] = 500_000 + seed * 100 + np.arange(n_cells)
        f[f"{PIPE}/ImageSegmentation/imaging_plane_1/roi_list"] = np.array([f"roi{i}".encode() for i in range(n_cells)])
        for i, (r, c) in enumerate(centroids):
            mask = np.zeros((512, 512), np.uint8)
            mask[r - 1 : r + 2, c - 1 : c + 2] = 1
            f.create_dataset(f"{PIPE}/ImageSegmentation/imaging_plane_1/roi{i}/img_mask", data=mask, compression="gzip")
        if scenes:
            f["stimulus/presentation/natural_scenes_stimulus/data"] = order.astype(np.float64)[:, None]
            f["stimulus/presentation/natural_scenes_stimulus/frame_duration"] = np.stack([onsets, onsets + 7], axis=1).astype(np.float64)
            f["stimulus/templates/natural_scenes_image_stack/data"] = template
        else:
            f["stimulus/presentation/drifting_gratings_stimulus/data"] = np.zeros((3, 3))
        f["general/optophysiology/imaging_plane_1/location"] = np.bytes_(area)
        f["general/optophysiology/imaging_plane_1/imaging depth"] = np.bytes_(depth)
        f["general/subject/genotype"] = np.bytes_(genotype)
        f["general/session_id"] = np.bytes_(str(600 + seed))
        f["general/session_type"] = np.bytes_("three_session_B" if scenes else "three_session_A")
    return dict(order=order, onsets=onsets, dff=dff.astype(np.float64), template=template, centroids=centroids, n_cells=n_cells, timestamps=timestamps)


def expected_responses(exp: dict, n_repeats: int):
    """Mean dF/F in 0-0.5 s (15 frames) after onset minus the 0.5 s before, per presentation."""
    per_scene = {k: [] for k in range(N_SCENES)}
    for scene, onset in zip(exp["order"], exp["onsets"], strict=True):
        if scene >= 0:
            per_scene[scene].append(exp["dff"][:, onset : onset + 15].mean(axis=1) - exp["dff"][:, onset - 15 : onset].mean(axis=1))
    responses = np.stack([np.mean(per_scene[k], axis=0) for k in range(N_SCENES)])
    trials = np.stack([np.stack([per_scene[k][r] for k in range(N_SCENES)]) for r in range(n_repeats)])
    return responses, trials, np.array([len(per_scene[k]) for k in range(N_SCENES)])


def reference_ceiling(trials: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """NSD's ncsnr and noise ceiling, written out unit by unit."""
    out = []
    for u in range(trials.shape[2]):
        x = trials[:, :, u]
        z = (x - x.mean()) / x.std()
        noise_var = np.mean([np.var(z[:, k], ddof=1) for k in range(x.shape[1])])
        ncsnr = np.sqrt(max(0.0, 1 - noise_var)) / np.sqrt(noise_var)
        out.append(100 * ncsnr**2 / (ncsnr**2 + np.mean(1 / counts)))
    return np.array(out)


@pytest.fixture()
def nwb_files(tmp_path) -> tuple[Path, list[dict]]:
    root = tmp_path / "allen"
    root.mkdir()
    exps = [
        write_nwb(root / "ophys_experiment_1.nwb", seed=1, area="VISp", depth="175 microns", genotype="Cux2-CreERT2/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/wt", n_cells=3, repeats=4),
        write_nwb(root / "ophys_experiment_2.nwb", seed=2, area="VISl", depth="375 microns", genotype="Rbp4-Cre_KL100/wt;Ai93", n_cells=2, repeats=3, float_template=True),
        write_nwb(root / "ophys_experiment_3.nwb", seed=3, area="VISp", depth="275 microns", genotype="Rorb-IRES2-Cre/wt", n_cells=2, repeats=3),
    ]
    return root, exps


def test_responses_trials_ceiling_and_scenes(nwb_files, tmp_path):
    root, exps = nwb_files
    folder = IMPORTERS["allen"](root, dest_root=tmp_path / "out")
    ds = load_folder(folder)
    n_repeats = 3  # the fewest presentations of any scene in any file
    parts = [expected_responses(e, n_repeats) for e in exps]
    np.testing.assert_allclose(ds.responses, np.hstack([p[0] for p in parts]), atol=1e-6)
    assert ds.trials.shape == (n_repeats, N_SCENES, 7) and ds.trial_stimuli.tolist() == list(range(N_SCENES))
    np.testing.assert_allclose(ds.trials, np.concatenate([p[1] for p in parts], axis=2), atol=1e-6)
    np.testing.assert_allclose(ds.noise_ceiling, np.concatenate([reference_ceiling(p[1], p[2]) for p in parts]), rtol=1e-4, atol=1e-4)
    # Scenes: grayscale PNGs at native size, blank sweeps (-1) are not stimuli.
    assert ds.stimuli.ids == tuple(f"scene-{k:03d}" for k in range(N_SCENES))
    for k in range(N_SCENES):
        image = np.asarray(Image.open(ds.stimuli.image_paths[k]))
        assert image.dtype == np.uint8 and image.ndim == 2
        np.testing.assert_array_equal(image, exps[0]["template"][k])
    assert len(ds.stimuli.indices("test")) == 1


def test_neurons_sit_in_their_areas_with_depth_and_cre_line(nwb_files, tmp_path):
    root, exps = nwb_files
    folder = import_allen(root, dest_root=tmp_path / "out", dataset_id="mouse")
    ds = load_folder(folder)
    space = ds.space
    assert space.areas == ("VISp", "VISl") and space.cell_types == ("Cux2-CreERT2", "Rbp4-Cre_KL100", "Rorb-IRES2-Cre")
    assert space.area.tolist() == [0, 0, 0, 1, 1, 0, 0]
    assert space.cell_type.tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert space.depth.tolist() == [175] * 3 + [375] * 2 + [275] * 2
    assert set(space.area_outlines) == {"VISp", "VISl"}
    # Field-of-view centres: VISl alone at its centre; the two VISp experiments on a ring around VISp's.
    centres = []
    (px, py, prx, pry), _ = MOUSE_AREAS["VISp"]
    centres.append((px + 0.45 * prx, py))
    centres.append(MOUSE_AREAS["VISl"][0][:2])
    centres.append((px - 0.45 * prx, py))
    start = 0
    for exp, (cx, cy) in zip(exps, centres, strict=True):
        rows, cols = exp["centroids"][:, 0], exp["centroids"][:, 1]
        n = exp["n_cells"]
        np.testing.assert_allclose(space.x[start : start + n], cx + (cols - 256) * 0.4 / 512, atol=1e-5)
        np.testing.assert_allclose(space.y[start : start + n], cy - (rows - 256) * 0.4 / 512, atol=1e-5)
        start += n
    manifest = json.loads((folder / "manifest.json").read_text())
    units = np.load(folder / "neurons.npz")
    assert units["cell_specimen_id"].tolist() == [500100, 500101, 500102, 500200, 500201, 500300, 500301]
    assert [e["imaging_depth_um"] for e in manifest["experiments"]] == [175, 375, 275]
    assert [e["ophys_experiment_id"] for e in manifest["experiments"]] == [601, 602, 603]
    assert manifest["experiments"][0]["presentations_per_scene"] == [4, 4]


def test_window_options_change_the_arithmetic(nwb_files, tmp_path):
    root, exps = nwb_files
    folder = import_allen(root, dest_root=tmp_path / "out", files=[root / "ophys_experiment_2.nwb"], window_s=(0.1, 0.3), baseline_s=0.0)
    ds = load_folder(folder)
    exp = exps[1]
    sums = np.zeros((N_SCENES, exp["n_cells"]))
    counts = np.zeros(N_SCENES)
    for scene, onset in zip(exp["order"], exp["onsets"], strict=True):
        if scene >= 0:
            sums[scene] += exp["dff"][:, onset + 3 : onset + 9].mean(axis=1)  # 0.1-0.3 s at 30 Hz: frames 3..8
            counts[scene] += 1
    np.testing.assert_allclose(ds.responses, sums / counts[:, None], atol=1e-6)


def test_files_without_natural_scenes_and_damaged_files(nwb_files, tmp_path):
    root, _ = nwb_files
    write_nwb(root / "ophys_experiment_9.nwb", seed=9, area="VISam", depth="175 microns", genotype="Vip", n_cells=2, repeats=3, scenes=False)
    with pytest.raises(DatasetError) as err:
        import_allen(root, dest_root=tmp_path / "out")
    text = str(err.value)
    assert "ophys_experiment_9.nwb: no natural scenes stimulus" in text and "three_session_A" in text and "\n" not in text
    folder = import_allen(root, dest_root=tmp_path / "out", skip_without_scenes=True)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert len(manifest["import"]["missing"]) == 1 and "ophys_experiment_9.nwb" in manifest["import"]["missing"][0]
    assert load_folder(folder).n_units == 7

    broken = root / "ophys_experiment_2.nwb"
    broken.write_bytes(broken.read_bytes()[:5000])
    with pytest.raises(DatasetError) as err:
        import_allen(root, dest_root=tmp_path / "other", files=[broken])
    assert str(err.value).startswith("ophys_experiment_2.nwb: unreadable NWB file") and "\n" not in str(err.value)
    assert str(root) not in str(err.value)  # named relative to the root given
    with h5py.File(root / "ophys_experiment_3.nwb", "a") as f:
        del f[f"{PIPE}/DfOverF/imaging_plane_1/data"]
    with pytest.raises(DatasetError, match=r"ophys_experiment_3\.nwb: .*dF/F traces\) is missing"):
        import_allen(root, dest_root=tmp_path / "other", files=[root / "ophys_experiment_3.nwb"])
    with pytest.raises(DatasetError, match="no .nwb files"):
        import_allen(tmp_path / "out", dest_root=tmp_path / "other")


def by_timestamps(exp: dict, window: tuple[float, float], baseline: float) -> tuple[np.ndarray, np.ndarray]:
    """The documented definition, written out presentation by presentation: mean dF/F of the frames
    whose timestamps lie in [onset + window[0], onset + window[1]) minus the mean of those in
    [onset - baseline, onset), onset = the timestamp of the onset frame. Returns (responses
    [n_scenes, n_cells], frames per response window of each presentation)."""
    ts = exp["timestamps"]
    per_scene = {k: [] for k in range(N_SCENES)}
    frames = []
    for scene, onset in zip(exp["order"], exp["onsets"], strict=True):
        if scene < 0:
            continue
        t = ts[onset]
        after = (ts >= t + window[0]) & (ts < t + window[1])
        response = exp["dff"][:, after].mean(axis=1)
        if baseline > 0:
            before = (ts >= t - baseline) & (ts < t)
            response = response - exp["dff"][:, before].mean(axis=1)
        per_scene[scene].append(response)
        frames.append(int(after.sum()))
    return np.stack([np.mean(per_scene[k], axis=0) for k in range(N_SCENES)]), np.array(frames)


def test_response_window_is_counted_by_timestamps_not_frames(tmp_path):
    """At the Brain Observatory's 30.14 Hz, [onset, onset + 0.5 s) holds 16 frames, not 15."""
    root = tmp_path / "allen"
    root.mkdir()
    exp = write_nwb(root / "ophys_experiment_1.nwb", seed=4, area="VISp", depth="175 microns", genotype="Cux2", n_cells=4, repeats=3, rate=30.14)
    expected, frames = by_timestamps(exp, (0.0, 0.5), 0.5)
    assert set(frames.tolist()) == {16}
    ds = load_folder(import_allen(root, dest_root=tmp_path / "out"))
    np.testing.assert_allclose(ds.responses, expected, atol=1e-6)
    # Another window: 0.1-0.35 s after onset, no baseline.
    expected, _ = by_timestamps(exp, (0.1, 0.35), 0.0)
    ds = load_folder(import_allen(root, dest_root=tmp_path / "out2", window_s=(0.1, 0.35), baseline_s=0.0))
    np.testing.assert_allclose(ds.responses, expected, atol=1e-6)


def test_identical_repeats_give_a_full_noise_ceiling(tmp_path):
    """A neuron answering each scene the same way every time has no noise: its ceiling is 100%."""
    root = tmp_path / "allen"
    root.mkdir()
    exp = write_nwb(root / "ophys_experiment_1.nwb", seed=5, area="VISp", depth="175 microns", genotype="Cux2", n_cells=3, repeats=4, identical_cell=True)
    ds = load_folder(import_allen(root, dest_root=tmp_path / "out", baseline_s=0.0))
    np.testing.assert_array_equal(ds.trials[:, :, 0], np.broadcast_to(0.5 + 0.25 * np.arange(N_SCENES), (4, N_SCENES)))
    assert ds.noise_ceiling[0] == 100
    np.testing.assert_allclose(ds.noise_ceiling[1:], reference_ceiling(ds.trials[:, :, 1:].astype(np.float64), np.full(N_SCENES, 4)), rtol=1e-4)
    assert exp["n_cells"] == 3


def test_every_file_is_checked_before_any_trace_is_read(nwb_files, tmp_path, monkeypatch):
    from backend.data.importers import allen

    root, _ = nwb_files
    with h5py.File(root / "ophys_experiment_3.nwb", "a") as f:
        del f["stimulus/templates/natural_scenes_image_stack/data"]
    read = []
    original = allen.read_experiment
    monkeypatch.setattr(allen, "read_experiment", lambda path, **kw: read.append(path.name) or original(path, **kw))
    with pytest.raises(DatasetError) as err:
        import_allen(root, dest_root=tmp_path / "out")
    assert str(err.value).startswith("ophys_experiment_3.nwb: stimulus/templates/natural_scenes_image_stack/data")
    assert read == [], "the traces of the good files were read before the bad file was found"
