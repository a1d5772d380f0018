#!/usr/bin/env bash
# The main job on a demo database: a legacy relayer database at schema 001 with data, snapshotted
# to the local store (./demo/snapshots) and migrated to the latest schema by `relayer-job deploy`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DATABASE_PATH="${DATABASE_PATH:-$PWD/demo/data/relayer.db}"
export SNAPSHOT_STORE="${SNAPSHOT_STORE:-file:$PWD/demo/snapshots}"
export LOG_FORMAT="${LOG_FORMAT:-console}"
if [ ! -e "$DATABASE_PATH" ]; then
    mkdir -p "$(dirname "$DATABASE_PATH")"
    .venv/bin/python -m tests.support.legacy "$DATABASE_PATH"
    echo "created a legacy demo database at $DATABASE_PATH"
fi
.venv/bin/relayer-job deploy "$@"
