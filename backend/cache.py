"""Everything Cortextual stores, written so that nothing half-written is ever read back.

Files and folders (datasets) are written beside their final place under a hidden name
(``.NAME.*``, which listings skip) and renamed into place in one step (``os.replace``), so a
killed process leaves at most a hidden orphan. Stage outputs (captions, embeddings, images) go
to :class:`Store`, a content-addressed SQLite table written in transactions.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from backend.config import cache_dir


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Build a directory elsewhere and move it to ``final`` only if the block finishes.

    Yields the scratch directory to fill. On an exception the scratch is deleted and ``final`` is
    untouched. ``final`` must not exist yet: datasets are immutable once written.
    """
    final = Path(final)
    if final.exists():
        raise FileExistsError(f"{final} already exists")
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".partial"))
    try:
        yield scratch
        os.replace(scratch, final)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


class Store:
    """Content-addressed store of stage outputs (captions, embeddings, images), one SQLite file.

    An entry's key is the SHA-256 of everything that determines it: the model id and revision,
    the parameters, and the content hash of the input (:func:`entry_key`). Each write is one
    transaction, so a killed job leaves whole entries or none. ``compute_once(key)`` serialises
    work on a key across threads so concurrent jobs asking for the same output compute it once.

    Values are bytes plus a small media type ("text", "npy", "png", "json"); arrays are stored as
    .npy bytes and read back with ``allow_pickle=False``.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else cache_dir() / "store.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._connect().db.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, media TEXT NOT NULL, "
                "data BLOB NOT NULL, created REAL NOT NULL)"
            )
            # Which stage ran with which model on which dataset, so the API can list them.
            db.execute(
                "CREATE TABLE IF NOT EXISTS runs (dataset TEXT NOT NULL, stage TEXT NOT NULL, model TEXT NOT NULL, "
                "params TEXT NOT NULL, done INTEGER NOT NULL, total INTEGER NOT NULL, updated REAL NOT NULL, "
                "PRIMARY KEY (dataset, stage, model, params))"
            )
            # Job records outlive the backend process, so a restart can say what it interrupted.
            db.execute("CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, record TEXT NOT NULL, created REAL NOT NULL)")

    def _connect(self) -> _Transaction:
        # One connection per thread: sqlite3 connections must not cross threads.
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self._local.db = db
        return _Transaction(db)

    # -- raw entries ---------------------------------------------------------------------------
    def get(self, key: str) -> tuple[str, bytes] | None:
        with self._connect() as db:
            row = db.execute("SELECT media, data FROM entries WHERE key = ?", (key,)).fetchone()
        return None if row is None else (row[0], bytes(row[1]))

    def get_many(self, keys: list[str]) -> dict[str, tuple[str, bytes]]:
        """The entries present among ``keys`` (one query per 500 keys)."""
        found: dict[str, tuple[str, bytes]] = {}
        with self._connect() as db:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for key, media, data in db.execute(f"SELECT key, media, data FROM entries WHERE key IN ({marks})", chunk):
                    found[key] = (media, bytes(data))
        return found

    def put_many(self, items: dict[str, tuple[str, bytes]]) -> None:
        """Write several entries in one transaction (all or none)."""
        now = time.time()
        with self._connect() as db:
            db.executemany(
                "INSERT OR REPLACE INTO entries (key, media, data, created) VALUES (?, ?, ?, ?)",
                [(key, media, data, now) for key, (media, data) in items.items()],
            )

    def put(self, key: str, media: str, data: bytes) -> None:
        self.put_many({key: (media, data)})

    def __contains__(self, key: str) -> bool:
        with self._connect() as db:
            return db.execute("SELECT 1 FROM entries WHERE key = ?", (key,)).fetchone() is not None

    def __len__(self) -> int:
        with self._connect() as db:
            return db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]

    # -- runs ----------------------------------------------------------------------------------
    def record_run(self, dataset: str, stage: str, model: str, params: dict, done: int, total: int) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)",
                (dataset, stage, model, json.dumps(params, sort_keys=True), done, total, time.time()),
            )

    def runs(self, dataset: str, stage: str) -> list[dict]:
        """Runs of ``stage`` on ``dataset``, oldest first: {model, params, done, total}."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT model, params, done, total FROM runs WHERE dataset = ? AND stage = ? ORDER BY updated", (dataset, stage)
            ).fetchall()
        return [{"model": m, "params": json.loads(p), "done": d, "total": t} for m, p, d, t in rows]

    # -- job records ---------------------------------------------------------------------------
    def save_job(self, record: dict, keep: int = 500) -> None:
        """Write a job's JSON record (see ``Job.as_dict``); only the newest ``keep`` are kept."""
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?)", (record["id"], json.dumps(record), record["created"]))
            db.execute("DELETE FROM jobs WHERE id NOT IN (SELECT id FROM jobs ORDER BY created DESC LIMIT ?)", (keep,))

    def job_record(self, job_id: str) -> dict | None:
        with self._connect() as db:
            row = db.execute("SELECT record FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else json.loads(row[0])

    def job_records(self, limit: int = 200) -> list[dict]:
        """The newest job records, newest first."""
        with self._connect() as db:
            rows = db.execute("SELECT record FROM jobs ORDER BY created DESC LIMIT ?", (limit,)).fetchall()
        return [json.loads(r[0]) for r in rows]

    # -- typed helpers -------------------------------------------------------------------------
    def get_text(self, key: str) -> str | None:
        entry = self.get(key)
        return None if entry is None else entry[1].decode("utf-8")

    def get_array(self, key: str):
        entry = self.get(key)
        return None if entry is None else array_from_npy(entry[1])

    @contextlib.contextmanager
    def compute_once(self, key: str) -> Iterator[None]:
        """Hold the key's lock: check the store again inside, compute only if still missing."""
        with self._locks_guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            yield


class _Transaction:
    """``with`` block = one SQLite transaction on a per-thread connection."""

    def __init__(self, db) -> None:
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN")
        return self.db

    def __exit__(self, kind, value, tb) -> None:
        self.db.execute("ROLLBACK" if kind else "COMMIT")


def entry_key(**parts) -> str:
    """SHA-256 over a canonical JSON of ``parts`` (model, revision, params, input hash, ...)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def array_to_npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def array_from_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)
