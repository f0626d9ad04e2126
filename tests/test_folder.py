"""The dataset folder format: a valid folder loads exactly; every bad one gets a one-line error naming the file."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.data.folder import load_folder
from backend.data.schema import DatasetError, NeuronSpace, SurfaceSpace

N_STIMULI, N_UNITS = 6, 5


def make_folder(root: Path, *, responses=None, manifest_extra=None, space=None) -> Path:
    """A small valid neuron dataset: 6 images, responses [6, 5], explicit stimuli list."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    stimuli = []
    for i in range(N_STIMULI):
        Image.fromarray(np.full((8, 8, 3), 30 * i, np.uint8)).save(root / "images" / f"im{i}.png")
        stimuli.append({"id": f"im{i}", "image": f"images/im{i}.png", "caption": f"caption {i}", "split": "test" if i < 2 else "train"})
    values = np.arange(N_STIMULI * N_UNITS, dtype=np.float32).reshape(N_STIMULI, N_UNITS) if responses is None else responses
    np.save(root / "responses.npy", values, allow_pickle=False)
    np.savez(root / "neurons.npz", area=np.array([0, 0, 1, 1, 2]), x=np.linspace(0, 1, 5), y=np.zeros(5))
    manifest = {
        "name": "tiny",
        "stimuli": stimuli,
        "unit_space": space or {"kind": "neurons", "units": "neurons.npz", "areas": ["VISp", "VISl", "VISal"]},
    }
    manifest.update(manifest_extra or {})
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def error_of(root: Path) -> str:
    with pytest.raises(DatasetError) as info:
        load_folder(root)
    message = str(info.value)
    assert "\n" not in message, "errors are one line"
    return message


def test_valid_folder_loads_every_number(tmp_path):
    ds = load_folder(make_folder(tmp_path / "ok"))
    assert ds.responses.shape == (N_STIMULI, N_UNITS)
    np.testing.assert_array_equal(ds.responses[3], np.arange(15, 20, dtype=np.float32))
    assert isinstance(ds.space, NeuronSpace)
    assert ds.space.areas == ("VISp", "VISl", "VISal")
    np.testing.assert_array_equal(ds.space.area, [0, 0, 1, 1, 2])
    assert ds.stimuli.captions[4] == "caption 4"
    np.testing.assert_array_equal(ds.stimuli.indices("test"), [0, 1])
    assert isinstance(ds.responses, np.memmap), "responses are memory-mapped, not read into memory"


def test_images_alone_define_the_stimuli_in_sorted_order(tmp_path):
    root = make_folder(tmp_path / "implicit")
    manifest = json.loads((root / "manifest.json").read_text())
    del manifest["stimuli"]
    (root / "manifest.json").write_text(json.dumps(manifest))
    ds = load_folder(root)
    assert ds.stimuli.ids == tuple(f"im{i}" for i in range(N_STIMULI))
    assert set(ds.stimuli.splits) == {"train"}


def test_missing_manifest(tmp_path):
    root = make_folder(tmp_path / "m")
    (root / "manifest.json").unlink()
    assert "manifest.json: file not found" in error_of(root)


def test_missing_responses(tmp_path):
    root = make_folder(tmp_path / "r")
    (root / "responses.npy").unlink()
    assert "responses.npy: file not found" in error_of(root)


def test_missing_image(tmp_path):
    root = make_folder(tmp_path / "i")
    (root / "images" / "im3.png").unlink()
    message = error_of(root)
    assert "im3.png: file not found" in message and "stimulus 3" in message


def test_row_count_mismatch(tmp_path):
    root = make_folder(tmp_path / "rows", responses=np.zeros((N_STIMULI + 1, N_UNITS), np.float32))
    message = error_of(root)
    assert "responses.npy" in message and "7 rows but 6 stimuli" in message


def test_unit_count_mismatch_with_neuron_table(tmp_path):
    root = make_folder(tmp_path / "units", responses=np.zeros((N_STIMULI, N_UNITS + 2), np.float32))
    message = error_of(root)
    assert "neurons.npz" in message and "(7,)" in message


def test_surface_vertex_count_must_match_the_mesh(tmp_path):
    space = {"kind": "surface", "mesh": "fsaverage5"}
    root = make_folder(tmp_path / "mesh", space=space)
    message = error_of(root)
    assert "5 units but fsaverage5 has 20484 vertices" in message


def test_surface_subset_with_vertices_and_rois(tmp_path):
    space = {"kind": "surface", "mesh": "fsaverage5", "vertices": "vertices.npy", "rois": "rois.npy", "roi_names": ["none", "V1"]}
    root = make_folder(tmp_path / "subset", space=space)
    np.save(root / "vertices.npy", np.array([0, 1, 2, 10242, 20483]))
    np.save(root / "rois.npy", np.array([1, 1, 0, 0, 1], np.int16))
    ds = load_folder(root)
    assert isinstance(ds.space, SurfaceSpace) and ds.space.n_units == 5
    np.save(root / "vertices.npy", np.array([0, 1, 2, 10242, 20484]))
    assert "vertex indices must lie in 0..20483" in error_of(root)


def test_unknown_mesh(tmp_path):
    root = make_folder(tmp_path / "unknown", space={"kind": "surface", "mesh": "fsaverage9"})
    assert "unknown mesh 'fsaverage9'" in error_of(root)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_refused_with_their_position(tmp_path, bad):
    values = np.ones((N_STIMULI, N_UNITS), np.float32)
    values[4, 2] = bad
    root = make_folder(tmp_path / "nan", responses=values)
    message = error_of(root)
    assert "NaN or inf at index (4, 2)" in message and "responses.npy" in message


def test_non_numeric_dtype(tmp_path):
    root = make_folder(tmp_path / "str")
    np.save(root / "responses.npy", np.full((N_STIMULI, N_UNITS), "x"))
    message = error_of(root)
    assert "responses.npy" in message and "is not numeric" in message


def test_pickled_object_array_is_never_unpickled(tmp_path):
    root = make_folder(tmp_path / "obj")
    np.save(root / "responses.npy", np.empty((N_STIMULI, N_UNITS), dtype=object), allow_pickle=True)
    message = error_of(root)
    assert "pickled" in message and "never unpickles" in message


def test_plain_pickle_renamed_to_npy(tmp_path):
    root = make_folder(tmp_path / "pkl")
    marker = tmp_path / "executed"
    # If this were unpickled it would create the marker file.
    payload = pickle.dumps(_Exploit(str(marker)))
    (root / "responses.npy").write_bytes(payload)
    message = error_of(root)
    assert "responses.npy" in message
    assert not marker.exists()


class _Exploit:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_truncated_npy(tmp_path):
    root = make_folder(tmp_path / "trunc", responses=np.ones((N_STIMULI, N_UNITS), np.float32))
    data = (root / "responses.npy").read_bytes()
    (root / "responses.npy").write_bytes(data[: len(data) - 20])
    message = error_of(root)
    assert "responses.npy" in message and "truncated" in message


def test_manifest_paths_cannot_leave_the_folder(tmp_path):
    root = make_folder(tmp_path / "escape", manifest_extra={"responses": "../elsewhere.npy"})
    assert "points outside the dataset folder" in error_of(root)


def test_invalid_json_manifest(tmp_path):
    root = make_folder(tmp_path / "json")
    (root / "manifest.json").write_text("{not json")
    assert "manifest.json: not valid JSON" in error_of(root)


def test_bad_split_name(tmp_path):
    root = make_folder(tmp_path / "split")
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["stimuli"][0]["split"] = "validation"
    (root / "manifest.json").write_text(json.dumps(manifest))
    assert "split 'validation'" in error_of(root)


def test_trials_shape_is_checked(tmp_path):
    root = make_folder(tmp_path / "trials", manifest_extra={"trials": {"file": "trials.npy", "stimuli": "rows.npy"}})
    np.save(root / "rows.npy", np.array([0, 1]))
    np.save(root / "trials.npy", np.zeros((3, 2, N_UNITS + 1), np.float32))
    assert "trials must be [n_repeats, 2, 5]" in error_of(root)
    np.save(root / "trials.npy", np.zeros((3, 2, N_UNITS), np.float32))
    ds = load_folder(root)
    assert ds.trials.shape == (3, 2, N_UNITS)
