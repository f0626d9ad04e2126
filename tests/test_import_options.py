"""The importers' documented options are exactly the options they take.

The option list in ``backend/data/importers/__init__.py`` is what ``launch.py import --help`` points
users to; an option documented there but not accepted (the Allen ``min_repeats`` that never
existed) fails with "unknown option", and an accepted one not documented there is invisible.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import backend.data.importers as importers
from backend.data.importers import IMPORTERS, importer_options, parse_options
from backend.data.schema import DatasetError

README = Path(__file__).resolve().parents[1] / "README.md"


def documented_options() -> dict[str, dict[str, str]]:
    """kind -> {option: documented default text}, parsed from the package docstring's option list.

    Each importer's entry starts at column 0 with its kind and ``(:func:...)``; its options follow
    on indented lines as ``name=default`` items.
    """
    doc = importers.__doc__
    section = doc[doc.index("Options (keyword arguments"):]
    out: dict[str, dict[str, str]] = {}
    kind = None
    for line in section.splitlines()[1:]:
        head = re.match(r"^(\w+)\s+\(:func:`([\w.]+)`\)", line)
        if head:
            kind = head.group(1)
            out[kind] = {}
            continue
        if kind and line.startswith(" "):
            # name=value items; values may hold commas inside quotes/brackets, names never do.
            for name, value in re.findall(r"(?:^|,|\s)([a-z_]+)=((?:\"[^\"]*\"|\([^)]*\)|\[[^\]]*\]|[^,\s])+)", line):
                out[kind][name] = value
    return out


def test_every_importer_has_a_documented_option_list():
    docs = documented_options()
    assert set(docs) == set(IMPORTERS)
    for kind in IMPORTERS:
        doc_line = re.search(rf"^{kind}\s+\(:func:`([\w.]+)`\)", importers.__doc__, re.M).group(1)
        assert doc_line.rsplit(".", 1)[1] == IMPORTERS[kind].__name__


@pytest.mark.parametrize("kind", sorted(IMPORTERS))
def test_documented_options_are_the_accepted_options(kind):
    documented = documented_options()[kind]
    accepted = importer_options(kind)
    assert sorted(set(documented) - set(accepted)) == [], f"documented but not accepted by import {kind}"
    assert sorted(set(accepted) - set(documented)) == [], f"accepted by import {kind} but not documented"


@pytest.mark.parametrize("kind", sorted(IMPORTERS))
def test_documented_defaults_are_the_real_defaults(kind):
    for name, text in documented_options()[kind].items():
        default = importer_options(kind)[name]
        if text.startswith(('"', "(")) or text in ("None", "True", "False") or re.fullmatch(r"-?[\d.]+", text):
            assert eval(text) == default, f"{kind} {name}: documented {text}, default {default!r}"  # noqa: S307 - our own docstring


@pytest.mark.parametrize("kind", sorted(IMPORTERS))
def test_every_documented_option_parses_as_a_cli_flag(kind):
    samples = {bool: "true", int: "2", float: "0.5", str: "x"}
    for name, default in importer_options(kind).items():
        flag = "--" + name.replace("_", "-")
        value = samples.get(type(default), "a,b") if default is not None else "1"
        if name in ("window_s",):
            value = "0,0.5"
        assert name in parse_options(kind, [flag, value])


def test_min_repeats_is_not_an_allen_option():
    with pytest.raises(DatasetError, match="unknown option --min-repeats"):
        parse_options("allen", ["--min-repeats", "10"])
    assert "min_repeats" not in importers.__doc__


def test_flags_named_in_the_readme_exist():
    text = README.read_text(encoding="utf-8")
    flags = set()
    for line in text.splitlines():
        if "launch.py import" in line:
            flags |= set(re.findall(r"--([a-z][a-z-]*)", line))
    section = text[text.index("## Real datasets"): text.index("## Bring your own data")]
    flags |= set(re.findall(r"`--([a-z][a-z-]*)", section))
    flags -= {"root", "id", "overwrite", "dataset"}  # launch.py's own
    known = {name.replace("_", "-") for kind in IMPORTERS for name in importer_options(kind)}
    assert flags and flags <= known, sorted(flags - known)
