"""Every image and every optional array is checked at import, in one line naming the file relative
to the dataset: decompression bombs, text files named .png, truncated images, NaN noise ceilings,
non-integer indices, malformed manifest values. The same checks guard NSD's imgBrick, the
Algonauts training images and the Allen scene template."""

from __future__ import annotations

import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from backend.data.folder import MAX_IMAGE_PIXELS, load_folder
from backend.data.importers.algonauts import import_algonauts
from backend.data.importers.allen import import_allen
from backend.data.importers.folder_import import import_folder
from backend.data.importers.nsd import import_nsd
from backend.data.schema import DatasetError
from tests.test_folder import N_UNITS, make_folder
from tests.test_import_algonauts import write_algonauts
from tests.test_import_allen import write_nwb
from tests.test_import_nsd import write_nsd


def png_claiming(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of width x height black pixels: a few kB on disk, any size once decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = 1 + (width + 7) // 8  # filter byte + packed bits
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(row * height), 9)) + chunk(b"IEND", b"")


def import_error(root: Path, tmp_path: Path) -> str:
    with pytest.raises(DatasetError) as info:
        import_folder(root, dest_root=tmp_path / "out")
    message = str(info.value)
    assert "\n" not in message and str(root) not in message, message
    out = tmp_path / "out"
    assert not out.exists() or not [p for p in out.iterdir() if not p.name.startswith(".")], "nothing is listed"
    return message


# --- images of the folder format ------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [(20_000, 20_000), (10_000, 10_000), (7_000, 7_000)],
    ids=["400MP-PIL-error", "100MP-PIL-warning", "49MP-over-our-limit"],
)
def test_huge_images_are_refused_at_import(tmp_path, size):
    assert size[0] * size[1] > MAX_IMAGE_PIXELS
    root = make_folder(tmp_path / "bomb")
    (root / "images" / "im1.png").write_bytes(png_claiming(*size))
    message = import_error(root, tmp_path)
    assert message.startswith("images/im1.png:") and "megapixel" in message, message


def test_an_image_just_under_the_limit_is_accepted(tmp_path):
    root = make_folder(tmp_path / "big")
    (root / "images" / "im1.png").write_bytes(png_claiming(6000, 6000))  # 36 MP
    folder = import_folder(root, dest_root=tmp_path / "out")
    assert load_folder(folder).n_stimuli == 6


@pytest.mark.parametrize("damage", ["text", "truncated", "truncated-jpeg", "empty"])
def test_files_that_are_not_images_are_refused_at_import(tmp_path, damage):
    root = make_folder(tmp_path / damage)
    path = root / "images" / "im4.png"
    if damage == "text":
        path.write_text("this is a text file, not a PNG")
    elif damage == "truncated":
        path.write_bytes(png_claiming(300, 200)[:-30])  # IDAT cut short, IEND gone
    elif damage == "truncated-jpeg":  # passes PIL's verify (JPEG has none): only decoding finds it
        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)).save(buffer, "JPEG")
        path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    else:
        path.write_bytes(b"")
    message = import_error(root, tmp_path)
    assert message.startswith("images/im4.png: not a readable image"), message


# --- optional arrays ---------------------------------------------------------------------------


def _manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def _write_manifest(root: Path, manifest: dict) -> None:
    (root / "manifest.json").write_text(json.dumps(manifest))


def test_nan_or_out_of_range_noise_ceiling_is_refused(tmp_path):
    root = make_folder(tmp_path / "nc", manifest_extra={"noise_ceiling": "nc.npy"})
    ceiling = np.array([10, np.nan, 30, 40, 50], np.float32)
    np.save(root / "nc.npy", ceiling)
    assert import_error(root, tmp_path) == "nc.npy: NaN or inf at index (1,)"
    ceiling[1] = 150.0
    np.save(root / "nc.npy", ceiling)
    assert import_error(root, tmp_path).startswith("nc.npy: noise ceiling must be a percentage in 0..100")
    ceiling[1] = 20.0
    np.save(root / "nc.npy", ceiling)
    np.testing.assert_array_equal(load_folder(import_folder(root, dest_root=tmp_path / "out")).noise_ceiling, ceiling)


@pytest.mark.parametrize(
    "name, bad, expected",
    [
        ("x", np.array([0.0, np.inf, 0, 0, 0]), "neurons.npz: 'x': NaN or inf at index (1,)"),
        ("area", np.array([0.0, 0.5, 1, 1, 2]), "neurons.npz: 'area' must be integers"),
        ("area", np.array([0.0, np.nan, 1, 1, 2]), "neurons.npz: 'area' must be integers"),
        ("depth", np.array([0.0, np.nan, 1, 1, 2]), "neurons.npz: 'depth': NaN or inf at index (1,)"),
    ],
)
def test_neuron_table_values_are_checked(tmp_path, name, bad, expected):
    root = make_folder(tmp_path / "n")
    columns = {"area": np.array([0, 0, 1, 1, 2]), "x": np.linspace(0, 1, 5), "y": np.zeros(5)}
    columns[name] = bad
    np.savez(root / "neurons.npz", **columns)
    assert import_error(root, tmp_path).startswith(expected)


def test_float_vertex_and_trial_indices_must_be_integers(tmp_path):
    space = {"kind": "surface", "mesh": "fsaverage5", "vertices": "v.npy"}
    root = make_folder(tmp_path / "v", space=space, manifest_extra={"trials": {"file": "t.npy", "stimuli": "rows.npy"}})
    np.save(root / "v.npy", np.array([0, 1, 2.5, 3, 4]))
    np.save(root / "t.npy", np.zeros((2, 2, N_UNITS), np.float32))
    np.save(root / "rows.npy", np.array([0, 1]))
    assert import_error(root, tmp_path).startswith("v.npy: vertex indices must be integers")
    np.save(root / "v.npy", np.array([0, 1, 2, 3, np.nan]))
    assert import_error(root, tmp_path).startswith("v.npy: vertex indices must be integers")
    np.save(root / "v.npy", np.array([0, 1, 2, 3, 4.0]))
    np.save(root / "rows.npy", np.array([0, np.nan]))
    assert import_error(root, tmp_path).startswith("rows.npy: trial stimulus rows must be integers")


def test_truth_maps_must_be_present_and_without_inf(tmp_path):
    """NaN in a planted map means "no value here" (the demo world's rf_x outside retinotopic
    cortex); inf means nothing."""
    root = make_folder(tmp_path / "truth", manifest_extra={"truth": {"file": "truth.npz", "maps": {"a": "planted"}}})
    np.savez(root / "truth.npz", a=np.array([0, 1, np.inf, 0, np.nan], np.float32))
    assert import_error(root, tmp_path) == "truth.npz: 'a': inf at index (2,)"
    np.savez(root / "truth.npz", a=np.array([0, 1, 2, 0, np.nan], np.float32))
    ds = load_folder(import_folder(root, dest_root=tmp_path / "out"))
    np.testing.assert_array_equal(ds.truth_map("a"), [0, 1, 2, 0, np.nan])
    shutil.rmtree(tmp_path / "out")
    np.savez(root / "truth.npz", b=np.zeros(N_UNITS, np.float32))
    assert import_error(root, tmp_path) == "truth.npz: truth map 'a' is missing"


def test_extra_roi_sets_are_checked_before_they_are_copied(tmp_path):
    space = {"kind": "surface", "mesh": "fsaverage5", "vertices": "v.npy", "roi_names": ["none"],
             "roi_sets": {"other": {"file": "rois_other.npy", "names": ["none", "A"]}}}
    root = make_folder(tmp_path / "sets", space=space)
    np.save(root / "v.npy", np.arange(N_UNITS))
    np.save(root / "rois_other.npy", np.array([0, 1, 2, 0, 0]))  # 2 names only: code 2 is out of range
    assert import_error(root, tmp_path).startswith("rois_other.npy: ROI labels must index")
    np.save(root / "rois_other.npy", np.array([0, 1, 1, 0, 0]))
    folder = import_folder(root, dest_root=tmp_path / "out")
    np.testing.assert_array_equal(np.load(folder / "rois_other.npy"), [0, 1, 1, 0, 0])


@pytest.mark.parametrize(
    "key, value",
    [
        ("stimuli", [{"image": 5}]),
        ("stimuli", [{"image": "images/im0.png", "caption": ["not", "text"]}]),
        ("stimuli", "images"),
        ("unit_space", {"kind": "neurons", "areas": 5}),
        ("unit_space", {"kind": "neurons", "areas": ["A", "B", "C"], "cell_types": 3}),
        ("unit_space", {"kind": "neurons", "areas": ["A", "B", "C"], "area_outlines": {"A": [[0, "x"]]}}),
        ("unit_space", {"kind": "neurons", "areas": ["A", "B", "C"], "area_outlines": [1, 2]}),
        ("unit_space", {"kind": "surface", "mesh": "fsaverage5", "vertices": "v.npy", "roi_names": 7}),
        ("unit_space", {"kind": "surface", "mesh": ["fsaverage5"]}),
        ("trials", {"file": 3, "stimuli": "x.npy"}),
        ("truth", {"file": "t.npz", "maps": ["a"]}),
        ("captions", 12),
        ("name", {"a": 1}),
        ("responses", None),
    ],
)
def test_malformed_manifest_values_are_one_line_errors(tmp_path, key, value):
    root = make_folder(tmp_path / "m")
    np.save(root / "v.npy", np.arange(N_UNITS))
    manifest = _manifest(root)
    manifest[key] = value
    _write_manifest(root, manifest)
    message = import_error(root, tmp_path)
    assert message.startswith(("manifest.json:", "images/")), message


# --- the other importers -----------------------------------------------------------------------


def test_nsd_image_brick_with_huge_images_fails_before_any_beta_is_read(tmp_path, monkeypatch):
    from backend.data.importers import freesurfer

    root = tmp_path / "nsd"
    write_nsd(root)
    brick = root / "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"
    with h5py.File(brick, "w") as f:  # chunked and never written: 3000 x 7000 x 7000 x 3 costs nothing on disk
        f.create_dataset("imgBrick", shape=(3000, 7000, 7000, 3), dtype=np.uint8, chunks=(1, 64, 64, 3))
    reads = []
    monkeypatch.setattr(freesurfer.SurfaceFile, "read_frames", lambda self, n: reads.append(self.path) or 1 / 0)
    with pytest.raises(DatasetError) as info:
        import_nsd(root, dest_root=tmp_path / "out", mesh="fsaverage3")
    message = str(info.value)
    assert message.startswith("nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5: ") and "megapixel" in message, message
    assert reads == []
    with h5py.File(brick, "w") as f:
        f.create_dataset("imgBrick", data=np.zeros((3000, 6, 5, 3), np.float32))
    with pytest.raises(DatasetError, match=r"nsd_stimuli\.hdf5: imgBrick must hold uint8"):
        import_nsd(root, dest_root=tmp_path / "out", mesh="fsaverage3")


def test_algonauts_images_are_checked_before_the_responses_are_written(tmp_path, monkeypatch):
    from backend.data.importers import algonauts

    truth = write_algonauts(tmp_path / "data")
    truth["images"][2].write_text("not a png")
    written = []
    monkeypatch.setattr(algonauts, "_write_responses", lambda *a: written.append(1))
    with pytest.raises(DatasetError) as info:
        import_algonauts(tmp_path / "data", dest_root=tmp_path / "out")
    assert str(info.value).startswith("subj01/training_split/training_images/train-0003_nsd-02950.png: not a readable image")
    assert written == []
    truth["images"][2].write_bytes(png_claiming(8000, 8000))
    with pytest.raises(DatasetError, match=r"train-0003_nsd-02950\.png: .*megapixel"):
        import_algonauts(tmp_path / "data", dest_root=tmp_path / "out")


def test_allen_template_of_huge_scenes_is_refused(tmp_path):
    root = tmp_path / "allen"
    root.mkdir()
    path = root / "ophys_experiment_1.nwb"
    write_nwb(path, seed=1, area="VISp", depth="175 microns", genotype="Cux2-CreERT2/wt", n_cells=2, repeats=3)
    with h5py.File(path, "a") as f:
        del f["stimulus/templates/natural_scenes_image_stack/data"]
        f.create_dataset("stimulus/templates/natural_scenes_image_stack/data", shape=(5, 7000, 7000), dtype=np.uint8, chunks=(1, 64, 64))
    with pytest.raises(DatasetError) as info:
        import_allen(root, dest_root=tmp_path / "out")
    message = str(info.value)
    assert message.startswith("ophys_experiment_1.nwb: ") and "megapixel" in message and "\n" not in message, message
    shutil.rmtree(tmp_path / "out", ignore_errors=True)
