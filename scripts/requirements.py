"""Write requirements.txt, what a Hugging Face Space installs (it does not read pyproject.toml).

    python scripts/requirements.py          # rewrite requirements.txt from pyproject.toml
    python scripts/requirements.py --check  # exit 1 if requirements.txt is out of date

The runtime dependencies of pyproject.toml plus the ``spaces`` extra, with torch pinned to a
version ZeroGPU supports (local installs keep torch 2.13.0: scripts/env.sh installs it first).
tests/test_spaces.py checks the file is in sync.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: ZeroGPU supports only some torch builds (2.8 to 2.11 when this was written; see FACTS/README).
SPACES_TORCH = "torch==2.9.1"
HEADER = f"""\
# Generated from pyproject.toml by scripts/requirements.py for Hugging Face Spaces; do not edit by hand.
# torch: {SPACES_TORCH} because ZeroGPU supports only certain versions; local installs use 2.13.0 (scripts/env.sh).
"""


def render() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = []
    for requirement in [*project["dependencies"], *project["optional-dependencies"]["spaces"]]:
        name = re.split(r"[\s<>=!~\[;]", requirement, maxsplit=1)[0]
        lines.append(SPACES_TORCH if name.lower() == "torch" else requirement)
    return HEADER + "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    path = ROOT / "requirements.txt"
    text = render()
    if "--check" in argv:
        if not path.is_file() or path.read_text() != text:
            print("requirements.txt is out of date: run python scripts/requirements.py", file=sys.stderr)
            return 1
        return 0
    path.write_text(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
