#!/usr/bin/env bash
# selflearn on a fresh machine: the first call builds .venv from setup.cfg.
#   ./run.sh demo            the main job on the embedded default stack
#   ./run.sh test [args]     the test suite (real broker, PostgreSQL, Redis)
#   ./run.sh <command>       any `selflearn` command (up, down, status, bench …)
set -euo pipefail
cd "$(dirname "$0")"
VENV="${SELFLEARN_VENV:-.venv}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/selflearn" ] || [ setup.cfg -nt "$VENV/.installed" ] \
   || [ requirements-pinned.txt -nt "$VENV/.installed" ]; then
  echo "setting up $VENV (first run only) ..." >&2
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q --no-deps --require-hashes -r requirements-pinned.txt
  "$VENV/bin/pip" install -q -e ".[test,dev]"
  touch "$VENV/.installed"
fi

cmd="${1:-demo}"
[ $# -gt 0 ] && shift
case "$cmd" in
  test)
    # Lint and types first: a regression in either fails the test command (and CI).
    "$VENV/bin/ruff" check .
    "$VENV/bin/mypy" schemas agents streams projections ops
    bash ops/scripts/browser.sh || echo "no headless Chromium: browser tests will be skipped" >&2
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  *)
    exec "$VENV/bin/selflearn" "$cmd" "$@"
    ;;
esac
