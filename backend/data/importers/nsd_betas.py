"""Streaming NSD single-trial betas into averaged responses and kept single trials, session by session.

A session's .mgh stores its 750 trials frame after frame, all vertices of a frame together, so
the efficient way through 80 files of 0.5 GB is one read per session and hemisphere, in file order.
Each (session, hemisphere) step reads the kept vertices of all 750 trials (frame-major), z-scores
each vertex over the session's trials, and folds every trial into its image's row of the
memory-mapped ``responses.npy`` as a running mean: the image's r-th trial (r = 0, 1, 2 in the order
shown) turns the row into ``row * r/(r+1) + trial/(r+1)``, so after all sessions each row is the
mean of its image's trials. The r-th trials of the kept images are also written into ``trials.npy``.

Memory is one session-hemisphere (0.5 GB on full fsaverage, 31 MB on fsaverage5) plus the rows it
touches, whatever the number of sessions.

Resumable: each step is marked done when written. A running-mean update is not idempotent, so
before a step changes rows that already hold earlier trials it saves those rows (an undo file,
renamed into place before any change); a rerun finding an undo file for an unfinished step puts
the rows back first. Rank-0 trials are plain assignments and need no undo.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from backend.data.importers.common import Staging, ensure_npy, save_npy_atomic
from backend.data.importers.freesurfer import SurfaceFile

TRIALS_PER_SESSION = 750
#: Vertices z-scored at once (bounds the float64 temporaries to ~100 MB).
_ZSCORE_CHUNK = 16384


@dataclass(frozen=True)
class TrialLayout:
    """Where each imported trial goes.

    image_row:      int64 [n_trials]: the image (row of the dataset) of each trial of the imported
                    sessions, stacked in session order (session k's trial j is k*750 + j)
    rank:           int64 [n_trials]: how many trials of the same image came before this one
    counts:         int64 [n_images]: trials per image (1..n_repeats)
    trial_stimuli:  int64 [n_trial_stimuli]: images whose single trials are kept (all repeats present)
    """

    image_row: np.ndarray
    rank: np.ndarray
    counts: np.ndarray
    trial_stimuli: np.ndarray

    @property
    def n_repeats(self) -> int:
        return int(self.counts.max()) if len(self.counts) else 0


def trial_layout(image_row_of_trial: np.ndarray, n_images: int, keep_trials: np.ndarray) -> TrialLayout:
    """Group trials by image, in the order they were shown.

    image_row_of_trial: int [n_trials], the image (row of the dataset) of each imported trial.
    keep_trials: bool [n_images], images whose single trials should be kept if all repeats exist.
    """
    image_row = np.asarray(image_row_of_trial, dtype=np.int64)
    order = np.argsort(image_row, kind="stable")  # stable: repeats stay in shown order
    counts = np.bincount(image_row, minlength=n_images).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(image_row), np.int64)
    rank[order] = np.arange(len(order)) - starts[image_row[order]]
    n_repeats = int(counts.max()) if len(counts) else 0
    trial_stimuli = np.flatnonzero(keep_trials & (counts == n_repeats)).astype(np.int64)
    return TrialLayout(image_row=image_row, rank=rank, counts=counts, trial_stimuli=trial_stimuli)


def stream_betas(
    staging: Staging,
    sessions: list[dict[str, SurfaceFile]],
    layout: TrialLayout,
    *,
    n_keep: int,
    zscore: bool,
    scale: float,
    report: Callable[[str, float], None],
) -> None:
    """Fill ``responses.npy`` float32 [n_images, 2 * n_keep] and ``trials.npy`` in the staging folder.

    sessions: per imported session, {"lh": file, "rh": file} with vertices x 750 trials.
    n_keep: vertices kept per hemisphere (the first ones: fsaverage5 is the first 10,242 of fsaverage).
    scale: multiplies raw betas (1/300 for NSD's int16 files), before z-scoring.
    """
    n_images = len(layout.counts)
    responses_path = staging.path("responses.npy")
    trials_path = staging.path("trials.npy")
    # Both outputs exist from the start (sparse files); each step writes only its rows and columns.
    ensure_npy(responses_path, (n_images, 2 * n_keep))
    kept_index = np.full(n_images, -1, np.int64)
    kept_index[layout.trial_stimuli] = np.arange(len(layout.trial_stimuli))
    if len(layout.trial_stimuli):
        ensure_npy(trials_path, (layout.n_repeats, len(layout.trial_stimuli), 2 * n_keep))

    steps = [(k, hemi) for k in range(len(sessions)) for hemi in ("lh", "rh")]
    for i, (k, hemi) in enumerate(steps):
        name = f"session-{k:03d}-{hemi}"
        undo_rows, undo_values = staging.path(f"undo/{name}.rows.npy"), staging.path(f"undo/{name}.values.npy")
        columns = slice(0, n_keep) if hemi == "lh" else slice(n_keep, 2 * n_keep)
        if staging.done(name):
            continue
        report(f"betas: session {k + 1}/{len(sessions)} {hemi}", i / len(steps))
        if undo_values.exists():  # an interrupted step: put back the rows it may have changed
            out = np.load(responses_path, mmap_mode="r+", allow_pickle=False)
            out[np.load(undo_rows), columns] = np.load(undo_values)
            out.flush()
            del out
        data = _prepare(sessions[k][hemi].read_frames(n_keep), zscore=zscore, scale=scale)  # [750, n_keep]
        trials = slice(k * TRIALS_PER_SESSION, (k + 1) * TRIALS_PER_SESSION)
        rows, ranks = layout.image_row[trials], layout.rank[trials]

        out = np.load(responses_path, mmap_mode="r+", allow_pickle=False)
        later = np.unique(rows[ranks > 0])
        if len(later) and not undo_values.exists():
            save_npy_atomic(undo_rows, later)
            save_npy_atomic(undo_values, np.asarray(out[later, columns]))  # renamed last: complete or absent
        _fold_in(out, rows, ranks, data, columns)
        out.flush()
        del out
        kept = kept_index[rows] >= 0
        if kept.any():
            out = np.load(trials_path, mmap_mode="r+", allow_pickle=False)
            for r in np.unique(ranks[kept]):
                pick = kept & (ranks == r)
                out[r, kept_index[rows[pick]], columns] = data[pick]
            out.flush()
            del out
        del data
        staging.mark(name)
        for path in (undo_values, undo_rows):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _fold_in(out: np.ndarray, rows: np.ndarray, ranks: np.ndarray, data: np.ndarray, columns: slice) -> None:
    """Running mean: each trial of rank r turns its image's row into row * r/(r+1) + trial/(r+1).

    Trials of one rank have distinct images (an image's ranks are distinct), so each group is one
    vectorised update; groups go in rank order because an image can repeat within a session.
    """
    for r in np.unique(ranks):
        pick = ranks == r
        if r == 0:
            out[rows[pick], columns] = data[pick]
        else:
            previous = np.asarray(out[rows[pick], columns])
            out[rows[pick], columns] = previous * np.float32(r / (r + 1)) + data[pick] * np.float32(1 / (r + 1))


def _prepare(frames: np.ndarray, *, zscore: bool, scale: float) -> np.ndarray:
    """float32 [750, vertices], in place: scaled betas, z-scored per vertex over the session's trials.

    A vertex with no variance in a session (outside the brain mask: all zeros) becomes 0, not NaN.
    """
    if scale != 1.0:
        frames *= np.float32(scale)
    if zscore:
        for start in range(0, frames.shape[1], _ZSCORE_CHUNK):
            block = frames[:, start : start + _ZSCORE_CHUNK].astype(np.float64)
            mean = block.mean(axis=0)
            sd = block.std(axis=0)
            sd[sd == 0] = 1.0
            frames[:, start : start + _ZSCORE_CHUNK] = (block - mean) / sd
    return frames
