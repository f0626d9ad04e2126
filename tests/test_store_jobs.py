"""The content-addressed store (atomic, compute-once) and the job queue (progress, cancel, errors)."""

from __future__ import annotations

import multiprocessing
import threading
import time

import numpy as np
import pytest

from backend.cache import Store, array_to_npy, entry_key
from backend.service.jobs import JobQueue


def test_keys_depend_on_every_part_and_not_on_order():
    base = entry_key(model="m", revision="r", params={"a": 1, "b": 2}, image="h")
    assert base == entry_key(image="h", params={"b": 2, "a": 1}, revision="r", model="m")
    assert base != entry_key(model="m", revision="r2", params={"a": 1, "b": 2}, image="h")
    assert base != entry_key(model="m", revision="r", params={"a": 1, "b": 3}, image="h")
    assert base != entry_key(model="m", revision="r", params={"a": 1, "b": 2}, image="h2")


def test_store_round_trips_text_arrays_and_bytes(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    store.put("k1", "text", "a dog".encode())
    store.put("k2", "npy", array_to_npy(np.arange(6, dtype=np.float32).reshape(2, 3)))
    assert store.get_text("k1") == "a dog"
    np.testing.assert_array_equal(store.get_array("k2"), np.arange(6, dtype=np.float32).reshape(2, 3))
    assert store.get("missing") is None and "k1" in store and len(store) == 2
    assert set(store.get_many(["k1", "k2", "k3"])) == {"k1", "k2"}
    again = Store(tmp_path / "s.sqlite")  # persists across instances (and restarts)
    assert again.get_text("k1") == "a dog"


def test_a_failed_transaction_writes_nothing(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    with pytest.raises(Exception):
        store.put_many({"good": ("text", b"x"), "bad": ("text", None)})  # NOT NULL violated mid-batch
    assert "good" not in store and len(store) == 0


def _write_then_die(path: str) -> None:
    store = Store(__import__("pathlib").Path(path))
    db = store._connect().db
    db.execute("BEGIN")
    db.execute("INSERT INTO entries VALUES ('half', 'text', x'00', 0)")
    import os

    os._exit(1)  # killed mid-transaction


def test_a_killed_writer_leaves_no_entry(tmp_path):
    path = tmp_path / "s.sqlite"
    Store(path)
    process = multiprocessing.get_context("spawn").Process(target=_write_then_die, args=(str(path),))
    process.start()
    process.join(30)
    assert process.exitcode == 1
    assert "half" not in Store(path)


def test_compute_once_serialises_the_same_key(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    computed = []

    def worker():
        with store.compute_once("k"):
            if "k" not in store:
                time.sleep(0.05)
                computed.append(1)
                store.put("k", "text", b"v")

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert computed == [1]


def test_runs_are_recorded(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    store.record_run("demo-human", "caption", "sim-one-object", {"seed": 0}, 10, 100)
    store.record_run("demo-human", "caption", "sim-one-object", {"seed": 0}, 100, 100)
    assert store.runs("demo-human", "caption") == [{"model": "sim-one-object", "params": {"seed": 0}, "done": 100, "total": 100}]
    assert store.runs("demo-mouse", "caption") == []


def wait(job, states=("done", "failed", "cancelled"), timeout=10):
    deadline = time.monotonic() + timeout
    while job.state not in states:
        assert time.monotonic() < deadline, job
        time.sleep(0.01)


def test_jobs_run_in_order_with_progress_and_results():
    jobs = JobQueue()
    seen = []

    def work(job):
        for i in range(5):
            job.report(i + 1, 5, "counting")
            seen.append((job.id, i))
        return {"sum": 10}

    a, b = jobs.submit("count", {}, work), jobs.submit("count", {}, work)
    wait(b)
    assert a.state == b.state == "done" and a.result == {"sum": 10}
    assert [s for s in seen if s[0] == a.id] == [(a.id, i) for i in range(5)]
    assert seen.index((a.id, 4)) < seen.index((b.id, 0)), "one at a time, in order"
    info = b.as_dict()
    assert info["fraction"] == 1.0 and info["done"] == 5 and info["elapsed_s"] >= 0


def test_cancel_stops_a_running_job_between_batches_and_a_queued_one_before_it_starts():
    jobs = JobQueue()
    started = threading.Event()

    def slow(job):
        started.set()
        for i in range(1000):
            job.check_cancelled()
            job.report(i, 1000)
            time.sleep(0.01)

    running = jobs.submit("slow", {}, slow)
    queued = jobs.submit("slow", {}, slow)
    started.wait(5)
    jobs.cancel(queued.id)
    jobs.cancel(running.id)
    wait(running)
    assert running.state == "cancelled" and running.done < 1000
    assert queued.state == "cancelled" and queued.started is None


def test_a_failing_job_keeps_a_one_line_error_and_the_queue_goes_on():
    jobs = JobQueue()

    def boom(job):
        raise ValueError("bad model id 'x'\nsecond line")

    failed = jobs.submit("boom", {}, boom)
    after = jobs.submit("ok", {}, lambda job: {"ok": True})
    wait(after)
    assert failed.state == "failed" and failed.error == "ValueError: bad model id 'x'"
    assert after.state == "done"
    with pytest.raises(KeyError, match="no job"):
        jobs.get("job-999")


def test_job_records_outlive_the_queue_and_say_what_a_restart_interrupted(tmp_path):
    """A second queue on the same store stands for the restarted backend: the first process's
    finished job reads back as it ended, its running one as interrupted (its process is gone)."""
    store = Store(tmp_path / "store.sqlite")
    first = JobQueue(store=store)
    finished = first.submit("count", {"n": 3}, lambda job: {"sum": 6})
    wait(finished)
    release = threading.Event()
    running = first.submit("slow", {"dataset": "demo-human"}, lambda job: (job.report(2, 10, "embedded 2 of 10"), release.wait(10)))
    wait(running, states=("running",))
    time.sleep(0.05)

    # The record of the running job, as a process that died would have left it.
    record = store.job_record(running.id)
    assert record["state"] == "running" and record["params"] == {"dataset": "demo-human"}
    record["pid"] = 2**22 + 12345  # beyond pid_max here: no such process
    store.save_job(record)

    second = JobQueue(store=store)
    done = second.get(finished.id).as_dict()
    assert done["state"] == "done" and done["result"] == {"sum": 6}
    lost = second.get(running.id).as_dict()
    assert lost["state"] == "interrupted" and "restarted" in lost["message"] and lost["kind"] == "slow"
    assert {j.as_dict()["id"] for j in second.list()} >= {finished.id, running.id}
    assert second.cancel(running.id).as_dict()["state"] == "interrupted", "nothing to cancel in a dead process"
    fresh = second.submit("count", {}, lambda job: {})
    assert fresh.id not in (finished.id, running.id), "ids are never reused across restarts"
    release.set()
