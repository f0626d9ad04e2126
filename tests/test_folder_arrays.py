"""Array files whose header lies about their size: every array the folder format reads is checked
against the file size before anything is allocated, and fails with one line naming the file
relative to the dataset folder (never a MemoryError, never an absolute path)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from backend.data import folder as folder_module
from backend.data.folder import load_array, load_folder
from backend.data.importers.folder_import import import_folder
from backend.data.schema import DatasetError
from tests.test_folder import N_STIMULI, N_UNITS, make_folder

REPO = Path(__file__).resolve().parents[1]
HUGE = 10**12  # elements a lying header claims: 3.6 TiB of float32, 7.3 TiB of int64


def npy_bytes(shape: tuple[int, ...], dtype, data: bytes = b"\0" * 64) -> bytes:
    """A .npy header claiming ``shape`` of ``dtype``, followed by ``data`` (usually far too little)."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + data


def lying_npz(path: Path, members: dict[str, bytes]) -> None:
    """An .npz (a zip of .npy files) whose members are the given raw .npy bytes."""
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(f"{name}.npy", data)


def surface_folder(root: Path, **manifest_extra) -> Path:
    """make_folder's dataset on a 5-vertex subset of fsaverage5, with vertices and ROI labels."""
    space = {"kind": "surface", "mesh": "fsaverage5", "vertices": "vertices.npy", "rois": "rois.npy", "roi_names": ["none", "V1"]}
    root = make_folder(root, space=space, manifest_extra=manifest_extra)
    np.save(root / "vertices.npy", np.array([0, 1, 2, 10242, 20483]))
    np.save(root / "rois.npy", np.array([1, 1, 0, 0, 1], np.int16))
    return root


def _trials(root: Path) -> None:
    np.save(root / "trial_rows.npy", np.array([0, 1]))
    np.save(root / "trials.npy", np.zeros((2, 2, N_UNITS), np.float32))


# (case, how to build the folder, file to corrupt (relative), how: "npy" header or "npz" member)
CASES = {
    "responses (memory-mapped)": (lambda r: make_folder(r), "responses.npy", None),
    "responses in an npz": (lambda r: _npz_responses(r), "data.npz", "responses"),
    "noise ceiling": (lambda r: _with_nc(r), "nc/noise_ceiling.npy", None),
    "trials (memory-mapped)": (lambda r: _with_trials(r), "trials.npy", None),
    "trial stimuli": (lambda r: _with_trials(r), "trial_rows.npy", None),
    "vertices": (lambda r: surface_folder(r), "vertices.npy", None),
    "rois": (lambda r: surface_folder(r), "rois.npy", None),
    "neurons.npz area": (lambda r: make_folder(r), "neurons.npz", "area"),
    "neurons.npz x": (lambda r: make_folder(r), "neurons.npz", "x"),
    "truth map": (lambda r: _with_truth(r), "truth.npz", "planted"),
}


def _npz_responses(root: Path) -> Path:
    make_folder(root, manifest_extra={"responses": "data.npz"})
    np.savez(root / "data.npz", responses=np.zeros((N_STIMULI, N_UNITS), np.float32))
    return root


def _with_nc(root: Path) -> Path:
    make_folder(root, manifest_extra={"noise_ceiling": "nc/noise_ceiling.npy"})
    (root / "nc").mkdir()
    np.save(root / "nc/noise_ceiling.npy", np.full(N_UNITS, 50, np.float32))
    return root


def _with_trials(root: Path) -> Path:
    make_folder(root, manifest_extra={"trials": {"file": "trials.npy", "stimuli": "trial_rows.npy"}})
    _trials(root)
    return root


def _with_truth(root: Path) -> Path:
    make_folder(root, manifest_extra={"truth": {"file": "truth.npz", "maps": {"planted": "what was planted"}}})
    np.savez(root / "truth.npz", planted=np.ones(N_UNITS, np.float32))
    return root


def _corrupt(root: Path, rel: str, member: str | None, shape: tuple[int, ...]) -> None:
    path = root / rel
    if member is None:
        dtype = np.load(path, mmap_mode="r").dtype
        path.write_bytes(npy_bytes(shape, dtype))
        return
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    members = {}
    for name, array in arrays.items():
        buffer = io.BytesIO()
        np.save(buffer, array)
        members[name] = npy_bytes(shape, array.dtype) if name == member else buffer.getvalue()
    lying_npz(path, members)


def one_line(root: Path) -> str:
    with pytest.raises(DatasetError) as info:
        load_folder(root)
    message = str(info.value)
    assert "\n" not in message
    assert str(root) not in message, f"an absolute server path leaked: {message}"
    return message


@pytest.mark.parametrize("case", list(CASES))
def test_a_header_claiming_1e12_elements_is_refused_before_allocating(tmp_path, case):
    build, rel, member = CASES[case]
    root = build(tmp_path / "ds")
    load_folder(root)  # valid as built
    shape = (HUGE,) if case not in ("responses (memory-mapped)", "responses in an npz") else (HUGE, N_UNITS)
    if case == "trials (memory-mapped)":
        shape = (HUGE, 2, N_UNITS)
    _corrupt(root, rel, member, shape)
    message = one_line(root)
    assert message.startswith(rel), message  # named relative to the dataset folder
    assert "truncated" in message and "bytes" in message, message
    if member is not None:
        assert repr(member) in message or member in message


@pytest.mark.parametrize("case", ["noise ceiling", "neurons.npz x", "truth map"])
def test_a_slightly_short_file_is_truncated_too(tmp_path, case):
    """Not only absurd headers: one missing element is caught from the sizes alone."""
    build, rel, member = CASES[case]
    root = build(tmp_path / "ds")
    _corrupt(root, rel, member, (N_UNITS * 100,))  # 64 bytes of data where 500 elements are claimed
    assert "truncated" in one_line(root)


def test_npz_member_larger_than_memory_is_refused_without_reading(tmp_path, monkeypatch):
    """A consistent but huge npz member (a zip bomb) cannot be memory-mapped: refused by its size."""
    root = make_folder(tmp_path / "big")
    monkeypatch.setattr(folder_module, "_memory_bytes", lambda: 16)  # the 40-byte area column is "too large"
    message = one_line(root)
    assert message.startswith("neurons.npz") and "memory" in message


def test_load_array_checks_headers_for_importers_too(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "lh_training_fmri.npy"
    path.write_bytes(npy_bytes((HUGE, 100), np.float32))
    for mmap in (False, True):
        with pytest.raises(DatasetError) as info:
            load_array(path, mmap=mmap, root=tmp_path)
        assert str(info.value).startswith("sub/lh_training_fmri.npy: truncated")
    np.save(path, np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(load_array(path, root=tmp_path), np.arange(6).reshape(2, 3))


def test_every_message_of_load_folder_is_relative(tmp_path):
    """Missing files, bad shapes, NaN: the dataset's own location never appears."""
    root = make_folder(tmp_path / "rel")
    (root / "images" / "im2.png").unlink()
    assert one_line(root) == "images/im2.png: file not found (stimulus 2)"
    root = make_folder(tmp_path / "rel2", responses=np.full((N_STIMULI, N_UNITS), np.nan, np.float32))
    assert one_line(root).startswith("responses.npy: NaN or inf at index (0, 0)")


def test_import_folder_cli_prints_one_line_not_a_traceback(tmp_path):
    root = _with_nc(tmp_path / "cli")
    _corrupt(root, "nc/noise_ceiling.npy", None, (HUGE,))
    env = {**os.environ, "CORTEXTUAL_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "launch.py", "import", "folder", "--root", str(root)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "MemoryError" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: nc/noise_ceiling.npy: truncated"), done.stderr


def test_import_folder_refuses_the_same_files(tmp_path):
    root = make_folder(tmp_path / "imp")
    _corrupt(root, "neurons.npz", "y", (HUGE,))
    with pytest.raises(DatasetError, match=r"^neurons\.npz: .*'y'.*truncated"):
        import_folder(root, dest_root=tmp_path / "out")
    assert not (tmp_path / "out").exists() or not [p for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")]
