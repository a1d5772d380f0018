#!/usr/bin/env bash
# Build the image (`job` and `service`) and run Render's deploy lifecycle with real containers, a
# real mount (a Docker volume as the disk) and a real S3 server on 127.0.0.1; print the figures.
# Needs a Docker engine with BuildKit (Docker >= 23) that `docker` reaches (DOCKER_HOST or the
# default socket) and that can run containers with --network=host. Set DOCKER to use another
# client command. Images stay tagged relayer-job-test:* for the next run's build cache.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev >/dev/null
exec .venv/bin/python -m tests.image.lifecycle "$@"
