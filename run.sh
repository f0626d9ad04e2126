#!/usr/bin/env bash
# The two quick-start commands (see README.md). Both create or reuse .venv/ first.
#   ./run.sh launch [launch.py options]   set up, then start the explorer on http://127.0.0.1:7860
#   ./run.sh test [pytest options]        set up, then run the whole test suite
set -euo pipefail
cd "$(dirname "$0")"
command=${1:-}
[ $# -gt 0 ] && shift
case "$command" in
  launch)
    bash scripts/env.sh
    exec .venv/bin/python launch.py "$@"
    ;;
  test)
    bash scripts/env.sh
    bash scripts/system_deps.sh
    exec .venv/bin/python -m pytest "$@"
    ;;
  *)
    echo "usage: ./run.sh launch [--dataset ID --port N ...] | ./run.sh test [pytest options]" >&2
    exit 2
    ;;
esac
