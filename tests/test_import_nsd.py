"""NSD import: miniature files in the real formats (.mgh, .mat, .hdf5, .csv, COCO json), every number checked."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import scipy.io
from PIL import Image

from backend.data.catalog import list_datasets
from backend.data.folder import load_folder
from backend.data.importers import IMPORTERS
from backend.data.importers.nsd import import_nsd
from backend.data.schema import DatasetError

N_VERTICES = 2562  # fsaverage4 hemisphere in the files; imported on fsaverage3 (first 642)
N_KEEP = 642
N_SESSIONS = 3
TRIALS = 750
N_COLUMNS = 1250  # the subject's "10k" images in this miniature design
N_BRICK = 3000
STREAMS = ["Unknown", "early", "midventral", "midlateral", "midparietal", "ventral", "lateral", "parietal"]


def _mgh(path: Path, data: np.ndarray) -> None:
    nib.save(nib.MGHImage(data.reshape(data.shape[0], 1, 1, -1) if data.ndim == 2 else data.reshape(-1, 1, 1), np.eye(4)), str(path))


def write_nsd(root: Path, *, dtype=np.float32) -> dict:
    """A miniature NSD download; returns what was written, for the checks."""
    rng = np.random.default_rng(7)
    betas_dir = root / "nsddata_betas/ppdata/subj01/fsaverage/betas_fithrf_GLMdenoise_RR"
    design_dir = root / "nsddata/experiments/nsd"
    label_dir = root / "nsddata/freesurfer/fsaverage/label"
    stim_dir = root / "nsddata_stimuli/stimuli/nsd"
    for d in (betas_dir, design_dir, label_dir, stim_dir, root / "annotations"):
        d.mkdir(parents=True, exist_ok=True)

    # Design: columns 1..500 shown three times, 501..1250 once, in shuffled order (1-based, as MATLAB).
    columns = np.concatenate([np.repeat(np.arange(1, 501), 3), np.arange(501, N_COLUMNS + 1)])
    masterordering = rng.permutation(columns)[None, :]
    subjectim = np.stack([rng.choice(N_BRICK, N_COLUMNS, replace=False) + 1 for _ in range(2)])
    shared_1based = np.sort(np.concatenate([subjectim[0, :40], subjectim[0, 500:510]]))
    scipy.io.savemat(design_dir / "nsd_expdesign.mat", {"masterordering": masterordering, "subjectim": subjectim, "sharedix": shared_1based[None, :]})

    betas = {}
    for s in range(1, N_SESSIONS + 1):
        for hemi in ("lh", "rh"):
            offset = rng.normal(0, 3, (N_VERTICES, 1))
            scale = rng.uniform(0.5, 2.0, (N_VERTICES, 1))
            values = (offset + scale * rng.normal(0, 1, (N_VERTICES, TRIALS))).astype(np.float32)
            if dtype == np.int16:
                values = np.round(values * 300).astype(np.int16)
            values[5] = 0  # a vertex outside the brain mask: no variance
            betas[(s, hemi)] = values
            _mgh(betas_dir / f"{hemi}.betas_session{s:02d}.mgh", values)
    ncsnr = {hemi: rng.uniform(0, 1.5, N_VERTICES).astype(np.float32) for hemi in ("lh", "rh")}
    for hemi, values in ncsnr.items():
        _mgh(betas_dir / f"{hemi}.ncsnr.mgh", values)

    streams = {hemi: rng.integers(0, 8, N_VERTICES).astype(np.int32) for hemi in ("lh", "rh")}
    general = {hemi: rng.choice([-1, 0, 1], N_VERTICES).astype(np.int32) for hemi in ("lh", "rh")}
    for hemi in ("lh", "rh"):
        _mgh(label_dir / f"{hemi}.streams.mgz", streams[hemi])
        _mgh(label_dir / f"{hemi}.nsdgeneral.mgz", general[hemi])
    (label_dir / "streams.mgz.ctab").write_text("".join(f"{i} {n}\n" for i, n in enumerate(STREAMS)))
    (label_dir / "nsdgeneral.mgz.ctab").write_text("#$colortable\n0 Unknown 0 0 0 0\n1 nsdgeneral 255 0 0 0\n")

    brick = rng.integers(0, 256, (N_BRICK, 6, 5, 3), dtype=np.uint8)
    with h5py.File(stim_dir / "nsd_stimuli.hdf5", "w") as f:
        f.create_dataset("imgBrick", data=brick, chunks=(1, 6, 5, 3))

    coco_id = 100_000 + 7 * np.arange(N_BRICK)
    shared0 = set((shared_1based - 1).tolist())
    lines = [",cocoId,cocoSplit,cropBox,loss,nsdId,flagged,BOLD5000,shared1000"]
    for i in range(N_BRICK):
        split = "val2017" if i % 5 == 0 else "train2017"
        lines.append(f'{i},{coco_id[i]},{split},"(0, 0, 0.1, 0.1)",0.0,{i},False,False,{i in shared0}')
    (design_dir / "nsd_stim_info_merged.csv").write_text("\n".join(lines) + "\n")
    captions = {}
    for split in ("train2017", "val2017"):
        annotations = []
        for i in range(N_BRICK):
            if (split == "val2017") == (i % 5 == 0):
                texts = [f"image {i} caption {k}" for k in range(2 + i % 4)]
                captions[i] = texts
                annotations += [{"image_id": int(coco_id[i]), "id": int(i * 10 + k), "caption": t + "  "} for k, t in enumerate(texts)]
        (root / "annotations" / f"captions_{split}.json").write_text(json.dumps({"annotations": annotations}))
    return dict(
        masterordering=masterordering[0], subjectim=subjectim, shared=shared0, betas=betas, ncsnr=ncsnr,
        streams=streams, general=general, brick=brick, coco_id=coco_id, captions=captions, betas_dir=betas_dir,
    )


def expected(truth: dict, sessions: list[int], *, zscore: bool, scale: float = 1.0):
    """The dataset computed the plain way: trial by trial, with MATLAB's 1-based indices."""
    per_image = defaultdict(list)
    for s in sessions:
        data = np.concatenate([truth["betas"][(s, h)][:N_KEEP] for h in ("lh", "rh")]).astype(np.float64) * scale
        if zscore:
            sd = data.std(axis=1, keepdims=True)
            data = (data - data.mean(axis=1, keepdims=True)) / np.where(sd == 0, 1, sd)
        for j in range(TRIALS):
            t = (s - 1) * TRIALS + j
            column = truth["masterordering"][t]  # 1-based into subjectim's columns
            nsd_id = truth["subjectim"][0, column - 1] - 1  # 1-based 73k id -> 0-based
            per_image[nsd_id].append(data[:, j])
    ids = sorted(per_image)
    responses = np.stack([np.mean(per_image[i], axis=0) for i in ids])
    return ids, responses, per_image


@pytest.fixture(scope="module")
def nsd_source(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("nsd-source")
    return root, write_nsd(root)


@pytest.fixture(scope="module")
def imported(nsd_source, tmp_path_factory):
    root, truth = nsd_source
    dest = tmp_path_factory.mktemp("datasets")
    messages = []
    folder = IMPORTERS["nsd"](root, dest_root=dest, mesh="fsaverage3", progress=lambda s, f: messages.append((s, f)))
    return folder, truth, messages


def test_responses_are_zscored_per_session_and_averaged_over_repeats(imported):
    folder, truth, _ = imported
    ds = load_folder(folder)
    ids, responses, per_image = expected(truth, [1, 2, 3], zscore=True)
    assert ds.stimuli.ids == tuple(f"nsd-{i:05d}" for i in ids)
    assert len(ids) == N_COLUMNS  # every column of the design was shown at least once
    assert ds.responses.dtype == np.float32 and ds.responses.shape == (N_COLUMNS, 2 * N_KEEP)
    assert isinstance(np.load(folder / "responses.npy", mmap_mode="r"), np.memmap)
    np.testing.assert_allclose(ds.responses, responses, atol=2e-6)
    assert np.all(ds.responses[:, 5] == 0) and np.all(ds.responses[:, N_KEEP + 5] == 0)  # no NaN from zero variance
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [s["n_trials"] for s in manifest["stimuli"]] == [len(per_image[i]) for i in ids]
    assert sorted({s["n_trials"] for s in manifest["stimuli"]}) == [1, 3]
    assert manifest["unit_space"]["mesh"] == "fsaverage3" and ds.space.vertices is None
    assert manifest["sessions"] == [1, 2, 3] and manifest["import"]["missing"] == []


def test_shared_images_are_the_test_split_with_single_trials_and_noise_ceiling(imported):
    folder, truth, _ = imported
    ds = load_folder(folder)
    ids, _, per_image = expected(truth, [1, 2, 3], zscore=True)
    test_ids = [i for i in ids if i in truth["shared"]]
    assert [ds.stimuli.ids[k] for k in ds.stimuli.indices("test")] == [f"nsd-{i:05d}" for i in test_ids]
    assert len(test_ids) == 50
    # Single trials: the test images with all three repeats, repeats in the order shown.
    full = [k for k, i in enumerate(ids) if i in truth["shared"] and len(per_image[i]) == 3]
    assert ds.trial_stimuli.tolist() == full and len(full) == 40
    assert ds.trials.shape == (3, 40, 2 * N_KEEP)
    for r in range(3):
        np.testing.assert_allclose(ds.trials[r], np.stack([per_image[ids[k]][r] for k in full]), atol=2e-6)
    np.testing.assert_allclose(ds.trials.mean(axis=0), ds.responses[ds.trial_stimuli], atol=2e-6)
    # NSD noise ceiling with mixed repeat counts on the test split: 40 images x 3 trials, 10 x 1.
    ncsnr = np.concatenate([truth["ncsnr"][h][:N_KEEP] for h in ("lh", "rh")]).astype(np.float64)
    inverse_n = (40 / 3 + 10 / 1) / 50
    np.testing.assert_allclose(ds.noise_ceiling, 100 * ncsnr**2 / (ncsnr**2 + inverse_n), rtol=1e-5)


def test_captions_images_and_coco_ids(imported):
    folder, truth, _ = imported
    ds = load_folder(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    for k, entry in enumerate(manifest["stimuli"]):
        nsd_id = entry["nsd_id"]
        assert entry["coco_id"] == truth["coco_id"][nsd_id]
        assert entry["coco_split"] == ("val2017" if nsd_id % 5 == 0 else "train2017")
        assert entry["captions_all"] == truth["captions"][nsd_id]  # both COCO files, whitespace normalised
        assert ds.stimuli.captions[k] == f"image {nsd_id} caption 0"
    for k in (0, 17, len(ds.stimuli) - 1):
        nsd_id = int(ds.stimuli.ids[k][4:])
        image = np.asarray(Image.open(ds.stimuli.image_paths[k]))
        np.testing.assert_array_equal(image, truth["brick"][nsd_id])  # native size, lossless


def test_roi_labels_from_label_files_and_colour_tables(imported):
    folder, truth, _ = imported
    ds = load_folder(folder)
    assert ds.space.roi_names == ("none", *STREAMS[1:])
    np.testing.assert_array_equal(ds.space.roi_labels, np.concatenate([truth["streams"][h][:N_KEEP] for h in ("lh", "rh")]))
    manifest = json.loads((folder / "manifest.json").read_text())
    general = manifest["unit_space"]["roi_sets"]["nsdgeneral"]
    assert general["names"] == ["none", "nsdgeneral"]
    values = np.concatenate([truth["general"][h][:N_KEEP] for h in ("lh", "rh")])
    np.testing.assert_array_equal(np.load(folder / general["file"]), (values == 1).astype(np.int16))  # -1 and 0: none


def test_import_is_listed_and_staging_is_gone(imported):
    folder, _, messages = imported
    infos = {info.id: info for info in list_datasets(folder.parent)}
    assert infos[folder.name].n_stimuli == N_COLUMNS and infos[folder.name].n_units == 2 * N_KEEP
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".") and "partial" in p.name]
    assert not (folder / ".done").exists()
    fractions = [f for _, f in messages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_partial_download_imports_complete_sessions_and_says_what_is_missing(nsd_source, tmp_path):
    root = tmp_path / "nsd"
    shutil.copytree(nsd_source[0], root)
    truth = nsd_source[1]
    betas_dir = root / truth["betas_dir"].relative_to(nsd_source[0])
    (betas_dir / "rh.betas_session02.mgh").unlink()
    data = (betas_dir / "lh.betas_session03.mgh").read_bytes()
    (betas_dir / "lh.betas_session03.mgh").write_bytes(data[: len(data) // 2])  # an interrupted download
    messages = []
    folder = import_nsd(root, dest_root=tmp_path / "out", mesh="fsaverage3", progress=lambda s, f: messages.append(s))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["sessions"] == [1]
    missing = manifest["import"]["missing"]
    assert len(missing) == 2 and "rh.betas_session02.mgh: file not found" in missing[0] and "lh.betas_session03.mgh: truncated" in missing[1]
    assert any(m.startswith("missing: 2 session(s)") for m in messages)
    ds = load_folder(folder)
    ids, responses, _ = expected(truth, [1], zscore=True)
    assert ds.stimuli.ids == tuple(f"nsd-{i:05d}" for i in ids)
    np.testing.assert_allclose(ds.responses, responses, atol=2e-6)
    assert ds.trials is None or ds.trials.shape[0] == max(manifest["stimuli"], key=lambda s: s["n_trials"])["n_trials"]
    with pytest.raises(DatasetError, match=r"rh\.betas_session02\.mgh: file not found"):
        import_nsd(root, dest_root=tmp_path / "strict", mesh="fsaverage3", allow_partial=False)


def test_int16_betas_are_divided_by_300_without_zscoring(tmp_path):
    root = tmp_path / "nsd"
    truth = write_nsd(root, dtype=np.int16)
    folder = import_nsd(root, dest_root=tmp_path / "out", mesh="fsaverage3", zscore=False, trials="none", dataset_id="int16")
    ds = load_folder(folder)
    _, responses, _ = expected(truth, [1, 2, 3], zscore=False, scale=1 / 300)
    np.testing.assert_allclose(ds.responses, responses, atol=1e-5)
    assert ds.trials is None
    assert json.loads((folder / "manifest.json").read_text())["import"]["options"]["beta_scale"] == pytest.approx(1 / 300)


def test_interrupted_import_resumes_without_redoing_finished_blocks(nsd_source, tmp_path):
    root, truth = nsd_source
    dest = tmp_path / "out"

    class Stop(Exception):
        pass

    def stop_at_rh(stage, fraction):
        if stage.startswith("betas:") and stage.endswith(" rh"):
            raise Stop

    with pytest.raises(Stop):
        import_nsd(root, dest_root=dest, mesh="fsaverage3", progress=stop_at_rh)
    assert not (dest / "nsd-subj01-fsaverage3").exists() and (dest / ".nsd-subj01-fsaverage3.partial").is_dir()
    assert [info.id for info in list_datasets(dest) if info.id.startswith("nsd")] == []
    stages = []
    folder = import_nsd(root, dest_root=dest, mesh="fsaverage3", progress=lambda s, f: stages.append(s))
    assert "resuming an interrupted import" in stages
    assert "betas: session 1/3 lh" not in stages and "betas: session 1/3 rh" in stages  # done steps are kept
    _, responses, _ = expected(truth, [1, 2, 3], zscore=True)
    np.testing.assert_allclose(load_folder(folder).responses, responses, atol=2e-6)
    with pytest.raises(DatasetError, match="already exists"):
        import_nsd(root, dest_root=dest, mesh="fsaverage3")


def test_a_step_killed_halfway_is_undone_before_it_is_redone(nsd_source, tmp_path, monkeypatch):
    """Running means are not idempotent: rows changed by an interrupted step are restored from its undo file."""
    from backend.data.importers import nsd_betas

    root, truth = nsd_source
    original = nsd_betas._fold_in
    calls = []

    def half_then_die(out, rows, ranks, data, columns):
        calls.append(1)
        if len(calls) == 4:  # session 2, rh: apply the update to the first half of the rows, then die
            half = len(rows) // 2
            original(out, rows[:half], ranks[:half], data[:half], columns)
            out.flush()
            raise KeyboardInterrupt
        original(out, rows, ranks, data, columns)

    monkeypatch.setattr(nsd_betas, "_fold_in", half_then_die)
    with pytest.raises(KeyboardInterrupt):
        import_nsd(root, dest_root=tmp_path, mesh="fsaverage3", dataset_id="undo")
    assert list((tmp_path / ".undo.partial/undo").glob("session-001-rh.*"))
    monkeypatch.setattr(nsd_betas, "_fold_in", original)
    folder = import_nsd(root, dest_root=tmp_path, mesh="fsaverage3", dataset_id="undo")
    ds = load_folder(folder)
    _, responses, per_image = expected(truth, [1, 2, 3], zscore=True)
    np.testing.assert_allclose(ds.responses, responses, atol=2e-6)
    ids = sorted(per_image)
    for r in range(3):
        np.testing.assert_allclose(ds.trials[r], np.stack([per_image[ids[k]][r] for k in ds.trial_stimuli]), atol=2e-6)


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_bad_input_gives_one_line_errors_naming_the_file(nsd_source, tmp_path):
    src, truth = nsd_source
    root = tmp_path / "nsd"
    shutil.copytree(src, root)
    betas_dir = root / truth["betas_dir"].relative_to(src)
    out = tmp_path / "out"

    # A mesh finer than the data.
    with pytest.raises(DatasetError) as err:
        import_nsd(root, dest_root=out)
    assert "lh.betas_session01.mgh" in _one_line(err) and "coarser" in str(err.value)

    # Image ids absent from the captions.
    train = root / "annotations/captions_train2017.json"
    saved = train.read_text()
    train.write_text(json.dumps({"annotations": []}))
    with pytest.raises(DatasetError) as err:
        import_nsd(root, dest_root=out, mesh="fsaverage3")
    assert "captions_train2017.json" in _one_line(err) and "no captions for" in str(err.value)
    folder = import_nsd(root, dest_root=out, mesh="fsaverage3", missing_captions="skip", trials="none")
    ds = load_folder(folder)
    has_caption = [c is not None for c in ds.stimuli.captions]
    assert has_caption == [int(i[4:]) % 5 == 0 for i in ds.stimuli.ids]  # only val2017 images keep captions
    train.write_text(saved)
    shutil.rmtree(folder)

    # Truncated HDF5 stimuli.
    stimuli = root / "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"
    data = stimuli.read_bytes()
    stimuli.write_bytes(data[: len(data) // 3])
    with pytest.raises(DatasetError) as err:
        import_nsd(root, dest_root=out, mesh="fsaverage3")
    assert "nsd_stimuli.hdf5" in _one_line(err)
    stimuli.write_bytes(data)

    # Vertex counts that do not match a mesh, or each other.
    _mgh(betas_dir / "rh.ncsnr.mgh", np.zeros(1000, np.float32))
    with pytest.raises(DatasetError) as err:
        import_nsd(root, dest_root=out, mesh="fsaverage3")
    assert "rh.ncsnr.mgh" in _one_line(err) and "1,000 vertices" in str(err.value)
    _mgh(betas_dir / "rh.ncsnr.mgh", truth["ncsnr"]["rh"])
    _mgh(betas_dir / "lh.betas_session02.mgh", np.zeros((642, TRIALS), np.float32))
    with pytest.raises(DatasetError) as err:
        import_nsd(root, dest_root=out, mesh="fsaverage3")
    assert "lh.betas_session02.mgh" in _one_line(err) and "642" in str(err.value)
    _mgh(betas_dir / "lh.betas_session02.mgh", np.zeros((N_VERTICES, 700), np.float32))
    with pytest.raises(DatasetError, match=r"lh\.betas_session02\.mgh: 700 trials"):
        import_nsd(root, dest_root=out, mesh="fsaverage3")

    # No sessions at all; a design without masterordering.
    for path in betas_dir.glob("*.betas_session*.mgh"):
        path.unlink()
    with pytest.raises(DatasetError, match="no .*betas_sessionNN.mgh files found"):
        import_nsd(root, dest_root=out, mesh="fsaverage3")
    scipy.io.savemat(root / "nsddata/experiments/nsd/nsd_expdesign.mat", {"subjectim": truth["subjectim"]})
    with pytest.raises(DatasetError, match=r"nsd_expdesign\.mat: variable 'masterordering' is missing"):
        import_nsd(root, dest_root=out, mesh="fsaverage3")
    assert not any(p.name.startswith("nsd") for p in out.iterdir())


def test_every_input_is_checked_before_the_first_beta_is_read(nsd_source, tmp_path, monkeypatch):
    """A truncated ncsnr.mgh (or label file) fails in seconds, not after every session was streamed."""
    from backend.data.importers import freesurfer

    src, truth = nsd_source
    root = tmp_path / "nsd"
    shutil.copytree(src, root)
    betas_dir = root / truth["betas_dir"].relative_to(src)
    reads = []
    original = freesurfer.SurfaceFile.read_frames

    def recording(self, n_keep):
        reads.append(self.path.name)
        return original(self, n_keep)

    monkeypatch.setattr(freesurfer.SurfaceFile, "read_frames", recording)
    stages = []
    data = (betas_dir / "lh.ncsnr.mgh").read_bytes()
    (betas_dir / "lh.ncsnr.mgh").write_bytes(data[: len(data) - 400])
    with pytest.raises(DatasetError) as err:
        import_nsd(root, dest_root=tmp_path / "out", mesh="fsaverage3", progress=lambda s, f: stages.append((s, f)))
    message = _one_line(err)
    rel = (betas_dir / "lh.ncsnr.mgh").relative_to(root)
    assert message.startswith(f"{rel}: truncated"), message
    assert reads == [], f"betas were read before the truncated ncsnr was found: {reads}"
    assert not any(s.startswith("betas:") for s, _ in stages) and max(f for _, f in stages) < 0.02
    (betas_dir / "lh.ncsnr.mgh").write_bytes(data)

    label = root / "nsddata/freesurfer/fsaverage/label/rh.streams.mgz"
    saved = label.read_bytes()
    label.write_bytes(saved[: len(saved) // 2])
    with pytest.raises(DatasetError) as err:
        import_nsd(root, dest_root=tmp_path / "out", mesh="fsaverage3")
    assert _one_line(err).startswith("nsddata/freesurfer/fsaverage/label/rh.streams.mgz: ") and reads == []
    label.write_bytes(saved)
    folder = import_nsd(root, dest_root=tmp_path / "out", mesh="fsaverage3", trials="none")
    assert len(reads) == 2 * N_SESSIONS and load_folder(folder).noise_ceiling is not None
