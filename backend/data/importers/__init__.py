"""Importers: real-data formats -> the one dataset folder format (:mod:`backend.data.folder`).

Every importer has the same signature::

    import_x(root: Path, *, dataset_id: str | None = None, dest_root: Path | None = None,
             progress: Callable[[str, float], None] | None = None, overwrite: bool = False,
             **options) -> Path

and returns the finished dataset folder (``dest_root`` or ``datasets_dir()`` / id), which the
catalog then lists. Imports are resumable: work is staged in a hidden ``.<id>.partial/`` folder,
finished steps are marked, and rerunning the same command continues where it stopped; the folder
is renamed into place only when complete. Every problem with the input is a
:class:`~backend.data.schema.DatasetError` with a one-line message naming the file relative to
the root given (:func:`~backend.data.importers.common.relative_errors`). What was left
out (missing sessions, images without captions) is reported through ``progress`` and recorded in
the manifest's ``import`` entry (``missing``, ``notes``).

Options (keyword arguments; the CLI's ``--name value`` flags map onto them). This list is the
reference ``launch.py import`` points to; tests/test_import_options.py checks that it names
exactly the options each importer takes, with their defaults:

nsd        (:func:`backend.data.importers.nsd.import_nsd`)
    subject=1, mesh="fsaverage5" (vertices kept per hemisphere: fsaverage3..fsaverage),
    sessions=None (list of 1-based sessions; default all), zscore=True, beta_scale=None (auto:
    1/300 for int16 betas), trials="test" | "all" | "none", roi_set="streams",
    captions=None (COCO json files; default captions_*.json below root), missing_captions="error" |
    "skip", allow_partial=True, betas_dir=None
algonauts  (:func:`backend.data.importers.algonauts.import_algonauts`)
    subject=None (which subjNN below root when there are several), mesh="fsaverage5" | "fsaverage"
    ..., roi_set="streams", test_split="auto" | "shared1000" | "random", test_fraction=0.1,
    seed=0, captions=None, stim_info=None, missing_captions="error"
allen      (:func:`backend.data.importers.allen.import_allen`)
    files=None (NWB files; default every *.nwb below root), window_s=(0.0, 0.5) (response window
    after onset, s, by the frame timestamps), baseline_s=0.5 (0: no baseline), test_fraction=0.15,
    seed=0 (scenes held out as the test split), skip_without_scenes=False
folder     (:func:`backend.data.importers.folder_import.import_folder`)
    (no options) validates the folder with load_folder and writes a normalised copy
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path

from backend.data.schema import DatasetError

from backend.data.importers.algonauts import import_algonauts
from backend.data.importers.allen import import_allen
from backend.data.importers.folder_import import import_folder
from backend.data.importers.nsd import import_nsd

Importer = Callable[..., Path]

IMPORTERS: dict[str, Importer] = {
    "nsd": import_nsd,
    "algonauts": import_algonauts,
    "allen": import_allen,
    "folder": import_folder,
}

#: Keyword arguments every importer takes that are not format options.
COMMON = ("root", "dataset_id", "dest_root", "progress", "overwrite")


def importer_options(kind: str) -> dict[str, object]:
    """option name -> default value for importer ``kind`` (for help texts)."""
    return {
        name: p.default
        for name, p in inspect.signature(_importer(kind)).parameters.items()
        if name not in COMMON and p.kind == p.KEYWORD_ONLY
    }


def parse_options(kind: str, flags: list[str]) -> dict[str, object]:
    """Turn CLI flags (``--mesh fsaverage --sessions 1-5,9 --zscore false``) into importer options.

    Values are converted by each option's annotation: bool (true/false/yes/no/1/0), int, float,
    paths, lists (comma-separated; integer lists also take ranges such as 1-40) and float pairs
    (``0,0.5``). An unknown option or a bad value raises DatasetError in one line.
    """
    importer = _importer(kind)
    hints = typing.get_type_hints(importer)
    known = importer_options(kind)
    out: dict[str, object] = {}
    i = 0
    while i < len(flags):
        flag = flags[i]
        if not flag.startswith("--"):
            raise DatasetError(f"import {kind}: expected --option, got {flag!r}")
        name, _, value = flag[2:].partition("=")
        name = name.replace("-", "_")
        if name not in known:
            raise DatasetError(f"import {kind}: unknown option --{name.replace('_', '-')}; options: "
                               + ", ".join("--" + k.replace("_", "-") for k in known))
        if not value:
            if i + 1 >= len(flags):
                raise DatasetError(f"import {kind}: --{name.replace('_', '-')} needs a value")
            i += 1
            value = flags[i]
        out[name] = _convert(kind, name, value, hints.get(name, str))
        i += 1
    return out


def _convert(kind: str, name: str, text: str, hint) -> object:
    base = hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None: convert as X
        base = next(a for a in typing.get_args(hint) if a is not type(None))
    origin, inner = typing.get_origin(base), typing.get_args(base)
    try:
        if base is bool:
            lowered = text.lower()
            if lowered not in ("true", "false", "yes", "no", "1", "0"):
                raise ValueError(text)
            return lowered in ("true", "yes", "1")
        if base in (int, float, str):
            return base(text)
        if base is Path:
            return Path(text).expanduser()
        if origin in (list, tuple):
            parts = [p for p in text.split(",") if p]
            item = inner[0] if inner else str
            if item is int:
                values: list = []
                for part in parts:
                    lo, dash, hi = part.partition("-")
                    values += list(range(int(lo), int(hi) + 1)) if dash else [int(lo)]
                return values
            converted = [Path(p).expanduser() if item is Path else item(p) for p in parts]
            return tuple(converted) if origin is tuple else converted
    except ValueError:
        raise DatasetError(f"import {kind}: --{name.replace('_', '-')} {text!r} is not a valid {getattr(base, '__name__', base)}") from None
    return text


def _importer(kind: str) -> Importer:
    if kind not in IMPORTERS:
        raise DatasetError(f"unknown import kind {kind!r}; use one of {', '.join(IMPORTERS)}")
    return IMPORTERS[kind]


__all__ = ["IMPORTERS", "Importer", "import_nsd", "import_algonauts", "import_allen", "import_folder",
           "importer_options", "parse_options"]
