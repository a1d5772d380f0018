# syntax=docker/dockerfile:1
#
# relayer-job image. One Dockerfile, two targets; BuildKit builds only the stages a target needs.
#
#   service  (the LAST stage, so a plain `docker build .` -- which is what Render runs -- builds it)
#            relayer-job + the relayer binary at /usr/local/bin/relayer. Its CMD is
#            `relayer-job gate --hold-lock -- relayer`: check, snapshot and migrate the database on
#            the disk, then exec the relayer; the relayer never starts on a failed deploy.
#   job      (`docker build --target job .`) relayer-job only, CMD `relayer-job deploy`. No Rust,
#            no relayer: for CI, local runs, or a separate job image.
#
# Where the relayer binary comes from (build arguments; on Render, set them as environment variables
# of the service: Render passes a service's environment variables to `docker build` as build args):
#   RELAYER_IMAGE  default `relayer-build` = the stage below, which compiles crates/relayer of
#                  PlasticDigits/dev_pm_agent at RELAYER_REF. Or name any image that already holds a
#                  relayer built for Debian trixie (glibc, libssl3), e.g. one your CI pushed; then
#                  the Rust stage is skipped entirely.
#   RELAYER_BIN    path of the binary inside RELAYER_IMAGE (default /usr/local/bin/relayer).
#   RELAYER_REF    commit of PlasticDigits/dev_pm_agent to compile (relayer-build only).
#   APP_UID / APP_GID / APP_USER   the unprivileged account the containers run as (see
#                  docs/operations.md, "Disk ownership").
ARG RELAYER_IMAGE=relayer-build

# ---------------------------------------------------------------------------------------------------
# relayer-build: compile the relayer from source (only when RELAYER_IMAGE=relayer-build).
# Same Debian release as the runtime image, so the binary's glibc and libssl match at run time.
FROM rust:1.90-slim-trixie AS relayer-build
# Exact apt versions are not pinned on purpose: Debian stable replaces them with each security
# update and the old ones leave the mirrors, so pinned builds would start failing. This stage only
# produces one binary; the runtime stages install no apt packages at all.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends pkg-config libssl-dev \
    && rm -rf /var/lib/apt/lists/*
# The newest relayer commit known when this file was written (it has /health, PORT and the four
# migrations in migrations/). Bump it deliberately, together with migrations/.
ARG RELAYER_REF=e255ecde8323c39b0c3232cb17784e01c1a481c8
ADD --keep-git-dir=false https://github.com/PlasticDigits/dev_pm_agent.git#${RELAYER_REF} /src
WORKDIR /src
# Upstream commits no Cargo.lock, so crates resolve at build time: prefer the newest versions that
# still support this toolchain instead of failing on a crate that needs a newer Rust.
ENV CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS=fallback
RUN cargo build --release --package relayer \
    && install -D -m 0755 target/release/relayer /usr/local/bin/relayer \
    && rm -rf target

# The relayer binary, from whichever image RELAYER_IMAGE names (a stage name or an image reference).
FROM ${RELAYER_IMAGE} AS relayer

# ---------------------------------------------------------------------------------------------------
# build: a virtualenv with the exact runtime pins, then the package itself (no dependency resolution).
FROM python:3.12-slim-trixie AS build
# pip byte-compiles here, at build time: the runtime image is read-only for its user and sets
# PYTHONDONTWRITEBYTECODE, so this is what keeps the gate's start-up fast.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements.lock ./
RUN pip install --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY job/ ./job/
RUN pip install --no-deps . \
    && pip check \
    && relayer-job --version

# ---------------------------------------------------------------------------------------------------
# job: relayer-job only.
FROM python:3.12-slim-trixie AS job
ARG APP_UID=10001
ARG APP_GID=10001
RUN groupadd --system --gid "${APP_GID}" relayer \
    && useradd --system --uid "${APP_UID}" --gid relayer --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin relayer
COPY --from=build /opt/venv /opt/venv
# Read by relayer-job and by the relayer's own start-up migration loop (same variable, same files),
# so the relayer finds every file the job applied already recorded in _schema_migrations.
COPY migrations/ /app/migrations/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MIGRATIONS_DIR=/app/migrations
WORKDIR /app
# `relayer` unless APP_USER says otherwise (escape hatch for a root-owned disk; see the docs).
ARG APP_USER=relayer
USER ${APP_USER}
CMD ["relayer-job", "deploy"]

# ---------------------------------------------------------------------------------------------------
# service: relayer-job + relayer. Keep this stage last: Render builds the last stage.
FROM job AS service
ARG RELAYER_BIN=/usr/local/bin/relayer
COPY --from=relayer ${RELAYER_BIN} /usr/local/bin/relayer
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Fail the build, not the deploy, when the binary needs a library this image lacks (e.g. an image
# given in RELAYER_IMAGE that was built for another distribution).
RUN if ldd /usr/local/bin/relayer | grep 'not found'; then \
        echo "relayer binary: missing shared libraries (see above)" >&2; exit 1; \
    fi
# The relayer listens on $PORT (default 8080) on $HOST (default 0.0.0.0); render.yaml sets PORT=8080.
EXPOSE 8080
CMD ["relayer-job", "gate", "--hold-lock", "--", "relayer"]
