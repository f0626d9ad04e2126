"""Long work as jobs: queued, run one at a time (one accelerator is shared), with progress.

A job is a function ``work(job)`` that reports progress with ``job.report(done, total, message)``
and checks ``job.check_cancelled()`` between batches; the queue records its state for the API.
Errors are caught and kept as one line on the job, so a failing job never stops the backend.

With a :class:`~backend.cache.Store`, every job's record is also written there (at submission,
start, end, and about once a second while it runs), so a backend that restarts after a crash
still answers for the jobs of the process before it: those that were queued or running then are
reported as ``interrupted`` (what their stages had written to the store is kept, so running the
same job again continues from there). Job ids are random, never reused across restarts.
"""

from __future__ import annotations

import contextvars
import logging
import os
import queue
import secrets
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("cortextual.jobs")

STATES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
#: Seconds between two writes of a running job's progress to the store.
SAVE_EVERY_S = 1.0
INTERRUPTED = (
    "the backend restarted while this job was {state}; what it had finished is kept in the cache, "
    "so running it again continues from there"
)


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
    _on_change: Callable[[Job, bool], None] | None = field(default=None, repr=False)
    #: The submitting request's context variables, which the work runs in: on ZeroGPU a job's
    #: ``spaces.GPU`` calls then see the Gradio request that started it (see backend.models.zerogpu).
    _context: contextvars.Context = field(default_factory=contextvars.copy_context, repr=False)

    def report(self, done: int, total: int, message: str = "") -> None:
        self.done, self.total = int(done), int(total)
        if message:
            self.message = message
        if self._on_change is not None:
            self._on_change(self, False)

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
            "created": self.created,
        }


class JobQueue:
    """Runs submitted jobs in order on one worker thread; keeps the last ``keep`` finished ones
    in memory (and their records in ``store``, if given)."""

    def __init__(self, keep: int = 200, store=None) -> None:
        self._jobs: dict[str, Job] = {}
        self._pending: queue.Queue[Job] = queue.Queue()
        self._keep = keep
        self._store = store
        self._saved_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._worker = threading.Thread(target=self._run, name="job-worker", daemon=True)
        self._worker.start()

    def submit(self, kind: str, params: dict, work: Callable[[Job], dict | None]) -> Job:
        with self._lock:
            job = Job(id=f"job-{secrets.token_hex(6)}", kind=kind, params=params, work=work, _on_change=self._save)
            self._jobs[job.id] = job
            self._forget_old()
        self._save(job, True)
        self._pending.put(job)
        return job

    def get(self, job_id: str) -> Job | dict:
        """The job, or the record of a job of an earlier backend process (``as_dict`` shape)."""
        job = self._jobs.get(job_id)
        if job is not None:
            return job
        record = self._store.job_record(job_id) if self._store is not None else None
        if record is None:
            raise KeyError(f"no job {job_id!r} (finished jobs are kept for a while, then forgotten)")
        return _Record(_as_of_now(record))

    def list(self) -> list[Job | dict]:
        """Jobs of this process and, after them, records of earlier ones; newest first."""
        jobs: list = sorted(self._jobs.values(), key=lambda j: j.created, reverse=True)
        if self._store is not None:
            jobs += [_Record(_as_of_now(r)) for r in self._store.job_records(self._keep) if r["id"] not in self._jobs]
        return jobs

    def cancel(self, job_id: str) -> Job | dict:
        """Ask a job to stop: a queued job never starts, a running one stops at its next batch."""
        job = self.get(job_id)
        if isinstance(job, _Record):  # an earlier process's job: nothing is running it
            return job
        job._cancel.set()
        if job.state == "queued":
            job.state, job.finished, job.message = "cancelled", time.time(), "cancelled before it started"
            self._save(job, True)
        return job

    def _run(self) -> None:
        while True:
            job = self._pending.get()
            if job.state != "queued":
                continue
            job.state, job.started = "running", time.time()
            self._save(job, True)
            try:
                job.result = job._context.run(job.work, job) or {}
                job.state = "done"
            except JobCancelled:
                job.state, job.message = "cancelled", f"cancelled after {job.done} of {job.total}"
            except Exception as err:  # one line on the job; the traceback in the log
                log.error("job %s (%s) failed:\n%s", job.id, job.kind, traceback.format_exc())
                job.state, job.error = "failed", f"{type(err).__name__}: {err}".splitlines()[0]
            finally:
                job.finished = time.time()
                self._save(job, True)

    def _save(self, job: Job, now: bool) -> None:
        """Write the job's record to the store (progress at most every SAVE_EVERY_S)."""
        if self._store is None:
            return
        clock = time.monotonic()
        if not now and clock - self._saved_at.get(job.id, 0.0) < SAVE_EVERY_S:
            return
        self._saved_at[job.id] = clock
        try:
            self._store.save_job({**job.as_dict(), "pid": os.getpid()})
        except Exception:  # a record that cannot be written must not fail the job
            log.warning("could not record job %s:\n%s", job.id, traceback.format_exc())

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.state in ("done", "failed", "cancelled")]
        for job in sorted(finished, key=lambda j: j.created)[: max(0, len(finished) - self._keep)]:
            del self._jobs[job.id]
            self._saved_at.pop(job.id, None)


class _Record(dict):
    """A job of an earlier backend process, as its record: answers ``as_dict`` like a Job."""

    def as_dict(self) -> dict:
        return dict(self)


def _as_of_now(record: dict) -> dict:
    """A stored record as the API reports it now: a job that was queued or running in a backend
    process that no longer exists was interrupted."""
    record = dict(record)
    pid = record.pop("pid", None)
    if record["state"] in ("queued", "running") and pid != os.getpid() and not _alive(pid):
        record["message"] = INTERRUPTED.format(state=record["state"])
        record["state"] = "interrupted"
    return record


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
