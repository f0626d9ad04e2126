"""Long work as jobs: queued, run one at a time (one accelerator is shared), with progress.

A job is a function ``work(job)`` that reports progress with ``job.report(done, total, message)``
and checks ``job.check_cancelled()`` between batches; the queue records its state for the API.
Errors are caught and kept as one line on the job, so a failing job never stops the backend.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("cortextual.jobs")

STATES = ("queued", "running", "done", "failed", "cancelled")


class JobCancelled(Exception):
    """Raised inside a job's work when its cancellation was requested."""


@dataclass
class Job:
    id: str
    kind: str
    params: dict
    work: Callable[[Job], dict | None] = field(repr=False)
    state: str = "queued"
    done: int = 0
    total: int = 0
    message: str = ""
    error: str | None = None
    result: dict | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def report(self, done: int, total: int, message: str = "") -> None:
        self.done, self.total = int(done), int(total)
        if message:
            self.message = message

    def check_cancelled(self) -> None:
        if self._cancel.is_set():
            raise JobCancelled()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def as_dict(self) -> dict:
        elapsed = None
        if self.started:
            elapsed = round((self.finished or time.time()) - self.started, 3)
        return {
            "id": self.id,
            "kind": self.kind,
            "params": self.params,
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "fraction": round(self.done / self.total, 4) if self.total else (1.0 if self.state == "done" else 0.0),
            "message": self.message,
            "error": self.error,
            "result": self.result,
            "elapsed_s": elapsed,
        }


class JobQueue:
    """Runs submitted jobs in order on one worker thread; keeps the last ``keep`` finished ones."""

    def __init__(self, keep: int = 200) -> None:
        self._jobs: dict[str, Job] = {}
        self._pending: queue.Queue[Job] = queue.Queue()
        self._ids = itertools.count(1)
        self._keep = keep
        self._lock = threading.Lock()
        self._worker = threading.Thread(target=self._run, name="job-worker", daemon=True)
        self._worker.start()

    def submit(self, kind: str, params: dict, work: Callable[[Job], dict | None]) -> Job:
        with self._lock:
            job = Job(id=f"job-{next(self._ids)}", kind=kind, params=params, work=work)
            self._jobs[job.id] = job
            self._forget_old()
        self._pending.put(job)
        return job

    def get(self, job_id: str) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise KeyError(f"no job {job_id!r} (finished jobs are kept for a while, then forgotten)") from None

    def list(self) -> list[Job]:
        return sorted(self._jobs.values(), key=lambda j: j.created, reverse=True)

    def cancel(self, job_id: str) -> Job:
        """Ask a job to stop: a queued job never starts, a running one stops at its next batch."""
        job = self.get(job_id)
        job._cancel.set()
        if job.state == "queued":
            job.state, job.finished, job.message = "cancelled", time.time(), "cancelled before it started"
        return job

    def _run(self) -> None:
        while True:
            job = self._pending.get()
            if job.state != "queued":
                continue
            job.state, job.started = "running", time.time()
            try:
                job.result = job.work(job) or {}
                job.state = "done"
            except JobCancelled:
                job.state, job.message = "cancelled", f"cancelled after {job.done} of {job.total}"
            except Exception as err:  # one line on the job; the traceback in the log
                log.error("job %s (%s) failed:\n%s", job.id, job.kind, traceback.format_exc())
                job.state, job.error = "failed", f"{type(err).__name__}: {err}".splitlines()[0]
            finally:
                job.finished = time.time()

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.state in ("done", "failed", "cancelled")]
        for job in sorted(finished, key=lambda j: j.created)[: max(0, len(finished) - self._keep)]:
            del self._jobs[job.id]
