"""render.yaml: valid against Render's schema, and wired the way the platform really works.

The facts behind these checks: the pre-deploy command and one-off jobs run without the persistent
disk, so disk work happens in dockerCommand (the gate) and the pre-deploy command only runs the
disk-free `preflight`; Render runs neither through a shell.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from tests.test_dockerfile import DOCKERFILE, cmd_of, parse_dockerfile, stage

REPO = Path(__file__).resolve().parents[1]
BLUEPRINT = REPO / "render.yaml"
SCHEMA = REPO.parent / "shared" / "render" / "render-schema.json"
ONE_OFF_SCRIPT = REPO / "scripts" / "run-one-off-job.sh"

SECRETS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "JWT_SECRET", "EXECUTOR_API_KEY", "PASSWORD_SALT"}
SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|SALT|API_KEY|ACCESS_KEY")
STORE_SETTINGS = {
    "SNAPSHOT_STORE",
    "AWS_REGION",
    "AWS_ENDPOINT_URL_S3",
    "S3_ADDRESSING_STYLE",
    "S3_CHECKSUM_MODE",
    "LOG_FORMAT",
}
SHELL_SYNTAX = re.compile(r"&&|\|\||[;|$`'\"<>*(){}\\]")


def load_blueprint() -> dict[str, Any]:
    yaml = pytest.importorskip("ruamel.yaml", reason="ruamel.yaml comes with check-jsonschema (dev tools)")
    return yaml.YAML(typ="safe").load(BLUEPRINT.read_text())


@pytest.fixture(scope="module")
def blueprint() -> dict[str, Any]:
    return load_blueprint()


@pytest.fixture(scope="module")
def service(blueprint: dict[str, Any]) -> dict[str, Any]:
    found = [s for s in blueprint["services"] if s.get("runtime") == "docker"]
    assert len(found) == 1, "expected exactly one Docker service (the relayer)"
    return found[0]


@pytest.fixture(scope="module")
def env(blueprint: dict[str, Any], service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every env var the service gets (its own and its groups'), by key."""
    groups = {g["name"]: g for g in blueprint.get("envVarGroups", [])}
    out: dict[str, dict[str, Any]] = {}
    for entry in service["envVars"]:
        items = groups[entry["fromGroup"]]["envVars"] if "fromGroup" in entry else [entry]
        for item in items:
            assert item["key"] not in out, f"{item['key']} is set twice"
            out[item["key"]] = item
    return out


# --- schema ----------------------------------------------------------------------------------------


def test_valid_against_renders_schema() -> None:
    if not SCHEMA.exists():
        pytest.skip(f"Render's schema not found at <repo>/../shared/render/{SCHEMA.name}")
    tool = Path(sys.executable).with_name("check-jsonschema")
    command = str(tool) if tool.exists() else shutil.which("check-jsonschema")
    if command is None:
        pytest.skip("check-jsonschema not installed (scripts/setup.sh --dev installs it)")
    proc = subprocess.run(
        [command, "--schemafile", str(SCHEMA), str(BLUEPRINT)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- the wiring ------------------------------------------------------------------------------------


def test_paid_single_instance_docker_web_service(service: dict[str, Any]) -> None:
    assert service["type"] == "web"
    assert service["plan"] not in {"free"}, "disks and preDeployCommand need a paid plan"
    assert service.get("numInstances", 1) == 1
    assert service.get("dockerfilePath", "./Dockerfile").removeprefix("./") == DOCKERFILE.name


def test_pre_deploy_runs_only_the_disk_free_preflight(service: dict[str, Any]) -> None:
    assert service["preDeployCommand"] == "relayer-job preflight"


def test_docker_command_gates_the_relayer(service: dict[str, Any]) -> None:
    command = service["dockerCommand"]
    assert command.startswith("relayer-job gate")
    argv = command.split()
    assert "--" in argv and argv[argv.index("--") + 1 :], "gate needs -- COMMAND"
    assert argv[argv.index("--") + 1] == "relayer"


@pytest.mark.parametrize("field", ["preDeployCommand", "dockerCommand"])
def test_commands_need_no_shell(service: dict[str, Any], field: str) -> None:
    """Render passes these as plain arguments: `&&`, pipes, quotes and `$VAR` would not work."""
    assert not SHELL_SYNTAX.search(service[field]), service[field]


def test_docker_command_matches_the_images_cmd(service: dict[str, Any]) -> None:
    """Same start path with or without the Blueprint's override."""
    assert shlex.split(service["dockerCommand"]) == cmd_of("service")


def test_disk_holds_the_database(service: dict[str, Any], env: dict[str, dict[str, Any]]) -> None:
    disk = service["disk"]
    mount = PurePosixPath(disk["mountPath"])
    assert disk["name"] == "data"
    assert disk.get("sizeGB", 10) >= 1
    assert mount.is_absolute()
    assert env["DISK_MOUNT_PATH"]["value"] == str(mount)
    database = PurePosixPath(env["DATABASE_PATH"]["value"])
    assert database.parent == mount, "DATABASE_PATH must live directly on the disk"
    assert "DATABASE_URL" not in env, "DATABASE_PATH wins; a second variable only confuses"


def test_health_check_and_port(service: dict[str, Any], env: dict[str, dict[str, Any]]) -> None:
    assert service["healthCheckPath"] == "/health"  # crates/relayer/src/api/mod.rs
    exposed = [i.args for i in stage("service").all("EXPOSE")]
    assert exposed == [str(env["PORT"]["value"])]


def test_job_deadline_fits_renders_start_timeout(env: dict[str, dict[str, Any]]) -> None:
    assert 0 < float(env["JOB_DEADLINE"]["value"]) <= 13 * 60  # start command limit: 15 minutes


# --- secrets and the env var group -----------------------------------------------------------------


def test_secrets_are_prompted_never_committed(env: dict[str, dict[str, Any]]) -> None:
    for key in SECRETS:
        assert env[key].get("sync") is False, f"{key} must be sync: false"
    for key, item in env.items():
        if SECRET_NAME.search(key):
            assert item.get("sync") is False, f"{key} looks secret: use sync: false"
            assert "value" not in item and "previewValue" not in item, f"{key} has a committed value"


def test_no_credentials_in_the_file() -> None:
    text = BLUEPRINT.read_text()
    assert not re.search(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", text), "an AWS access key id is committed"
    assert not re.search(r"\brnd_[A-Za-z0-9]{16,}", text), "a Render API key is committed"
    assert not re.search(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])", text), (
        "something shaped like an AWS secret access key is committed"
    )


def test_store_settings_come_from_a_group(blueprint: dict[str, Any], service: dict[str, Any]) -> None:
    groups = blueprint["envVarGroups"]
    referenced = [e["fromGroup"] for e in service["envVars"] if "fromGroup" in e]
    assert referenced and set(referenced) <= {g["name"] for g in groups}
    grouped = {item["key"]: item for g in groups if g["name"] in referenced for item in g["envVars"]}
    assert set(grouped) >= STORE_SETTINGS
    for key, item in grouped.items():
        assert "sync" not in item, f"{key}: groups cannot hold sync: false secrets"
        assert not SECRET_NAME.search(key), f"{key} is secret: set it on the service with sync: false"
    assert grouped["LOG_FORMAT"]["value"] == "json"
    assert grouped["S3_ADDRESSING_STYLE"]["value"] in {"path", "virtual", "auto"}
    assert grouped["S3_CHECKSUM_MODE"]["value"] in {"when_supported", "when_required"}
    assert str(grouped["SNAPSHOT_STORE"]["value"]).startswith(("s3://", "file:///"))
    assert str(grouped["AWS_ENDPOINT_URL_S3"]["value"]).startswith("https://")


# --- every relayer-job command the deploy files use exists in the CLI ------------------------------


def invocations() -> list[list[str]]:
    """Every relayer-job argv in render.yaml, the Dockerfile and the one-off script's usage text."""
    found: list[list[str]] = []
    blueprint = load_blueprint()
    for svc in blueprint["services"]:
        for key in ("preDeployCommand", "dockerCommand", "startCommand"):
            if key in svc:
                found.append(shlex.split(svc[key]))
    _, stages = parse_dockerfile()
    for s in stages:
        if s.all("CMD"):
            found.append(cmd_of(s.name))
        for inst in s.all("RUN"):
            for part in re.split(r"&&|;|\|\|", inst.args):
                words = shlex.split(part)
                while words[:1] and words[0].startswith("--mount="):  # RUN --mount=... relayer-job
                    words.pop(0)
                if words[:1] == ["relayer-job"]:
                    found.append(words)
    for line in ONE_OFF_SCRIPT.read_text().splitlines():
        match = re.match(r"^\s+(relayer-job [a-z][a-z ]*)$", line)
        if match:
            found.append(match.group(1).split())
    unique: list[list[str]] = []
    for argv in found:
        if argv and argv[0] == "relayer-job" and argv not in unique:
            unique.append(argv)
    return unique


def cli() -> str:
    path = Path(sys.executable).with_name("relayer-job")
    assert path.exists(), f"{path} missing: install the package into the venv (scripts/setup.sh)"
    return str(path)


def test_invocations_were_found() -> None:
    found = {" ".join(argv[:2]) for argv in invocations()}
    assert {"relayer-job preflight", "relayer-job gate", "relayer-job deploy"} <= found


@pytest.mark.parametrize("argv", invocations(), ids=" ".join)
def test_invocation_exists_in_cli(argv: list[str]) -> None:
    """`relayer-job SUB [SUBSUB] --help` exits 0 and lists every flag the invocation uses."""
    own = argv[1 : argv.index("--")] if "--" in argv else argv[1:]
    words = [w for w in own if not w.startswith("-")]
    flags = [w.split("=", 1)[0] for w in own if w.startswith("-")]
    if not words:  # e.g. relayer-job --version
        proc = subprocess.run([cli(), *own], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return
    proc = subprocess.run([cli(), *words, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"relayer-job {' '.join(words)} --help:\n{proc.stdout}{proc.stderr}"
    for flag in flags:
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", proc.stdout), (
            f"relayer-job {' '.join(words)} has no {flag} option"
        )


def test_the_relayer_runs_supervised_with_time_for_the_final_snapshot(
    service: dict[str, Any], env: dict[str, dict[str, Any]]
) -> None:
    """Periodic snapshots need `--supervise`; the final one must fit between SIGTERM and the kill."""
    from job import config

    argv = service["dockerCommand"].split()
    assert "--supervise" in argv[: argv.index("--")]
    keys = ("SNAPSHOT_INTERVAL", "SHUTDOWN_SNAPSHOT_BUDGET", "SNAPSHOT_RETENTION")
    settings = config.load({}, {key: str(env[key]["value"]) for key in keys})
    assert settings.snapshot_interval > 0 and settings.retention is not None
    assert 0 < settings.shutdown_snapshot_budget < service.get("maxShutdownDelaySeconds", 30)
    assert service["maxShutdownDelaySeconds"] <= 300  # Render's limit
