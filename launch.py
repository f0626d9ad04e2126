"""Cortextual's one entry point: the explorer (backend process + viewer) and its command line.

    python launch.py                         # backend + viewer on 127.0.0.1:7860, demo world
    python launch.py --dataset ID --port N --host H --backend-url URL
    python launch.py datasets                # what is available, with sizes
    python launch.py models list|pull ID|add|remove ID   # which weights are present; fetch them
    python launch.py import nsd|algonauts|allen|folder --root PATH [--id ID] [--FORMAT-OPTION VALUE ...]
    python launch.py analyze --dataset ID --captioner ID --embedder ID [--corpus FILE] --out report.json
    python launch.py batch --dataset ID [ID ...] --captioner ID [ID ...] [--ray ADDRESS]   # dataset-wide work on Ray
    python launch.py --spaces                # one process, as on Hugging Face Spaces (automatic where SPACE_ID is set)
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import sys
import threading
import time
from pathlib import Path

#: Whether the user asked for offline mode themselves; `models pull` goes online otherwise.
_USER_SET_OFFLINE = "HF_HUB_OFFLINE" in os.environ
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# numba (UMAP) caches its compiled kernels in the app's cache folder, across processes and
# restarts: set before anything imports numba (the backend inherits it), so the first manifold
# after install compiles once, not in every new backend process.
os.environ.setdefault(
    "NUMBA_CACHE_DIR",
    str(Path(os.environ.get("CORTEXTUAL_CACHE") or Path.home() / ".cache" / "cortextual") / "numba"),
)

DEFAULT_PORT = 7860
HEALTH_TIMEOUT_S = 90.0
DEMO_TIMEOUT_S = 900.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="launch.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="demo-human", help="dataset to open first (id or folder; default demo-human)")
    parser.add_argument("--host", help="viewer address (default 127.0.0.1, loopback only; on a Space $GRADIO_SERVER_NAME or 0.0.0.0)")
    parser.add_argument("--port", type=int, help=f"viewer port (default {DEFAULT_PORT}; in Spaces mode $GRADIO_SERVER_PORT or {DEFAULT_PORT})")
    parser.add_argument(
        "--spaces", action="store_true",
        help="run as on Hugging Face Spaces (the default where SPACE_ID is set): backend in this process, ZeroGPU entry points",
    )
    parser.add_argument("--backend-url", help="use a backend that is already running (e.g. on a GPU machine)")
    parser.add_argument("--backend-port", type=int, help="port for the backend this launcher starts (default: port + 1, or a free one if taken)")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("datasets", help="list the datasets, with sizes")
    models = commands.add_parser("models", help="the model registry: list, pull, add, remove").add_subparsers(dest="action", required=True)
    listing = models.add_parser("list", help="every model and whether its weights are here")
    listing.add_argument("--kind", choices=("captioner", "text_embedder", "image_embedder", "text_to_image", "language_model"))
    models.add_parser("pull", help="download a model's weights (needs internet)").add_argument("id")
    add = models.add_parser("add", help="register a model by Hugging Face id or local folder")
    add.add_argument("--architecture", required=True, help="blip, blip2, git, vision-encoder-decoder, florence2, sentence-transformers, clip-text, clip-vision, stable-diffusion, stable-diffusion-xl, causal-lm")
    where = add.add_mutually_exclusive_group(required=True)
    where.add_argument("--hf-id", help="Hugging Face repository id")
    where.add_argument("--path", help="local folder saved with save_pretrained")
    add.add_argument("--id", help="id to use (default: the hub id or local/<folder>)")
    add.add_argument("--label", help="name shown in the viewer")
    models.add_parser("remove", help="forget a model added with `models add`").add_argument("id")
    importing = commands.add_parser(
        "import",
        help="convert NSD / Algonauts / Allen / a folder into a dataset (resumable)",
        description="Format options (--name value) are listed in backend/data/importers/__init__.py.",
    )
    importing.add_argument("kind", choices=("nsd", "algonauts", "allen", "folder"))
    importing.add_argument("--root", required=True, help="where the downloaded files are")
    importing.add_argument("--id", help="dataset id (default: derived from the source)")
    importing.add_argument("--overwrite", action="store_true", help="replace an existing dataset with that id")
    analyzing = commands.add_parser("analyze", help="run the whole pipeline headless and write every score as JSON")
    analyzing.add_argument("--dataset", dest="analyze_dataset", default="demo-human", help="dataset id or folder")
    analyzing.add_argument("--captioner", default="reference", help='captioner id, or "reference" for the dataset\'s own captions')
    analyzing.add_argument("--embedder", default="sentence-transformers/all-MiniLM-L6-v2", help="text embedder id")
    analyzing.add_argument("--text-to-image", default="sim-scene-renderer", help="model for reconstructions from decoded captions")
    analyzing.add_argument("--corpus", help="text file, one caption per line, to decode into (default: the training captions)")
    analyzing.add_argument("--language-model", default="HuggingFaceTB/SmolLM2-135M-Instruct",
                           help='frozen LM that generates captions from the brain (prefix decoder); "none" to skip')
    analyzing.add_argument("--brain-steps", type=int, default=None,
                           help="training steps through the LM of the prefix decoder and the Q-Former (default: theirs, 40 and 120)")
    analyzing.add_argument("--brain-align-steps", type=int, default=None,
                           help="alignment steps of the soft-token prefix decoder (no LM pass; default 600)")
    analyzing.add_argument("--visual-encoders", default="none",
                           help="visual encoders to train and compare, comma-separated among language, category, untrained "
                                "(e.g. language,category,untrained; default none: minutes of training on a CPU)")
    analyzing.add_argument("--visual-objective", default="cosine", choices=("cosine", "infonce", "cosine+infonce"),
                           help="the language-trained network's loss (default cosine)")
    analyzing.add_argument("--visual-epochs", type=int, help="training epochs of each visual encoder (default: the stage's, 80)")
    analyzing.add_argument("--visual-backbone", default="cnn", help='"cnn" or a CLIP-vision image embedder id (frozen, trained head)')
    analyzing.add_argument("--out", required=True, help="where to write the JSON report")
    batch = commands.add_parser(
        "batch", help="caption, embed, reconstruct and fit whole datasets on a Ray cluster (optional extra .[ray])",
        description="Results go to the same cache as the explorer's; an interrupted run resumes, a finished one computes nothing.",
    )
    batch.add_argument("--dataset", dest="batch_datasets", nargs="+", default=["demo-human"], help="dataset ids (default demo-human)")
    batch.add_argument("--captioner", dest="captioners", nargs="*", default=[], help="captioner ids (each captions every stimulus)")
    batch.add_argument("--embedder", dest="embedders", nargs="+", default=["sentence-transformers/all-MiniLM-L6-v2"], help="text embedder ids")
    batch.add_argument("--text-to-image", help="model for reconstructions of the test stimuli (default: the scene renderer on the "
                       "demo world, else SD-Turbo); 'none' to skip")
    batch.add_argument("--ray", dest="address", help="Ray cluster address (e.g. auto, ray://head:10001); default: start a local one")
    batch.add_argument("--workers", type=int, default=2, help="actors per model (default 2)")
    batch.add_argument("--gpus-per-worker", type=float, help="GPUs per actor (default 1 where the cluster has GPUs)")
    batch.add_argument("--batch-size", type=int, default=16, help="items per actor call (default 16)")
    batch.add_argument("--shard-size", type=int, default=32, help="items per shard written to the cache (default 32)")
    batch.add_argument("--steps", default="caption,embed,generate,encode", help="which steps, comma-separated (default all four)")
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "import":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.spaces:
        os.environ["CORTEXTUAL_SPACES"] = "1"

    if args.command == "datasets":
        return list_datasets()
    if args.command == "models":
        return models_command(args)
    if args.command == "import":
        return import_command(args, extra)
    if args.command == "analyze":
        return analyze_command(args)
    if args.command == "batch":
        return batch_command(args)
    from backend.models.zerogpu import spaces_mode

    if spaces_mode():
        return explore_in_one_process(args)
    args.host = args.host or "127.0.0.1"
    args.port = args.port or DEFAULT_PORT
    return explore(args)


def list_datasets() -> int:
    from backend.data.catalog import list_datasets as catalog

    rows = [("id", "space", "stimuli", "units", "size", "status")]
    for info in catalog():
        size = f"{info.size_bytes / 2**20:.0f} MiB" if info.size_bytes is not None else "-"
        status = "ready" if info.ready else "generated on first use (about a minute)"
        rows.append((info.id, info.space, _or_dash(info.n_stimuli), _or_dash(info.n_units), size, status))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    return 0


def models_command(args: argparse.Namespace) -> int:
    if args.action == "pull" and not _USER_SET_OFFLINE:
        os.environ.pop("HF_HUB_OFFLINE", None)  # before huggingface_hub reads it at import
    from backend.models import registry, weights

    try:
        if args.action == "list":
            rows = [("id", "kind", "weights", "memory", "licence")]
            for spec in registry.list_models(args.kind):
                state = "simulated" if spec.simulated else ("present" if weights.weights_present(spec) else "not downloaded")
                rows.append((spec.id, spec.kind, state, f"{spec.memory_gb:.1f} GB", spec.licence))
            _print_table(rows)
            missing = [r[0] for r in rows[1:] if r[2] == "not downloaded"]
            if missing:
                print(f"\n{len(missing)} models are not downloaded; `python launch.py models pull ID` fetches one (needs internet).")
        elif args.action == "pull":
            spec = registry.get_model(args.id)
            folder = weights.pull(spec, progress=lambda done, total: print(f"\r[pull] {spec.id}: file {done} of {total}", end="", flush=True))
            print(f"\n[pull] {spec.id} is present" + (f" at {folder}" if folder else ""))
        elif args.action == "add":
            spec = registry.add_user_model(architecture=args.architecture, hf_id=args.hf_id, source=args.path, id=args.id, label=args.label)
            present = "present" if weights.weights_present(spec) else f"not downloaded: {weights.pull_command(spec)}"
            print(f"added {spec.id} ({spec.kind}, {spec.architecture}); weights {present}")
        elif args.action == "remove":
            registry.remove_user_model(args.id)
            print(f"removed {args.id}")
    except (KeyError, ValueError, weights.ModelUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def import_command(args: argparse.Namespace, flags: list[str]) -> int:
    from backend.data.importers import IMPORTERS, parse_options
    from backend.data.schema import DatasetError

    started = time.perf_counter()
    last = [""]

    def progress(stage: str, fraction: float) -> None:
        line = f"[import] {100 * fraction:5.1f}%  {stage}"
        if line != last[0]:
            print(line, flush=True)
            last[0] = line

    try:
        options = parse_options(args.kind, flags)
        folder = IMPORTERS[args.kind](args.root, dataset_id=args.id, progress=progress, overwrite=args.overwrite, **options)
    except (DatasetError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"[import] done in {time.perf_counter() - started:.1f} s: {folder}")
    print(f"[import] open it with: python launch.py --dataset {folder.name}")
    return 0


def visual_networks(text: str) -> tuple[str, ...]:
    """The --visual-encoders option as network names ("none" or empty: none); ValueError if unknown."""
    from backend.stages.visual_encoders import NETWORKS

    names = tuple(n.strip() for n in text.split(",") if n.strip() and n.strip() != "none")
    unknown = [n for n in names if n not in NETWORKS]
    if unknown:
        raise ValueError(f"--visual-encoders: unknown network {unknown[0]!r}; choose among {', '.join(NETWORKS)}")
    return names


def visual_settings(args: argparse.Namespace):
    from backend.stages.visual_encoders import Settings

    return Settings(source=args.captioner, embedder=args.embedder, backbone=args.visual_backbone,
                    objective=args.visual_objective,
                    **({"epochs": args.visual_epochs} if args.visual_epochs is not None else {}))


def analyze_command(args: argparse.Namespace) -> int:
    import json

    from backend.cache import Store, write_bytes_atomic
    from backend.data.catalog import open_dataset
    from backend.models.pool import ModelPool
    from backend.stages.decoding import read_corpus
    from backend.stages.report import analyze

    started = time.perf_counter()

    def progress(stage: str, fraction: float) -> None:
        print(f"[analyze] {100 * fraction:5.1f}%  {stage} ({time.perf_counter() - started:.1f} s)", flush=True)

    try:
        corpus = read_corpus(args.corpus) if args.corpus else None
        ds = open_dataset(dataset_argument(args.analyze_dataset))
        report = analyze(
            ds, args.captioner, args.embedder, store=Store(), pool=ModelPool(), text_to_image=args.text_to_image, corpus=corpus,
            language_model=None if args.language_model == "none" else args.language_model, brain_steps=args.brain_steps,
            brain_align_steps=args.brain_align_steps,
            visual_encoders=visual_networks(args.visual_encoders), visual_settings=visual_settings(args), progress=progress,
        )
    except (KeyError, LookupError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    write_bytes_atomic(Path(args.out), json.dumps(report, indent=2).encode())
    print(f"[analyze] wrote {args.out} in {time.perf_counter() - started:.1f} s")
    return 0


def batch_command(args: argparse.Namespace) -> int:
    from backend.cache import Store
    from backend.cluster.batch import BatchSettings, connect, default_text_to_image, run_batch
    from backend.data.catalog import open_dataset
    from backend.data.schema import DatasetError

    try:
        datasets = [open_dataset(dataset_argument(d)) for d in args.batch_datasets]
        text_to_image = args.text_to_image or default_text_to_image(datasets[0])
        settings = BatchSettings(
            workers=args.workers, gpus_per_worker=args.gpus_per_worker, batch_size=args.batch_size, shard_size=args.shard_size
        )
        connect(args.address)
        summary = run_batch(
            datasets, args.captioners, args.embedders, None if text_to_image == "none" else text_to_image,
            store=Store(), settings=settings, steps=tuple(s.strip() for s in args.steps.split(",") if s.strip()),
            say=lambda line: print(line, flush=True),
        )
    except (KeyError, LookupError, ValueError, RuntimeError, DatasetError) as err:
        print(f"error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        return 1
    steps = ", ".join(f"{step}: {summary.computed[step]} computed, {summary.cached[step]} cached" for step in summary.computed)
    print(f"[batch] done in {summary.seconds:.1f} s ({steps})")
    return 0


def dataset_argument(value: str) -> str:
    """The catalog id for ``--dataset``: an id as it is, or a dataset folder linked into the
    catalog (the API takes ids only, so a folder is registered here, by the launcher)."""
    from backend.data.catalog import link_folder, list_datasets
    from backend.data.folder import MANIFEST
    from backend.data.ids import is_dataset_id
    from backend.data.schema import DatasetError

    folder = Path(value).expanduser()
    if is_dataset_id(value) and (value in {info.id for info in list_datasets()} or not (folder / MANIFEST).is_file()):
        return value
    if not folder.is_dir():
        raise SystemExit(f"error: --dataset {value}: neither a dataset id (`python launch.py datasets`) nor a folder")
    try:
        dataset_id = link_folder(folder)
    except DatasetError as err:
        raise SystemExit(f"error: {err}") from None
    print(f"[launch] {folder} is in the catalog as {dataset_id!r}", flush=True)
    return dataset_id


def _print_table(rows: list[tuple]) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def _or_dash(value) -> str:
    return "-" if value is None else f"{value:,}"


class BackendSupervisor:
    """Starts the backend in a spawned process and restarts it if it dies."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.url = f"http://{host}:{port}"
        self.restarts = 0
        self._process: multiprocessing.Process | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        from backend.service.server import serve

        context = multiprocessing.get_context("spawn")  # never fork: CUDA cannot survive a fork
        self._process = context.Process(target=serve, kwargs={"host": self.host, "port": self.port}, name="cortextual-backend", daemon=True)
        self._process.start()

    def watch(self) -> None:
        """Restart the backend whenever it exits, until :meth:`stop`."""

        def loop() -> None:
            while not self._stopping.wait(1.0):
                if self._process is not None and not self._process.is_alive():
                    code = self._process.exitcode
                    self.restarts += 1
                    print(f"[launch] backend exited (code {code}); restarting (restart {self.restarts})", flush=True)
                    self.start()

        threading.Thread(target=loop, name="backend-supervisor", daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()
        if self._process is not None and self._process.is_alive():
            self._process.terminate()
            self._process.join(5)


def wait_for_backend(client, timeout: float = HEALTH_TIMEOUT_S, need_demo: bool = True, echo: bool = True) -> dict:
    """Poll /api/health until the backend answers (and the demo world is ready, if asked).

    ``echo`` prints the demo world's progress (a local backend prints its own).
    """
    from backend.service.client import BackendUnavailable

    deadline = time.monotonic() + timeout
    last_stage = None
    while True:
        try:
            health = client.health()
        except BackendUnavailable:
            if time.monotonic() > deadline:
                raise SystemExit(f"error: the backend at {client.base_url} did not answer within {timeout:.0f} s") from None
            time.sleep(0.3)
            continue
        demo = health["demo"]
        if not need_demo or demo["state"] in ("ready", "idle"):
            return health
        if demo["state"] == "failed":
            raise SystemExit(f"error: generating the demo world failed: {demo['error']}")
        if echo and demo["stage"] != last_stage:
            print(f"[launch] demo world: {demo['stage']} ({100 * demo['fraction']:.0f}%)", flush=True)
            last_stage = demo["stage"]
        deadline = max(deadline, time.monotonic() + DEMO_TIMEOUT_S)
        time.sleep(0.5)


def explore(args: argparse.Namespace) -> int:
    from backend.service.client import BackendClient

    started = time.perf_counter()
    supervisor = None
    if args.backend_url:
        if not _is_id(args.dataset):
            raise SystemExit("error: --dataset DIR needs the backend this launcher starts; with --backend-url give a dataset id")
        url = args.backend_url
    else:
        args.dataset = dataset_argument(args.dataset)
        port = _backend_port(args.backend_port, args.port + 1)
        supervisor = BackendSupervisor("127.0.0.1", port)
        supervisor.start()
        url = supervisor.url
    client = BackendClient(url)
    try:
        wait_for_backend(client, need_demo=args.dataset.startswith("demo-"), echo=supervisor is None)
        print(f"[launch] backend ready at {url} ({time.perf_counter() - started:.1f} s)", flush=True)
        if supervisor is not None:
            supervisor.watch()

        from viewer.app import run_viewer

        print(f"[launch] explorer at http://{args.host}:{args.port}", flush=True)
        run_viewer(client, dataset_id=args.dataset, host=args.host, port=args.port)
    finally:
        if supervisor is not None:
            supervisor.stop()
    return 0


def explore_in_one_process(args: argparse.Namespace) -> int:
    """Spaces mode: the backend's API in this process behind the same client (ZeroGPU gives a GPU
    only to the main process), the viewer on $GRADIO_SERVER_NAME:$GRADIO_SERVER_PORT (0.0.0.0:7860
    where SPACE_ID is set, loopback otherwise), the demo world generated before the page is served."""
    from backend.models.zerogpu import GpuPool, import_spaces

    spaces = import_spaces()  # before anything touches CUDA (ZeroGPU patches torch on import)
    import logging

    from backend.service.app import create_app
    from backend.service.client import BackendClient

    logging.basicConfig(level=logging.WARNING, format="[backend] %(message)s")
    logging.getLogger("cortextual").setLevel(logging.INFO)  # the backend's own news (demo world, jobs), not every request
    started = time.perf_counter()
    if args.backend_url:
        raise SystemExit("error: --backend-url does not apply in Spaces mode (the backend runs in this process)")
    # Every interface only on a real Space (its proxy must reach the app); `--spaces` elsewhere stays on loopback.
    host = args.host or os.environ.get("GRADIO_SERVER_NAME") or ("0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1")
    port = args.port or int(os.environ.get("GRADIO_SERVER_PORT") or DEFAULT_PORT)
    dataset = dataset_argument(args.dataset)
    client = BackendClient.in_process(create_app(prepare_demo=True, wrap_pool=GpuPool))
    try:
        wait_for_backend(client, need_demo=dataset.startswith("demo-"), echo=False)  # the backend logs its progress here
        if spaces is None:
            gpu = "no spaces package: GPU calls run directly"
        else:
            gpu = "GPU entry points wrapped with spaces.GPU" + ("" if os.environ.get("SPACES_ZERO_GPU") else " (not ZeroGPU here: a no-op)")
        print(f"[launch] Spaces mode: backend in this process, {gpu} ({time.perf_counter() - started:.1f} s)", flush=True)

        from viewer.app import run_viewer

        print(f"[launch] explorer at http://{host}:{port}", flush=True)
        run_viewer(client, dataset_id=dataset, host=host, port=port)
    finally:
        client.close()
    return 0


def _is_id(value: str) -> bool:
    from backend.data.ids import is_dataset_id

    return is_dataset_id(value)


def _backend_port(requested: int | None, default: int) -> int:
    """The backend's port: ``requested`` or an error if it is taken; ``default`` if free, else
    another free port, said out loud (the supervisor restarts the backend on the same port)."""
    if requested is not None:
        if not _port_free(requested):
            raise SystemExit(f"error: --backend-port {requested} is taken; choose another or leave it out")
        return requested
    if _port_free(default):
        return default
    port = _port_free(0)
    print(f"[launch] port {default} is taken; the backend listens on {port} instead", flush=True)
    return port


def _port_free(port: int) -> int:
    """The port bound (``port``, or a free one for 0) if a loopback socket can bind it, else 0."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
            return s.getsockname()[1]
        except OSError:
            return 0


if __name__ == "__main__":
    sys.exit(main())
