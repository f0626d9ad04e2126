"""Generic folder import: a user's folder is checked with load_folder and copied in normalised form."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.data.catalog import list_datasets
from backend.data.folder import load_folder
from backend.data.importers import IMPORTERS
from backend.data.importers.folder_import import import_folder
from backend.data.schema import DatasetError


def write_surface_folder(root: Path) -> dict:
    rng = np.random.default_rng(0)
    (root / "pics").mkdir(parents=True)
    n, units = 6, 9
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)).save(root / "pics" / f"img {i}.png")
    responses = rng.normal(size=(n, units))  # float64, in an .npz: converted to float32 .npy
    trials = rng.normal(size=(2, 3, units)).astype(np.float32)
    np.savez(root / "data.npz", responses=responses)
    np.save(root / "trials.npy", trials)
    np.save(root / "trial_rows.npy", np.array([1, 3, 5]))
    np.save(root / "nc.npy", np.linspace(0, 80, units).astype(np.float32))
    np.save(root / "verts.npy", np.array([0, 3, 7, 100, 642, 700, 900, 1000, 1283]))
    np.save(root / "labels.npy", np.array([0, 1, 1, 2, 0, 2, 2, 1, 0]))
    (root / "caps.json").write_text(json.dumps({"my-captioner": [f"text {i}" for i in range(n)]}))
    manifest = {
        "name": "My data",
        "lab": "kept as is",
        "responses": "data.npz",
        "stimuli": [
            {"id": f"s/{i}", "image": f"pics/img {i}.png", "caption": f"caption {i}", "split": "test" if i % 2 else "train", "extra": i}
            for i in range(n)
        ],
        "unit_space": {"kind": "surface", "mesh": "fsaverage3", "vertices": "verts.npy", "rois": "labels.npy", "roi_names": ["none", "A", "B"]},
        "trials": {"file": "trials.npy", "stimuli": "trial_rows.npy"},
        "noise_ceiling": "nc.npy",
        "captions": "caps.json",
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return dict(responses=responses, trials=trials, manifest=manifest)


def test_surface_folder_is_normalised_and_every_number_kept(tmp_path):
    truth = write_surface_folder(tmp_path / "mine")
    folder = IMPORTERS["folder"](tmp_path / "mine", dest_root=tmp_path / "out", dataset_id="mine")
    source, ds = load_folder(tmp_path / "mine"), load_folder(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["responses"] == "responses.npy" and manifest["lab"] == "kept as is" and manifest["name"] == "My data"
    assert isinstance(np.load(folder / "responses.npy", mmap_mode="r"), np.memmap)
    np.testing.assert_array_equal(ds.responses, truth["responses"].astype(np.float32))
    np.testing.assert_array_equal(ds.trials, truth["trials"])
    np.testing.assert_array_equal(ds.trial_stimuli, [1, 3, 5])
    np.testing.assert_array_equal(ds.noise_ceiling, source.noise_ceiling)
    np.testing.assert_array_equal(ds.space.vertices, source.space.vertices)
    np.testing.assert_array_equal(ds.space.roi_labels, source.space.roi_labels)
    assert ds.space.roi_names == ("none", "A", "B") and ds.space.mesh == "fsaverage3"
    assert ds.stimuli.ids == source.stimuli.ids and ds.stimuli.splits == source.stimuli.splits
    assert ds.stimuli.captions == source.stimuli.captions and ds.captions == source.captions
    assert [s["extra"] for s in manifest["stimuli"]] == list(range(6))
    for a, b in zip(ds.stimuli.image_paths, source.stimuli.image_paths, strict=True):
        assert a.read_bytes() == b.read_bytes() and a.parent == folder / "images"
    assert "mine" in {info.id for info in list_datasets(tmp_path / "out")}


def test_neuron_folder_and_default_id(tmp_path):
    root = tmp_path / "mouse data"
    root.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (4, 4), dtype=np.uint8)).save(root / f"{i}.png")
    np.save(root / "responses.npy", rng.normal(size=(3, 4)).astype(np.float32))
    np.savez(root / "neurons.npz", area=np.array([0, 1, 1, 0]), x=np.arange(4.0), y=-np.arange(4.0))
    outline = [[0, 0], [1, 0], [1, 1]]
    (root / "manifest.json").write_text(json.dumps({"unit_space": {"kind": "neurons", "areas": ["VISp", "VISl"], "area_outlines": {"VISp": outline}}}))
    folder = import_folder(root, dest_root=tmp_path / "out")
    assert folder.name == "mouse_data"
    ds, source = load_folder(folder), load_folder(root)
    np.testing.assert_array_equal(ds.responses, source.responses)
    for key in ("area", "x", "y", "depth", "cell_type"):
        np.testing.assert_array_equal(getattr(ds.space, key), getattr(source.space, key))
    assert ds.space.areas == ("VISp", "VISl") and ds.space.area_outlines["VISp"].tolist() == outline
    assert ds.stimuli.ids == ("0", "1", "2")


def test_invalid_folder_is_refused_with_load_folders_message(tmp_path):
    truth = write_surface_folder(tmp_path / "mine")
    np.savez(tmp_path / "mine" / "data.npz", responses=truth["responses"][:4])
    with pytest.raises(DatasetError, match=r"data\.npz: 4 rows but 6 stimuli"):
        import_folder(tmp_path / "mine", dest_root=tmp_path / "out")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    with pytest.raises(DatasetError, match="already exists"):
        np.savez(tmp_path / "mine" / "data.npz", responses=truth["responses"])
        import_folder(tmp_path / "mine", dest_root=tmp_path / "out", dataset_id="x")
        import_folder(tmp_path / "mine", dest_root=tmp_path / "out", dataset_id="x")
    again = import_folder(tmp_path / "mine", dest_root=tmp_path / "out", dataset_id="x", overwrite=True)
    assert load_folder(again).n_stimuli == 6 and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x"]


def test_registry_has_one_signature_and_parses_cli_flags():
    import inspect

    from backend.data.importers import importer_options, parse_options

    assert set(IMPORTERS) == {"nsd", "algonauts", "allen", "folder"}
    for importer in IMPORTERS.values():
        params = inspect.signature(importer).parameters
        assert list(params)[0] == "root" and all(params[k].kind == params[k].KEYWORD_ONLY for k in ("dataset_id", "dest_root", "progress", "overwrite"))
    assert importer_options("folder") == {}
    assert importer_options("nsd")["mesh"] == "fsaverage5"
    options = parse_options("nsd", ["--mesh", "fsaverage", "--sessions", "1-3,9", "--zscore=false", "--captions", "a.json,b.json", "--beta-scale", "1.5"])
    assert options == {"mesh": "fsaverage", "sessions": [1, 2, 3, 9], "zscore": False, "captions": [Path("a.json"), Path("b.json")], "beta_scale": 1.5}
    assert parse_options("allen", ["--window-s", "0.1,0.4", "--skip-without-scenes", "yes"]) == {"window_s": (0.1, 0.4), "skip_without_scenes": True}
    for flags, message in ((["--nope", "1"], "unknown option --nope"), (["--zscore", "maybe"], "--zscore 'maybe' is not a valid bool"), (["--subject"], "needs a value")):
        with pytest.raises(DatasetError, match=message):
            parse_options("nsd", flags)
    with pytest.raises(DatasetError, match="unknown import kind"):
        parse_options("bids", [])
