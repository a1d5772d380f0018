#!/usr/bin/env bash
# The main job on a demo database: a legacy relayer database at schema 001 with data, snapshotted
# to the local store (./demo/snapshots) and migrated to the latest schema by `relayer-job deploy`.
# Then prints how to go on by hand against the same database and store (demo/env.sh).
#   scripts/demo.sh [DEPLOY OPTIONS...]        (DEMO_DIR: where it all goes, default ./demo)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
demo_dir="$(mkdir -p "${DEMO_DIR:-demo}" && cd "${DEMO_DIR:-demo}" && pwd)"
export DATABASE_PATH="${DATABASE_PATH:-$demo_dir/data/relayer.db}"
export SNAPSHOT_STORE="${SNAPSHOT_STORE:-file:$demo_dir/snapshots}"
export LOG_FORMAT="${LOG_FORMAT:-console}"
if [ ! -e "$DATABASE_PATH" ]; then
    mkdir -p "$(dirname "$DATABASE_PATH")"
    .venv/bin/python -m tests.support.legacy "$DATABASE_PATH"
    echo "created a legacy demo database at $DATABASE_PATH"
fi
env_file="$demo_dir/env.sh"
{
    echo "# relayer-job against the demo database: source this file, then run relayer-job ..."
    printf 'export DATABASE_PATH=%q\n' "$DATABASE_PATH"
    printf 'export SNAPSHOT_STORE=%q\n' "$SNAPSHOT_STORE"
    printf 'export LOG_FORMAT=%q\n' "$LOG_FORMAT"
    printf 'export PATH=%q:"$PATH"\n' "$PWD/.venv/bin"
} >"$env_file"
status=0
.venv/bin/relayer-job deploy "$@" || status=$?
cat <<EOF

Next: the same database and store by hand. In your shell:
  source $(printf '%q' "$env_file")
then for example:
  relayer-job status                    # schema version, applied migrations, last snapshot
  relayer-job snapshots list            # the snapshots deploy took, newest first
  relayer-job snapshots verify latest --download
  relayer-job snapshot --reason manual  # take one now
  relayer-job deploy                    # again: nothing left to apply, nothing uploaded
  relayer-job migrate --dry-run         # what a migration would do, without doing it
  relayer-job restore ID --force        # put a snapshot back (ID from 'snapshots list')
Start over: rm -rf $(printf '%q' "$demo_dir")
EOF
exit "$status"
