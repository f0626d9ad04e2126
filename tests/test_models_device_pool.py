"""Device/dtype policy, the batching loop (progress, cancel, out-of-memory halving) and the pool."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from backend.models import device as dev
from backend.models import registry
from backend.models.device import Cancelled, pick_device, pick_dtype, run_batched
from backend.models.pool import ModelPool, footprint_gb
from backend.models.weights import ModelUnavailable
from tests.models_tiny import tiny_folder, tiny_id, tiny_pool  # noqa: F401  (fixture)

# ------------------------------------------------------------------------------ run_batched


def test_run_batched_keeps_order_and_reports_progress():
    calls, seen = [], []
    out = run_batched(lambda b: (calls.append(list(b)), [x * 10 for x in b])[1], list(range(5)), 2,
                      progress=lambda done, total: seen.append((done, total)))
    assert out == [0, 10, 20, 30, 40]
    assert calls == [[0, 1], [2, 3], [4]]
    assert seen == [(2, 5), (4, 5), (5, 5)]
    assert run_batched(lambda b: b, [], 4) == []
    with pytest.raises(ValueError, match="batch_size"):
        run_batched(lambda b: b, [1], 0)


def test_run_batched_cancels_between_batches():
    calls = []
    with pytest.raises(Cancelled, match="after 4 of 10"):
        run_batched(lambda b: (calls.append(b), b)[1], list(range(10)), 2, cancel=lambda: len(calls) == 2)
    assert len(calls) == 2  # the batch in flight finished; no further batch started


def test_out_of_memory_halves_the_batch_and_retries():
    sizes = []

    def fn(batch):
        sizes.append(len(batch))
        if len(batch) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [x + 1 for x in batch]

    assert run_batched(fn, list(range(10)), 16) == list(range(1, 11))
    # 16 -> 8 -> 4 fail, 2 fits and stays for the rest of the run.
    assert sizes == [10, 8, 4, 2, 2, 2, 2, 2]


def test_out_of_memory_at_batch_size_one_is_reraised_clearly():
    def fn(batch):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory.")

    with pytest.raises(torch.cuda.OutOfMemoryError, match="even at batch size 1"):
        run_batched(fn, [1, 2, 3], 4)


def test_other_errors_are_not_retried():
    sizes = []

    def fn(batch):
        sizes.append(len(batch))
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_batched(fn, [1, 2, 3, 4], 4)
    assert sizes == [4]


# --------------------------------------------------------------------------- device, dtype


def test_device_and_dtype_policy(monkeypatch):
    monkeypatch.delenv("CORTEXTUAL_DEVICE", raising=False)
    monkeypatch.delenv("CORTEXTUAL_DTYPE", raising=False)
    assert pick_device() == ("cuda" if torch.cuda.is_available() else "mps" if dev._mps_available() else "cpu")
    assert pick_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not available"):
            pick_device("cuda")  # never a silent CPU fallback
    with pytest.raises(ValueError, match="unknown device"):
        pick_device("tpu")

    sd = registry.get_model("stabilityai/sd-turbo")  # float16 by default
    minilm = registry.get_model("sentence-transformers/all-MiniLM-L6-v2")  # float32
    assert pick_dtype(sd, "cpu") == torch.float32 and pick_dtype(sd, "mps") == torch.float32
    assert pick_dtype(sd, "cuda") == torch.float16 and pick_dtype(minilm, "cuda") == torch.float32
    bf16 = registry.ModelSpec(id="x", kind="captioner", architecture="blip", default_dtype="bfloat16")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert pick_dtype(bf16, "cuda") == torch.float16  # an older GPU
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert pick_dtype(bf16, "cuda") == torch.bfloat16
    monkeypatch.setenv("CORTEXTUAL_DTYPE", "bfloat16")
    assert pick_dtype(sd, "cpu") == torch.bfloat16
    # Memory counts in the dtype used: a float16 model run in float32 takes twice its memory_gb.
    assert footprint_gb(sd, torch.float32) == pytest.approx(2 * sd.memory_gb)


# ------------------------------------------------------------------------------------ pool


class FakeLoader:
    """Stands in for loading: records calls, optionally slowly, returns a marker object."""

    def __init__(self, delay: float = 0.0):
        self.calls: list[str] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, spec, device, dtype):
        with self.lock:
            self.calls.append(spec.id)
        time.sleep(self.delay)
        return {"id": spec.id, "device": device, "dtype": dtype}


@pytest.fixture()
def sized_models(tmp_path, monkeypatch):
    """Three user models of 1, 1 and 2 GB (float32, so CPU counts them as is)."""
    monkeypatch.setenv("CORTEXTUAL_CACHE", str(tmp_path))
    folder = tiny_folder("git")
    for name, gb in (("a", 1.0), ("b", 1.0), ("c", 2.0)):
        registry.add_user_model(architecture="git", source=folder, id=name, memory_gb=gb, default_dtype="float32")
    return ["a", "b", "c"]


def test_pool_loads_once_and_evicts_least_recently_used(sized_models):
    loader = FakeLoader()
    pool = ModelPool(budget_gb=3.0, device="cpu", loader=loader)
    first = pool.get("a")
    assert pool.get("a") is first and loader.calls == ["a"] and pool.loads["a"] == 1
    assert first["dtype"] == torch.float32 and first["device"] == "cpu"
    pool.get("b")
    pool.get("a")  # a is now the most recently used
    assert pool.resident() == ["b", "a"] and pool.resident_gb() == pytest.approx(2.0)
    pool.get("c")  # needs 2 GB: b (least recently used) goes, a stays
    assert pool.resident() == ["a", "c"] and pool.resident_gb() == pytest.approx(3.0)
    pool.get("b")  # a goes
    assert pool.resident() == ["c", "b"]
    assert pool.loads == {"a": 1, "b": 2, "c": 1}
    assert pool.evict("c") and not pool.evict("c")
    assert pool.resident() == ["b"]


def test_a_model_bigger_than_the_budget_loads_alone(sized_models):
    pool = ModelPool(budget_gb=1.5, device="cpu", loader=FakeLoader())
    pool.get("a")
    pool.get("c")
    assert pool.resident() == ["c"]


def test_concurrent_gets_of_one_model_load_it_once(sized_models):
    loader = FakeLoader(delay=0.3)
    pool = ModelPool(budget_gb=8, device="cpu", loader=loader)
    results = []
    threads = [threading.Thread(target=lambda: results.append(pool.get("a"))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loader.calls == ["a"] and pool.loads["a"] == 1
    assert len(results) == 6 and all(r is results[0] for r in results)


def test_pool_errors_load_nothing(sized_models):
    pool = ModelPool(budget_gb=8, device="cpu")
    with pytest.raises(registry.UnknownModel):
        pool.get("no-such-model")
    with pytest.raises(ModelUnavailable, match="models pull stabilityai/sd-turbo"):
        pool.get("stabilityai/sd-turbo")
    assert sum(pool.loads.values()) == 0 and pool.resident() == []


def test_pool_returns_real_wrappers_with_spec_device_and_id(tiny_pool):
    captioner = tiny_pool.get(tiny_id("git"))
    assert captioner.id == tiny_id("git") and captioner.spec.architecture == "git"
    assert captioner.device == "cpu" and captioner.dtype == torch.float32
    assert captioner.revision.startswith("local-")  # the folder's fingerprint, for cache keys
    assert tiny_pool.get(tiny_id("git")) is captioner and tiny_pool.loads[tiny_id("git")] == 1
    renderer = tiny_pool.get("sim-scene-renderer")
    assert renderer.spec.simulated and renderer.revision == "v1"
