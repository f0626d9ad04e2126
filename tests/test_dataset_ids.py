"""Dataset ids are names from the catalog, never paths: hostile ids through the API and job
bodies, folders linked in by the launcher (``--dataset DIR``), and no server path in any error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from backend.data import catalog
from backend.data.schema import DatasetError
from tests.conftest import CACHE_ROOT
from tests.test_folder import make_folder

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = ["..", ".", "~", "~root", "~no-such-user-4711", "/etc", "/proc/self", "", "a" * 300, "demo-human/../..", " demo-human", "x\x00y"]
#: The same, as they reach a URL path segment (percent-encoded so the router sees one segment).
HOSTILE_IN_PATHS = ["..", "%2E%2E", "~", "~root", "~no-such-user-4711", "%2Fetc", "%2Fproc%2Fself", "a" * 300, "demo-human%2F..%2F..", "%20demo-human"]


def server_paths() -> list[str]:
    return [str(CACHE_ROOT), os.getcwd(), str(Path.home()), str(ROOT)]


@pytest.mark.parametrize("dataset_id", HOSTILE)
def test_catalog_opens_no_path(dataset_id):
    with pytest.raises(catalog.UnknownDataset) as info:
        catalog.open_dataset(dataset_id)
    assert not any(p in str(info.value) for p in server_paths() if len(p) > 1)


def test_a_valid_folder_given_as_an_id_is_refused(tmp_path):
    folder = make_folder(tmp_path / "valid")
    with pytest.raises(catalog.UnknownDataset):
        catalog.open_dataset(str(folder))


@pytest.mark.parametrize("segment", HOSTILE_IN_PATHS)
@pytest.mark.parametrize("route", ["/api/datasets/{}", "/api/datasets/{}/stimuli", "/api/datasets/{}/space", "/api/datasets/{}/stimuli/0/image"])
def test_hostile_ids_in_urls_are_4xx_without_server_paths(backend_url, route, segment):
    response = httpx.get(backend_url + route.format(segment), timeout=30)
    assert response.status_code in (404, 422), (segment, response.status_code, response.text[:200])
    assert not any(p in response.text for p in server_paths()), response.text[:300]


@pytest.mark.parametrize("dataset_id", HOSTILE)
@pytest.mark.parametrize("job", ["encode", "caption", "rsa", "manifolds"])
def test_hostile_ids_in_job_bodies_are_422(backend_url, job, dataset_id):
    body = {"dataset": dataset_id, "model": "sim-one-object"}
    response = httpx.post(f"{backend_url}/api/jobs/{job}", json=body, timeout=30)
    assert response.status_code == 422, (dataset_id, response.status_code, response.text[:200])
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail[0]["loc"][-1] == "dataset", detail  # FastAPI's shape, as the schema says
    assert not any(p in response.text for p in server_paths())


def test_linking_a_folder_registers_it_under_an_id(tmp_path):
    folder = make_folder(tmp_path / "My Experiment (2026)")
    dataset_id = catalog.link_folder(folder)
    assert dataset_id == "My_Experiment_2026"
    assert catalog.link_folder(folder) == dataset_id, "linking the same folder again reuses its id"
    other = make_folder(tmp_path / "elsewhere" / "My Experiment (2026)")
    second = catalog.link_folder(other)
    assert second != dataset_id and second.startswith(dataset_id), "a taken name gets a suffix"
    listed = {info.id: info for info in catalog.list_datasets()}
    assert dataset_id in listed and second in listed and listed[dataset_id].n_stimuli == 6
    assert "path" not in listed[dataset_id].to_dict(), "the API lists no server paths"
    assert catalog.open_dataset(dataset_id).n_stimuli == 6


def test_linking_a_bad_folder_says_why_in_one_line(tmp_path):
    folder = make_folder(tmp_path / "broken")
    (folder / "responses.npy").unlink()
    with pytest.raises(DatasetError) as info:
        catalog.link_folder(folder)
    assert "responses.npy" in str(info.value) and "\n" not in str(info.value)
    assert "broken" not in {info.id for info in catalog.list_datasets()}


def test_dataset_argument_links_folders_and_passes_ids(tmp_path, small_world, capsys):
    import launch

    assert launch.dataset_argument("demo-human") == "demo-human"
    folder = make_folder(tmp_path / "cli-folder")
    dataset_id = launch.dataset_argument(str(folder))
    assert dataset_id == "cli-folder" and "in the catalog as 'cli-folder'" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="neither a dataset id"):
        launch.dataset_argument(str(tmp_path / "missing" / "folder"))


def test_analyze_accepts_a_folder(tmp_path):
    """``analyze --dataset DIR`` goes through the same linking: an invalid folder is one line."""
    folder = make_folder(tmp_path / "analyze-folder")
    (folder / "manifest.json").write_text("{not json")
    done = subprocess.run(
        [sys.executable, "launch.py", "analyze", "--dataset", str(folder), "--out", str(tmp_path / "r.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode != 0 and "manifest.json" in done.stderr and "Traceback" not in done.stderr, done.stderr[-800:]
