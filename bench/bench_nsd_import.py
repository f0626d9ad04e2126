"""NSD import at full scale: wall time and peak memory against the 8 GiB budget.

    .venv/bin/python bench/bench_nsd_import.py [--sessions 40] [--mesh fsaverage5] [--dir /tmp] [--keep]

Writes a synthetic NSD-like file set of real size and layout into a temporary folder: 40 sessions x
{lh,rh}.betas_sessionNN.mgh of 163,842 fsaverage vertices x 750 trials (float32, 491.5 MB each,
39.3 GB in all), an nsd_expdesign.mat in which 10,000 images are each shown 3 times (1,000 shared),
ncsnr and streams label files, nsd_stim_info_merged.csv with 73,000 rows, a COCO caption file
and an nsd_stimuli.hdf5 imgBrick of 73,000 x 425 x 425 x 3 whose chunks are never written (the
fill value 0 costs no disk, so images are black: PNG encoding is faster than on real photos).

The import runs in a fresh child process, so its peak resident memory (ru_maxrss of the child,
which counts memory-mapped pages while mapped) is the import's alone; it is printed as a ratio
against the 8 GiB budget of the issue, with the wall time and the size of the betas on disk.
``--sessions`` scales the file set down when disk or time is short (needs ~1 GB per session plus
the output); what was used is printed. The full set needs ~41 GB free for the default mesh and
~58 GB with ``--mesh fsaverage`` (13 GB responses + 3.9 GB single trials more).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

N_VERTICES = 163842
TRIALS = 750
N_IMAGES = 10_000
N_SHARED = 1_000
N_NSD = 73_000
BUDGET_BYTES = 8 * 2**30


def write_session_file(path: Path, rng: np.random.Generator, base: np.ndarray) -> None:
    """A .mgh of [163842, 1, 1, 750] float32, written frame by frame (on-disk order: vertex fastest)."""
    from nibabel.freesurfer.mghformat import MGHHeader

    header = MGHHeader()
    header.set_data_shape((N_VERTICES, 1, 1, TRIALS))
    header.set_data_dtype(np.float32)
    shift = rng.integers(0, N_VERTICES)
    with open(path, "wb") as f:
        header.writehdr_to(f)
        f.write(b"\0" * (header.get_data_offset() - f.tell()))
        for start in range(0, TRIALS, 50):
            # Cheap varied content: a shared random block, rolled per session and scaled per trial.
            frames = np.roll(base, shift + start, axis=1) * rng.uniform(0.5, 1.5, (50, 1)).astype(np.float32)
            f.write(frames.astype(">f4").tobytes())
        header.writeftr_to(f)


def write_small_mgh(path: Path, values: np.ndarray) -> None:
    import nibabel as nib

    nib.save(nib.MGHImage(values.reshape(-1, 1, 1), np.eye(4)), str(path))


def generate(root: Path, n_sessions: int) -> None:
    import h5py
    import scipy.io

    rng = np.random.default_rng(0)
    betas = root / "nsddata_betas/ppdata/subj01/fsaverage/betas_fithrf_GLMdenoise_RR"
    design = root / "nsddata/experiments/nsd"
    labels = root / "nsddata/freesurfer/fsaverage/label"
    stimuli = root / "nsddata_stimuli/stimuli/nsd"
    for d in (betas, design, labels, stimuli):
        d.mkdir(parents=True, exist_ok=True)

    order = rng.permutation(np.repeat(np.arange(1, N_IMAGES + 1), 3))  # 30,000 trials, 1-based columns
    subjectim = np.stack([rng.choice(N_NSD, N_IMAGES, replace=False) + 1 for _ in range(8)])
    subjectim[:, :N_SHARED] = subjectim[0, :N_SHARED]  # the shared images come first for every subject
    scipy.io.savemat(design / "nsd_expdesign.mat", {
        "masterordering": order[None, :], "subjectim": subjectim, "sharedix": np.sort(subjectim[0, :N_SHARED])[None, :],
    })
    shared = set((subjectim[0, :N_SHARED] - 1).tolist())
    rows = [",cocoId,cocoSplit,cropBox,loss,nsdId,flagged,BOLD5000,shared1000"]
    rows += [f'{i},{i + 1},train2017,"(0,0,0,0)",0,{i},False,False,{i in shared}' for i in range(N_NSD)]
    (design / "nsd_stim_info_merged.csv").write_text("\n".join(rows) + "\n")
    annotations = [{"image_id": i + 1, "id": 5 * i + k, "caption": f"a synthetic scene {i} ({k})"} for i in range(N_NSD) for k in range(5)]
    (root / "captions_train2017.json").write_text(json.dumps({"annotations": annotations}))
    with h5py.File(stimuli / "nsd_stimuli.hdf5", "w") as f:
        f.create_dataset("imgBrick", shape=(N_NSD, 425, 425, 3), dtype=np.uint8, chunks=(1, 425, 425, 3))
    for hemi in ("lh", "rh"):
        write_small_mgh(betas / f"{hemi}.ncsnr.mgh", rng.uniform(0, 1, N_VERTICES).astype(np.float32))
        write_small_mgh(labels / f"{hemi}.streams.mgz", rng.integers(0, 8, N_VERTICES).astype(np.int32))
    (labels / "streams.mgz.ctab").write_text("0 Unknown\n1 early\n2 midventral\n3 midlateral\n4 midparietal\n5 ventral\n6 lateral\n7 parietal\n")

    base = rng.standard_normal((50, N_VERTICES), dtype=np.float32)
    started = time.perf_counter()
    for s in range(1, n_sessions + 1):
        for hemi in ("lh", "rh"):
            write_session_file(betas / f"{hemi}.betas_session{s:02d}.mgh", rng, base)
        print(f"  wrote session {s}/{n_sessions} ({time.perf_counter() - started:.0f} s)", flush=True)


def run_import(source: Path, dest: Path, mesh: str) -> None:
    """The child process: import and print a JSON line with the result."""
    from backend.data.importers import import_nsd

    started = time.perf_counter()
    last = [0.0]

    def progress(stage: str, fraction: float) -> None:
        if time.perf_counter() - last[0] > 15 or fraction >= 1.0:
            last[0] = time.perf_counter()
            print(f"  [{time.perf_counter() - started:6.1f} s] {fraction:5.1%} {stage}", flush=True)

    folder = import_nsd(source, dest_root=dest, mesh=mesh, progress=progress)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print("RESULT " + json.dumps({"folder": str(folder), "seconds": seconds, "peak_rss": peak}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=40, help="sessions of 750 trials (40 = the full subject)")
    parser.add_argument("--mesh", default="fsaverage5", help="mesh kept (fsaverage5 default; fsaverage = all 327,684 vertices)")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where to write the synthetic files")
    parser.add_argument("--keep", action="store_true", help="keep the synthetic files and the dataset")
    parser.add_argument("--child", nargs=3, metavar=("SOURCE", "DEST", "MESH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_import(Path(args.child[0]), Path(args.child[1]), args.child[2])
        return

    work = Path(tempfile.mkdtemp(prefix="cortextual-nsd-bench-", dir=args.dir))
    need = args.sessions * 2 * (284 + N_VERTICES * TRIALS * 4) + 2 * 2**30
    free = shutil.disk_usage(work).free
    print(f"disk: {free / 2**30:.1f} GiB free in {work}; the betas need {need / 2**30:.1f} GiB")
    if free < need:
        shutil.rmtree(work)
        sys.exit(f"not enough disk for {args.sessions} sessions: pass a smaller --sessions")
    try:
        print(f"writing {args.sessions} sessions x 2 hemispheres of {N_VERTICES:,} vertices x {TRIALS} trials")
        t0 = time.perf_counter()
        generate(work / "nsd", args.sessions)
        gen_seconds = time.perf_counter() - t0
        betas_bytes = sum(p.stat().st_size for p in (work / "nsd").rglob("*.betas_session*.mgh"))
        os.environ.setdefault("CORTEXTUAL_CACHE", str(work / "cache"))
        print(f"generated in {gen_seconds:.0f} s; importing (mesh {args.mesh}) in a child process")
        child = subprocess.Popen(
            [sys.executable, __file__, "--child", str(work / "nsd"), str(work / "datasets"), args.mesh],
            stdout=subprocess.PIPE, text=True,
        )
        lines = []
        for line in child.stdout:  # progress as it comes
            lines.append(line.rstrip("\n"))
            if not line.startswith("RESULT "):
                print(line, end="", flush=True)
        child.wait()
        if child.returncode != 0:
            sys.exit(f"import failed with exit code {child.returncode}")
        result = json.loads(next(line for line in lines if line.startswith("RESULT "))[7:])
        children_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        folder = Path(result["folder"])
        out_bytes = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        responses = np.load(folder / "responses.npy", mmap_mode="r")
        trials = args.sessions * TRIALS
        print()
        print(f"sessions used        {args.sessions} of 40 ({trials:,} trials; {responses.shape[0]:,} images)")
        print(f"betas on disk        {betas_bytes / 2**30:.2f} GiB ({betas_bytes / 1e9:.1f} GB) in {2 * args.sessions} .mgh files")
        print(f"dataset written      {out_bytes / 2**30:.2f} GiB; responses {responses.shape} float32 on {args.mesh}")
        print(f"import wall time     {result['seconds']:.1f} s ({trials / result['seconds']:,.0f} trials/s)")
        print(f"peak RSS (import)    {result['peak_rss'] / 2**30:.2f} GiB = {result['peak_rss'] / BUDGET_BYTES:.3f} x the 8 GiB budget")
        print(f"peak RSS (children)  {children_peak / 2**30:.2f} GiB = {children_peak / BUDGET_BYTES:.3f} x the 8 GiB budget")
        if args.sessions < 40:
            scale = 40 / args.sessions
            print(f"extrapolated to 40 sessions: ~{result['seconds'] * scale:.0f} s (reading scales with sessions;"
                  " peak memory does not: one session-hemisphere at a time)")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
