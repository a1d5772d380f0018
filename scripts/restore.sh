#!/usr/bin/env bash
# Restore the relayer's database from a snapshot, for an operator at a shell that sees the disk
# (a local machine or VM, or `render ssh` while the relayer is not running).
# On Render, prefer: set RESTORE_SNAPSHOT=<id> on the service and redeploy (see docs/operations.md).
#
#   scripts/restore.sh [ID|latest] [--yes]
#
# Uses the same environment as the job (DATABASE_PATH, SNAPSHOT_STORE, AWS_*). Steps: list the
# snapshots, prove the chosen one with a full download drill, confirm, restore (the current
# database is snapshotted first and kept on the disk), then show the status.
set -euo pipefail
which="latest"
assume_yes=0
for arg in "$@"; do
    case "$arg" in
        --yes) assume_yes=1 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) which="$arg" ;;
    esac
done
job() {
    if command -v relayer-job >/dev/null 2>&1; then relayer-job "$@"
    else "$(dirname "$0")/../.venv/bin/relayer-job" "$@"; fi
}
export LOG_FORMAT="${LOG_FORMAT:-console}"
echo "== snapshots (newest first)"
job snapshots list
if [ "$which" = "latest" ]; then
    # Name the snapshot: after an incident the newest one may be a copy of the broken state. As for
    # `restore latest`, a pre-restore snapshot (what an earlier restore replaced) is passed over.
    which="$(job snapshots list --json 2>/dev/null | python3 -c 'import json, sys; rows = [r for r in json.load(sys.stdin) if r["reason"] != "pre-restore"]; print(rows[0]["id"] if rows else "")')"
    [ -n "$which" ] || { echo "no restorable snapshot (other than pre-restore ones) in the store: check SNAPSHOT_STORE, or name one by id" >&2; exit 2; }
    echo "latest is $which"
fi
echo "== proving snapshot '$which' (download, SHA-256, integrity_check, foreign_key_check)"
job snapshots verify "$which" --download
if [ "$assume_yes" -ne 1 ]; then
    if [ ! -t 0 ]; then
        echo "refusing to restore without confirmation: pass --yes when not at a terminal" >&2
        exit 2
    fi
    read -r -p "Replace ${DATABASE_PATH:-the database} with snapshot '$which'? [y/N] " answer
    [ "$answer" = "y" ] || [ "$answer" = "Y" ] || { echo "nothing changed"; exit 0; }
fi
echo "== restoring"
job restore "$which" --force
echo "== status"
job status
