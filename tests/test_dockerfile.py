"""The Dockerfile: lint-clean, the right targets and commands, and a clean install that runs the CLI.

No Docker engine is needed: the Dockerfile is parsed here, and the install test repeats the build
stage's pip steps in a fresh virtualenv from a copy of exactly the files the build stage COPYs.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
import subprocess
import sys
import venv
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        """ENV of this stage (KEY=VALUE form), without inheritance."""
        out: dict[str, str] = {}
        for inst in self.all("ENV"):
            for token in inst.args.split():
                key, sep, value = token.partition("=")
                assert sep, f"line {inst.line}: use ENV KEY=VALUE, got {inst.args!r}"
                out[key] = value
        return out


def parse_dockerfile(path: Path = DOCKERFILE) -> tuple[list[Instruction], list[Stage]]:
    """Instructions before the first FROM (global ARGs), and the stages in order."""
    instructions: list[Instruction] = []
    buffer, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buffer):
            continue  # comment lines are dropped, also inside a continued instruction
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        buffer += stripped
        keyword, _, args = buffer.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
        buffer = ""
    assert not buffer, "Dockerfile ends inside a continued line"
    preamble: list[Instruction] = []
    stages: list[Stage] = []
    for inst in instructions:
        if inst.keyword == "FROM":
            words = inst.args.split()
            words = [w for w in words if not w.startswith("--platform")]
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else ""
            stages.append(Stage(base=words[0], name=name))
        elif stages:
            stages[-1].instructions.append(inst)
        else:
            preamble.append(inst)
    return preamble, stages


def stage(name: str) -> Stage:
    found = [s for s in parse_dockerfile()[1] if s.name == name]
    assert len(found) == 1, f"expected one stage named {name!r}"
    return found[0]


def exec_form(inst: Instruction) -> list[str]:
    value = json.loads(inst.args)  # shell form (not JSON) fails here
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


def cmd_of(name: str) -> list[str]:
    """The CMD in effect for a stage (following FROM <stage> inheritance)."""
    stages = {s.name: s for s in parse_dockerfile()[1]}
    current: Stage | None = stages[name]
    while current is not None:
        cmds = current.all("CMD")
        if cmds:
            return exec_form(cmds[-1])
        current = stages.get(current.base)
    raise AssertionError(f"stage {name} has no CMD")


def effective_env(name: str) -> dict[str, str]:
    stages = {s.name: s for s in parse_dockerfile()[1]}
    chain: list[Stage] = []
    current: Stage | None = stages[name]
    while current is not None:
        chain.append(current)
        current = stages.get(current.base)
    env: dict[str, str] = {}
    for s in reversed(chain):
        env.update(s.env())
    return env


def copies(s: Stage) -> list[tuple[list[str], list[str], str]]:
    """(flags, sources, destination) of each COPY."""
    out = []
    for inst in s.all("COPY"):
        words = inst.args.split()
        flags = [w for w in words if w.startswith("--")]
        paths = [w for w in words if not w.startswith("--")]
        out.append((flags, paths[:-1], paths[-1]))
    return out


# --- lint ------------------------------------------------------------------------------------------


def hadolint() -> str:
    found = Path(sys.executable).with_name("hadolint")
    if found.exists():
        return str(found)
    which = shutil.which("hadolint")
    if which is None:
        pytest.skip("hadolint not installed (scripts/setup.sh --dev installs it)")
    return which


def test_hadolint_clean() -> None:
    proc = subprocess.run([hadolint(), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_hadolint_ignore_is_justified() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            above = lines[number - 1].strip() if number else ""
            assert above.startswith("#") and "hadolint" not in above, (
                f"line {number + 1}: explain the ignore in a comment right above it"
            )


# --- targets and commands ---------------------------------------------------------------------------


def test_service_is_the_last_stage_and_builds_on_job() -> None:
    _, stages = parse_dockerfile()
    names = [s.name for s in stages]
    assert names[-1] == "service", "Render builds the last stage: it must be the service image"
    assert stage("service").base == "job"
    assert {"build", "job", "relayer", "relayer-build"} <= set(names)


def test_no_syntax_directive_unless_pinned() -> None:
    """A floating `# syntax=` line makes every build fetch a frontend image from a registry."""
    first = DOCKERFILE.read_text().splitlines()[0].replace(" ", "").lower()
    if first.startswith("#syntax="):
        assert "@sha256:" in first, "pin the frontend by digest, or drop the line"


def test_tini_is_pid_1_in_both_images() -> None:
    """Render gives no --init: PID 1 must be an init that forwards signals and reaps children."""
    job = stage("job")
    assert [exec_form(i) for i in job.all("ENTRYPOINT")] == [["tini", "--"]]
    assert any("apt-get install" in r.args and " tini" in r.args for r in job.all("RUN"))
    assert not stage("service").all("ENTRYPOINT"), "service inherits the job stage's entrypoint"


def test_job_cmd_is_exec_form_deploy() -> None:
    assert cmd_of("job") == ["relayer-job", "deploy"]


def test_service_cmd_gates_the_relayer() -> None:
    cmd = cmd_of("service")
    assert cmd[:2] == ["relayer-job", "gate"]
    assert cmd[cmd.index("--") + 1 :] == ["relayer"]


def test_python_stages_use_pinned_slim_base() -> None:
    _, stages = parse_dockerfile()
    for s in stages:
        if s.base.startswith("python:"):
            tag = s.base.split(":", 1)[1]
            assert tag.startswith("3.12") and "-slim-" in tag, s.base
        assert not s.base.endswith(":latest"), s.base


def test_runtime_environment() -> None:
    for name in ("job", "service"):
        env = effective_env(name)
        assert env["PYTHONUNBUFFERED"] == "1"
        assert env["PYTHONDONTWRITEBYTECODE"] == "1"
        assert env["PATH"].split(":")[0] == "/opt/venv/bin"


def test_migrations_dir_is_where_migrations_are_copied() -> None:
    job = stage("job")
    env = effective_env("job")
    targets = [dest.rstrip("/") for _, sources, dest in copies(job) if sources == ["migrations/"]]
    assert targets == [env["MIGRATIONS_DIR"]]
    assert env["MIGRATIONS_DIR"].startswith("/")


def test_final_stages_copy_only_venv_bytecode_migrations_and_relayer() -> None:
    for flags, sources, dest in copies(stage("job")):
        if "--from=build" in flags:
            assert (sources, dest) in ((["/opt/venv"], "/opt/venv"), (["/stdlib-pyc/"], "/"))
        else:
            assert sources == ["migrations/"], f"job stage copies {sources} from the build context"
    service = copies(stage("service"))
    assert len(service) == 1
    flags, _, dest = service[0]
    assert "--from=relayer" in flags
    assert dest == "/usr/local/bin/relayer"


def test_starts_as_root_and_runs_as_a_non_root_job_user() -> None:
    """Root only to hand a root-owned disk's database directory to the service user: relayer-job
    drops to JOB_USER before it opens the database or starts the relayer."""
    job = stage("job")
    assert not job.all("USER") and not stage("service").all("USER")
    env = effective_env("job")
    assert env["JOB_USER"] == "${APP_UID}:${APP_GID}"
    args = dict(a.args.split("=", 1) for a in job.all("ARG") if "=" in a.args)
    assert int(args["APP_UID"]) > 0 and int(args["APP_GID"]) > 0
    assert env["JOB_NO_DEFAULTS"] == "1", "an unconfigured container must say what it needs"


def test_user_creation_reuses_ids_the_base_already_has() -> None:
    creating = [r.args for r in stage("job").all("RUN") if "useradd" in r.args]
    assert len(creating) == 1
    assert 'getent group "${APP_GID}"' in creating[0] and 'getent passwd "${APP_UID}"' in creating[0]


def test_no_pip_in_the_runtime_image() -> None:
    build = stage("build")
    assert any("venv --without-pip" in r.args for r in build.all("RUN"))
    assert any("pip uninstall" in r.args for r in stage("job").all("RUN"))


def test_service_build_compares_the_relayers_migrations() -> None:
    preamble, _ = parse_dockerfile()
    args = dict(a.args.split("=", 1) for a in preamble if a.keyword == "ARG" and "=" in a.args)
    assert args["RELAYER_MIGRATIONS"] == "/usr/local/share/relayer/migrations"
    built = [r.args for r in stage("relayer-build").all("RUN") if "cargo build" in r.args]
    assert '"${RELAYER_MIGRATIONS}/"' in built[0] and "migrations/*.sql" in built[0]
    runs = [r.args for r in stage("service").all("RUN") if "migrations compare" in r.args]
    assert len(runs) == 1
    mount = runs[0].split()[0]
    assert mount.startswith("--mount=type=bind,from=relayer,source=${RELAYER_MIGRATIONS},target=")
    target = mount.rsplit("target=", 1)[1]
    assert f"migrations compare {target} {effective_env('service')['MIGRATIONS_DIR']}" in runs[0]


def test_relayer_image_defaults_to_the_source_build() -> None:
    preamble, _ = parse_dockerfile()
    args = dict(a.args.split("=", 1) for a in preamble if a.keyword == "ARG" and "=" in a.args)
    assert args["RELAYER_IMAGE"] == "relayer-build"
    assert stage("relayer").base == "${RELAYER_IMAGE}"


def test_dockerignore_keeps_what_the_build_copies() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert not [p for p in patterns if p.startswith("!")], "keep the .dockerignore simple: no negations"

    def ignored(path: str) -> bool:
        """Docker's rules, simplified: a pattern excludes a path or any of its parent directories;
        `**/X` matches X at any depth."""
        parts = path.rstrip("/").split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        for pattern in patterns:
            if pattern.startswith("**/"):
                if any(fnmatch.fnmatch(part, pattern[3:]) for part in parts):
                    return True
            elif any(fnmatch.fnmatch(prefix, pattern.rstrip("/")) for prefix in prefixes):
                return True
        return False

    for name in (".venv", ".git", "tests", ".pytest_cache", "job/__pycache__", ".env", "data"):
        assert ignored(name), f"{name} should be kept out of the build context"
    _, stages = parse_dockerfile()
    for s in stages:
        for flags, sources, _ in copies(s):
            if not any(f.startswith("--from") for f in flags):
                for source in sources:
                    assert (REPO / source).exists(), f"COPY {source}: missing from the repo"
                    assert not ignored(source), f"COPY {source} is excluded by .dockerignore"


# --- a clean install, as the build stage does it ---------------------------------------------------


def test_clean_venv_install_runs_cli(tmp_path: Path) -> None:
    """~20-60 s (downloads the pinned wheels): the build stage's pip steps, in a fresh venv."""
    build = stage("build")
    context = tmp_path / "context"
    context.mkdir()
    for flags, sources, _ in copies(build):
        assert not flags
        for source in sources:
            src = REPO / source
            if src.is_dir():
                shutil.copytree(src, context / source, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                (context / source).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, context / source)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps"]

    def run(*cmd: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(cmd, cwd=context, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout}\n{proc.stderr}"
        return proc

    run(*pip, "-r", "requirements.lock")
    run(*pip, ".")
    run(str(python), "-m", "pip", "check")
    helped = run(str(env_dir / "bin" / "relayer-job"), "--help")
    for command in ("deploy", "gate", "preflight", "migrate", "status", "snapshot", "snapshots"):
        assert command in helped.stdout
