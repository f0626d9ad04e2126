"""Algonauts 2023 import: challenge-space .npy files, fsaverage masks, named images, every number checked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.data.folder import load_folder
from backend.data.importers import IMPORTERS
from backend.data.importers.algonauts import import_algonauts
from backend.data.schema import DatasetError

FSAVERAGE = 163842
FSAVERAGE5 = 10242
NSD_IDS = [13, 27, 2950, 400, 72999, 5, 1001, 64, 333, 70000, 12, 8]


def write_algonauts(base: Path, *, subject: int = 1) -> dict:
    rng = np.random.default_rng(subject)
    root = base / f"subj{subject:02d}"
    fmri_dir = root / "training_split/training_fmri"
    image_dir = root / "training_split/training_images"
    masks = root / "roi_masks"
    for d in (fmri_dir, image_dir, masks):
        d.mkdir(parents=True)
    truth = {"images": [], "vertices": {}, "fmri": {}, "streams": {}, "prf": {}}
    for hemi in ("lh", "rh"):
        # Challenge vertices: some on fsaverage5 (index < 10,242), most beyond it.
        vertices = np.sort(np.concatenate([rng.choice(FSAVERAGE5, 40, replace=False), rng.choice(np.arange(FSAVERAGE5, FSAVERAGE), 160, replace=False)]))
        mask = np.zeros(FSAVERAGE, np.float32)  # the real files hold 0.0/1.0 floats
        mask[vertices] = 1
        np.save(masks / f"{hemi}.all-vertices_fsaverage_space.npy", mask)
        fmri = rng.normal(size=(len(NSD_IDS), len(vertices))).astype(np.float32)
        np.save(fmri_dir / f"{hemi}_training_fmri.npy", fmri)
        streams = rng.integers(0, 8, len(vertices)).astype(np.int64)
        prf = rng.integers(0, 8, len(vertices)).astype(np.int64)
        np.save(masks / f"{hemi}.streams_challenge_space.npy", streams)
        np.save(masks / f"{hemi}.prf-visualrois_challenge_space.npy", prf)
        truth["vertices"][hemi], truth["fmri"][hemi], truth["streams"][hemi], truth["prf"][hemi] = vertices, fmri, streams, prf
    for row, nsd_id in enumerate(NSD_IDS, start=1):
        path = image_dir / f"train-{row:04d}_nsd-{nsd_id:05d}.png"
        Image.fromarray(rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)).save(path)
        truth["images"].append(path)
    return truth


def write_coco(base: Path, shared: set[int]) -> None:
    lines = [",cocoId,cocoSplit,cropBox,loss,nsdId,flagged,BOLD5000,shared1000"]
    annotations = []
    for i in sorted(set(NSD_IDS) | {1, 2}):
        lines.append(f"{i},{500 + i},train2017,\"(0,0,0,0)\",0,{i},False,False,{i in shared}")
        annotations += [{"image_id": 500 + i, "id": 3 * i + k, "caption": f"nsd {i} text {k}"} for k in range(3)]
    (base / "nsd_stim_info_merged.csv").write_text("\n".join(lines) + "\n")
    (base / "captions_train2017.json").write_text(json.dumps({"annotations": annotations}))


def test_challenge_space_maps_onto_fsaverage5_and_keeps_every_number(tmp_path):
    truth = write_algonauts(tmp_path / "data")
    write_coco(tmp_path / "data", shared={27, 64, 8})
    folder = IMPORTERS["algonauts"](tmp_path / "data", dest_root=tmp_path / "out")
    ds = load_folder(folder)
    manifest = json.loads((folder / "manifest.json").read_text())

    keep = {h: truth["vertices"][h] < FSAVERAGE5 for h in ("lh", "rh")}
    assert manifest["vertices_kept"] == {"lh": 40, "rh": 40, "challenge_lh": 200, "challenge_rh": 200}
    assert ds.space.mesh == "fsaverage5"
    np.testing.assert_array_equal(ds.space.vertices, np.concatenate([truth["vertices"]["lh"][keep["lh"]], FSAVERAGE5 + truth["vertices"]["rh"][keep["rh"]]]))
    np.testing.assert_array_equal(ds.responses, np.hstack([truth["fmri"][h][:, keep[h]] for h in ("lh", "rh")]))
    # Row i is the image named train-(i+1); stimulus ids carry the 0-based NSD id of the name.
    assert ds.stimuli.ids == tuple(f"nsd-{i:05d}" for i in NSD_IDS)
    for k, path in enumerate(truth["images"]):
        assert ds.stimuli.image_paths[k].read_bytes() == path.read_bytes()
    assert [ds.stimuli.ids[k] for k in ds.stimuli.indices("test")] == ["nsd-00027", "nsd-00064", "nsd-00008"]
    assert ds.stimuli.captions == tuple(f"nsd {i} text 0" for i in NSD_IDS)
    assert manifest["stimuli"][0]["captions_all"] == [f"nsd 13 text {k}" for k in range(3)]
    assert manifest["stimuli"][0]["coco_id"] == 513 and manifest["stimuli"][0]["source_image"] == "train-0001_nsd-00013.png"
    assert ds.space.roi_names == ("none", "early", "midventral", "midlateral", "midparietal", "ventral", "lateral", "parietal")
    np.testing.assert_array_equal(ds.space.roi_labels, np.concatenate([truth["streams"][h][keep[h]] for h in ("lh", "rh")]))
    prf = manifest["unit_space"]["roi_sets"]["prf-visualrois"]
    assert prf["names"] == ["none", "V1v", "V1d", "V2v", "V2d", "V3v", "V3d", "hV4"]
    np.testing.assert_array_equal(np.load(folder / prf["file"]), np.concatenate([truth["prf"][h][keep[h]] for h in ("lh", "rh")]))
    assert ds.trials is None and ds.noise_ceiling is None


def test_full_fsaverage_keeps_every_challenge_vertex(tmp_path):
    truth = write_algonauts(tmp_path / "data")
    folder = import_algonauts(tmp_path / "data", dest_root=tmp_path / "out", mesh="fsaverage", test_split="random", test_fraction=0.25, seed=3)
    ds = load_folder(folder)
    assert folder.name == "algonauts-subj01-fsaverage" and ds.space.mesh == "fsaverage"
    np.testing.assert_array_equal(ds.space.vertices, np.concatenate([truth["vertices"]["lh"], FSAVERAGE + truth["vertices"]["rh"]]))
    np.testing.assert_array_equal(ds.responses, np.hstack([truth["fmri"]["lh"], truth["fmri"]["rh"]]))
    expected_test = np.zeros(len(NSD_IDS), bool)
    expected_test[np.random.default_rng(3).choice(len(NSD_IDS), 3, replace=False)] = True
    assert ds.stimuli.indices("test").tolist() == np.flatnonzero(expected_test).tolist()
    assert all(c is None for c in ds.stimuli.captions)


def test_several_subjects_need_a_choice(tmp_path):
    write_algonauts(tmp_path / "data", subject=1)
    truth2 = write_algonauts(tmp_path / "data", subject=2)
    with pytest.raises(DatasetError, match="several subjects"):
        import_algonauts(tmp_path / "data", dest_root=tmp_path / "out")
    folder = import_algonauts(tmp_path / "data", dest_root=tmp_path / "out", subject=2)
    assert folder.name == "algonauts-subj02"
    keep = truth2["vertices"]["lh"] < FSAVERAGE5
    np.testing.assert_array_equal(load_folder(folder).responses[:, : keep.sum()], truth2["fmri"]["lh"][:, keep])


def test_bad_input_gives_one_line_errors_naming_the_file(tmp_path):
    truth = write_algonauts(tmp_path / "data")
    base = tmp_path / "data"
    out = tmp_path / "out"
    masks = base / "subj01/roi_masks"

    write_coco(base, shared=set())
    (base / "nsd_stim_info_merged.csv").unlink()
    with pytest.raises(DatasetError, match="nsd_stim_info_merged.csv not found"):
        import_algonauts(base, dest_root=out)
    (base / "captions_train2017.json").unlink()

    mask = np.load(masks / "lh.all-vertices_fsaverage_space.npy")
    wrong = mask.copy()
    wrong[np.flatnonzero(wrong == 0)[:3]] = 1
    np.save(masks / "lh.all-vertices_fsaverage_space.npy", wrong)
    with pytest.raises(DatasetError) as err:
        import_algonauts(base, dest_root=out)
    assert "lh_training_fmri.npy: 200 vertices but lh.all-vertices_fsaverage_space.npy selects 203" in str(err.value)
    np.save(masks / "lh.all-vertices_fsaverage_space.npy", mask[:5000])
    with pytest.raises(DatasetError, match=r"lh\.all-vertices_fsaverage_space\.npy: expected a 0/1 mask"):
        import_algonauts(base, dest_root=out)
    np.save(masks / "lh.all-vertices_fsaverage_space.npy", mask)

    np.save(masks / "rh.streams_challenge_space.npy", truth["streams"]["rh"][:-1])
    with pytest.raises(DatasetError, match=r"rh\.streams_challenge_space\.npy: expected 200 values"):
        import_algonauts(base, dest_root=out)
    np.save(masks / "rh.streams_challenge_space.npy", truth["streams"]["rh"])

    truth["images"][4].unlink()
    with pytest.raises(DatasetError, match=r"training_images: expected images train-0001 \.\. train-0012"):
        import_algonauts(base, dest_root=out)

    fmri = base / "subj01/training_split/training_fmri/rh_training_fmri.npy"
    fmri.write_bytes(fmri.read_bytes()[:200])
    with pytest.raises(DatasetError) as err:
        import_algonauts(base, dest_root=out)
    assert "rh_training_fmri.npy" in str(err.value) and "\n" not in str(err.value)
    assert not out.exists() or not [p for p in out.iterdir() if not p.name.startswith(".")]  # nothing the catalog lists
