#
# relayer-job image. One Dockerfile, two targets; BuildKit builds only the stages a target needs.
# No `# syntax=` line: BuildKit's built-in Dockerfile frontend builds it, so nothing is fetched
# from a registry but the base images.
#
#   service  (the LAST stage, so a plain `docker build .` -- which is what Render runs -- builds it)
#            relayer-job + the relayer binary at /usr/local/bin/relayer. Its CMD is
#            `relayer-job gate --supervise -- relayer`: check, snapshot and migrate the database on
#            the disk, then run the relayer as a child with periodic and shutdown snapshots; the
#            relayer never starts on a failed deploy.
#   job      (`docker build --target job .`) relayer-job only, CMD `relayer-job deploy`. No Rust,
#            no relayer: for CI, local runs, or a separate job image.
#
# Both run under tini as PID 1 (signals reach the job and the relayer; stops take milliseconds,
# not the platform's kill timeout). They start as root only so that relayer-job can hand the
# database directory on a root-owned disk to the service user; it then drops privileges before it
# opens the database or starts the relayer (JOB_USER, docs/operations.md "Disk ownership").
#
# Where the relayer binary comes from (build arguments; on Render, set them as environment variables
# of the service: Render passes a service's environment variables to `docker build` as build args):
#   RELAYER_IMAGE       default `relayer-build` = the stage below, which compiles crates/relayer of
#                       PlasticDigits/dev_pm_agent at RELAYER_REF. Or name any image that already
#                       holds a relayer built for Debian trixie (glibc, libssl3) and its migrations,
#                       e.g. one your CI pushed; then the Rust stage is skipped entirely.
#   RELAYER_BIN         path of the binary inside RELAYER_IMAGE (default /usr/local/bin/relayer).
#   RELAYER_MIGRATIONS  path of the relayer's own migrations/ inside RELAYER_IMAGE (default
#                       /usr/local/share/relayer/migrations). The service build fails when they
#                       differ from this repository's migrations/ (`relayer-job migrations compare`).
#   RELAYER_REF         commit of PlasticDigits/dev_pm_agent to compile (relayer-build only).
#   APP_UID / APP_GID   the service user's ids (default 10001; ids that already exist in the base,
#                       e.g. 65534, are used as they are).
ARG RELAYER_IMAGE=relayer-build
ARG RELAYER_MIGRATIONS=/usr/local/share/relayer/migrations

# ---------------------------------------------------------------------------------------------------
# relayer-build: compile the relayer from source (only when RELAYER_IMAGE=relayer-build).
# Same Debian release as the runtime image, so the binary's glibc and libssl match at run time.
FROM rust:1.90-slim-trixie AS relayer-build
# Exact apt versions are not pinned on purpose: Debian stable replaces them with each security
# update and the old ones leave the mirrors, so pinned builds would start failing. This stage only
# produces one binary and copies the relayer's migrations.
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
ARG RELAYER_MIGRATIONS
RUN cargo build --release --package relayer \
    && install -D -m 0755 target/release/relayer /usr/local/bin/relayer \
    && install -d "${RELAYER_MIGRATIONS}" \
    && install -m 0644 migrations/*.sql "${RELAYER_MIGRATIONS}/" \
    && rm -rf target

# The relayer binary and its migrations, from whichever image RELAYER_IMAGE names (a stage name or
# an image reference).
FROM ${RELAYER_IMAGE} AS relayer

# ---------------------------------------------------------------------------------------------------
# build: a virtualenv with the exact runtime pins and the package (no pip in it), slimmed, and
# byte-compiled together with the standard library: the base image ships no .pyc files and the
# runtime sets PYTHONDONTWRITEBYTECODE, so without this every start compiles what it imports.
FROM python:3.12-slim-trixie AS build
# binutils only for `strip` (see below); it stays in this stage.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends binutils \
    && rm -rf /var/lib/apt/lists/*
# No .pyc files from running pip here: only the ones compiled on purpose below reach the image.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_NO_COMPILE=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv --without-pip /opt/venv
WORKDIR /src
COPY requirements.lock ./
RUN pip --python /opt/venv/bin/python install --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY job/ ./job/
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# - zstandard's CFFI backend (12 MB) is never used: CPython loads its C backend;
# - the shared libraries ship with debug symbols (the zstd backend is 11 MB, 1 MB stripped);
# - unchecked-hash .pyc files stay valid whatever the files' timestamps (the image never changes);
# - /stdlib-pyc: the standard library's .pyc files for what relayer-job imports, to be copied over
#   the same base image in the runtime stages.
COPY image/precompile.py /usr/local/share/precompile.py
RUN pip --python /opt/venv/bin/python install --no-deps . \
    && pip --python /opt/venv/bin/python check \
    && site="$(/opt/venv/bin/python -c 'print(__import__("sysconfig").get_path("purelib"))')" \
    && rm -f "${site}"/zstandard/_cffi.*.so "${site}"/zstandard/backend_cffi.py \
    && find /opt/venv -name '*.so' -exec strip --strip-unneeded {} + \
    && /opt/venv/bin/python -m compileall -q -f -j 0 --invalidation-mode unchecked-hash /opt/venv \
    && /opt/venv/bin/python /usr/local/share/precompile.py /stdlib-pyc \
    && /opt/venv/bin/relayer-job --version

# ---------------------------------------------------------------------------------------------------
# job: relayer-job only.
FROM python:3.12-slim-trixie AS job
ARG APP_UID=10001
ARG APP_GID=10001
# tini is PID 1: it forwards SIGTERM/SIGINT to the job (which stops at a safe point, or, once the
# relayer runs under `gate --supervise`, forwards them to it; the relayer then exits at once, as it
# does when `gate` execs it), and reaps orphans. Debian's package, not
# pinned for the reason given in relayer-build. The base image's pip is removed: nothing installs
# at run time. The service user gets APP_UID/APP_GID, reusing ids the base already has.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
    && PYTHONDONTWRITEBYTECODE=1 python -m pip uninstall --yes --quiet pip \
    && if ! getent group "${APP_GID}" >/dev/null; then groupadd --system --gid "${APP_GID}" relayer; fi \
    && if ! getent passwd "${APP_UID}" >/dev/null; then \
        useradd --system --uid "${APP_UID}" --gid "${APP_GID}" --no-create-home \
            --home-dir /nonexistent --shell /usr/sbin/nologin relayer; \
    fi
COPY --from=build /stdlib-pyc/ /
COPY --from=build /opt/venv /opt/venv
# Read by relayer-job and by the relayer's own start-up migration loop (same variable, same files),
# so the relayer finds every file the job applied already recorded in _schema_migrations.
COPY migrations/ /app/migrations/
# JOB_USER: started as root, relayer-job prepares the database directory and then runs as this
# user; so does everything `gate` starts. JOB_NO_DEFAULTS: no ./data or ./snapshots fallbacks
# inside a container; an unconfigured run names what it needs (exit 2).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MIGRATIONS_DIR=/app/migrations \
    JOB_USER=${APP_UID}:${APP_GID} \
    JOB_NO_DEFAULTS=1
WORKDIR /app
ENTRYPOINT ["tini", "--"]
CMD ["relayer-job", "deploy"]

# ---------------------------------------------------------------------------------------------------
# service: relayer-job + relayer. Keep this stage last: Render builds the last stage.
FROM job AS service
ARG RELAYER_BIN=/usr/local/bin/relayer
ARG RELAYER_MIGRATIONS
COPY --from=relayer ${RELAYER_BIN} /usr/local/bin/relayer
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Fail the build, not the deploy, when the binary needs a library this image lacks (e.g. an image
# given in RELAYER_IMAGE that was built for another distribution), or when the relayer's own
# migrations differ from the ones relayer-job applies: the relayer would run the differing files
# itself at start-up (or crash-loop on them). The comparison names every difference.
RUN if ldd /usr/local/bin/relayer | grep 'not found'; then \
        echo "relayer binary: missing shared libraries (see above)" >&2; exit 1; \
    fi
RUN --mount=type=bind,from=relayer,source=${RELAYER_MIGRATIONS},target=/tmp/relayer-migrations \
    relayer-job migrations compare /tmp/relayer-migrations /app/migrations
# The relayer listens on $PORT (default 8080) on $HOST (default 0.0.0.0); render.yaml sets PORT=8080.
EXPOSE 8080
CMD ["relayer-job", "gate", "--supervise", "--", "relayer"]
