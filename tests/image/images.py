"""The image test's builds (the job and service images, the fake relayers, new repository versions)
and the checks that need one image and no lifecycle."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from tests.image.harness import (
    APP_UID,
    HERE,
    IMAGE,
    MB,
    REPO,
    Lab,
    check,
    disk_env,
    docker,
    owner_of,
    run_once,
    say,
)

BASE_IMAGE = "python:3.12-slim-trixie"
BUILD_INPUTS = (
    "Dockerfile",
    ".dockerignore",
    "requirements.lock",
    "pyproject.toml",
    "README.md",
    "job",
    "image",
)
GOOD_005 = "ALTER TABLE devices ADD COLUMN label TEXT;\n"
BAD_006 = "ALTER TABLE devices ADD COLUMN platform TEXT NOT NULL;\n"  # fails once devices has rows


def context_with(lab: Lab, label: str, extra_migrations: dict[str, str]) -> Path:
    """A copy of the build inputs with more migration files (a new version of the repository)."""
    context = lab.work / f"context-{label}"
    for name in BUILD_INPUTS:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            context.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, context / name)
    shutil.copytree(REPO / "migrations", context / "migrations")
    for file_name, text in extra_migrations.items():
        (context / "migrations" / file_name).write_text(text)
    return context


def build(*args: str) -> subprocess.CompletedProcess[str]:
    return docker("build", "--network=host", "--progress=plain", *args, check_rc=False)


def fake_relayer_image(lab: Lab, tag: str, migrations: Path) -> str:
    """FROM scratch: the fake relayer at /usr/local/bin/relayer and the relayer's own migrations
    where the Dockerfile's RELAYER_MIGRATIONS default expects them."""
    context = lab.work / f"relayer-{tag}"
    shutil.copytree(migrations, context / "migrations")
    shutil.copy2(HERE / "fake_relayer.py", context / "relayer")
    (context / "relayer").chmod(0o755)
    (context / "Dockerfile").write_text(
        "FROM scratch\n"
        "COPY relayer /usr/local/bin/relayer\n"
        "COPY migrations/ /usr/local/share/relayer/migrations/\n"
    )
    image = f"{IMAGE}:{tag}"
    proc = build("-t", image, str(context))
    check(proc.returncode == 0, f"fake relayer build failed:\n{proc.stderr[-3000:]}")
    return image


def service_image(tag: str, context: Path, relayer: str) -> subprocess.CompletedProcess[str]:
    return build("--build-arg", f"RELAYER_IMAGE={relayer}", "-t", f"{IMAGE}:{tag}", str(context))


def build_images(lab: Lab) -> None:
    say("== build: job, fake relayer, service (plain `docker build`, BuildKit's built-in frontend)")
    started = time.monotonic()
    proc = build("--target", "job", "-t", f"{IMAGE}:job", str(REPO))
    check(proc.returncode == 0, f"job build failed:\n{proc.stderr[-4000:]}")
    relayer = fake_relayer_image(lab, "relayer-v1", REPO / "migrations")
    proc = service_image("service", REPO, relayer)
    check(proc.returncode == 0, f"service build failed:\n{proc.stderr[-4000:]}")
    for version, extra in (
        ("v2", {"005_device_label.sql": GOOD_005}),
        ("v3", {"005_device_label.sql": GOOD_005, "006_device_platform.sql": BAD_006}),
    ):
        context = context_with(lab, version, extra)
        relayer = fake_relayer_image(lab, f"relayer-{version}", context / "migrations")
        proc = service_image(f"service-{version}", context, relayer)
        check(proc.returncode == 0, f"service-{version} build failed:\n{proc.stderr[-4000:]}")
    say(f"   ok: built in {time.monotonic() - started:.1f} s")

    say("== build: a relayer whose own migrations differ is refused, naming the difference")
    drifted = lab.work / "drifted-migrations"
    shutil.copytree(REPO / "migrations", drifted)
    last = sorted(drifted.glob("*.sql"))[-1]
    last.write_text(last.read_text() + "ALTER TABLE commands ADD COLUMN shadow_column TEXT;\n")
    relayer = fake_relayer_image(lab, "relayer-drifted", drifted)
    proc = service_image("service-drifted", REPO, relayer)
    check(proc.returncode != 0, "a service build with differing relayer migrations succeeded")
    check(
        "shadow_column" in proc.stderr and last.name in proc.stderr,
        f"the failed build does not name the difference:\n{proc.stderr[-3000:]}",
    )
    say(f"   ok: build failed at `migrations compare`, naming {last.name} and shadow_column")

    say("== build: APP_UID/APP_GID that already exist in the base (65534, nobody/nogroup)")
    proc = build(
        "--target",
        "job",
        "--build-arg",
        "APP_UID=65534",
        "--build-arg",
        "APP_GID=65534",
        "-t",
        f"{IMAGE}:job-65534",
        str(REPO),
    )
    check(proc.returncode == 0, f"job build with APP_UID=65534 failed:\n{proc.stderr[-3000:]}")
    volume = lab.volume("uid65534")
    run = run_once(lab, f"{IMAGE}:job-65534", "relayer-job", "migrate", volume=volume, env=disk_env())
    check(run.rc == 0, f"migrate as 65534 failed:\n{run.output[-3000:]}")
    dropped = run.named("privileges.dropped")
    check(dropped and dropped[0]["uid"] == 65534, "the job did not run as 65534")
    check(owner_of(volume, "/data", "/data/relayer.db") == ["65534:65534"] * 2, "owner is not 65534")
    say("   ok: builds, runs as 65534:65534, the disk's database directory handed to it")


def unconfigured(lab: Lab) -> None:
    say("== `docker run <job image>` with no configuration")
    run = run_once(lab, f"{IMAGE}:job")
    check(run.rc == 2, f"expected exit 2, got {run.rc}:\n{run.output}")
    error = run.finished["error"]
    check(
        "DATABASE_PATH" in error and "SNAPSHOT_STORE" in error, f"error does not name what it needs: {error}"
    )
    check(len(run.output.strip().splitlines()) == 1, f"expected one line:\n{run.output}")
    say(f"   ok: exit 2, one line: {error}")


def bytecode(lab: Lab) -> None:
    say("== start-up compiles nothing: every module the CLI imports has a valid .pyc")
    run = run_once(
        lab,
        f"{IMAGE}:job",
        "relayer-job",
        "migrations",
        "compare",
        "/app/migrations",
        "/app/migrations",
        env={"PYTHONVERBOSE": "1"},
    )
    check(run.rc == 0, f"migrations compare failed:\n{run.output[-2000:]}")
    loaded = [line for line in run.output.splitlines() if line.startswith("# code object from")]
    from_source = [line for line in loaded if not line.rstrip("'").endswith(".pyc")]
    check(len(loaded) > 100 and not from_source, f"compiled at start-up: {from_source[:5]}")
    for python in ("python", "/usr/local/bin/python3"):  # the virtualenv's and the base image's
        pip = run_once(lab, f"{IMAGE}:job", python, "-m", "pip", "--version")
        check(pip.rc != 0 and "No module named pip" in pip.output, f"{python} still has pip")
    say(f"   ok: {len(loaded)} modules loaded, all from .pyc; no pip in the image")


def non_root_start(lab: Lab) -> None:
    say("== started as a non-root user (docker run --user) on a root-owned disk: a hint that helps")
    volume = lab.volume("nonroot")
    run = run_once(
        lab,
        f"{IMAGE}:job",
        "relayer-job",
        "migrate",
        volume=volume,
        env=disk_env(),
        extra=("--user", f"{APP_UID}:{APP_UID}"),
    )
    check(run.rc == 4, f"expected exit 4, got {run.rc}:\n{run.output[-2000:]}")
    error = run.finished["error"]
    check(f"writable by uid {APP_UID}" in error and "start the container as root" in error, error)
    say(f"   ok: exit 4: {error}")


def sizes(lab: Lab) -> None:
    def size(image: str) -> int:
        return int(docker("image", "inspect", "-f", "{{.Size}}", image).stdout.strip())

    base, job, service = size(BASE_IMAGE), size(f"{IMAGE}:job"), size(f"{IMAGE}:service")
    added = job - base
    lab.figures["image sizes"] = (
        f"base {base / MB:.1f} MB, job {job / MB:.1f} MB (+{added / MB:.1f} MB), "
        f"service with the fake relayer {service / MB:.1f} MB"
    )
    check(added < 40 * MB, f"the job image adds {added / MB:.1f} MB to its base (limit 40 MB)")
