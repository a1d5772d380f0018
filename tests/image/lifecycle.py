"""The image, for real: build `job` and `service`, then run Render's deploy lifecycle in containers.

Run through scripts/image-test.sh (any Docker engine that DOCKER_HOST or the default socket
reaches; containers use the host network to reach a real S3 server, SeaweedFS, on 127.0.0.1).
The relayer is tests/image/fake_relayer.py in a small image of its own, given to the service
build as RELAYER_IMAGE like any prebuilt relayer; the disk is a Docker volume, a real mount whose
root belongs to root as on a fresh Render disk. Every step checks exit codes, the one
`job.finished` line, the database and what the relayer recorded (its pid, parent, uid, signals).
At the end it prints the measured figures. Exit 0 when every check passed.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from typing import Any

import zstandard

from tests.image.harness import (
    APP_UID,
    DOCKER,
    IMAGE,
    MB,
    RUN_ID,
    CheckFailed,
    Lab,
    Run,
    check,
    disk_env,
    docker,
    lab_session,
    owner_of,
    run_once,
    say,
    sql,
    start_service,
)
from tests.image.images import build_images, bytecode, non_root_start, sizes, unconfigured
from tests.support.legacy import build_legacy_001


def check_relayer(run: Run, *, uid: int = APP_UID, supervised: bool = True) -> dict[str, Any]:
    started = run.relayer("started")
    check(len(started) == 1, f"the relayer started {len(started)} times:\n{run.output[-3000:]}")
    facts = started[0]
    check(facts["pid"] != 1 and facts["pid1"] == "tini", f"relayer is PID 1 or tini is not: {facts}")
    if supervised:  # tini -> relayer-job gate --supervise -> relayer
        parent = facts["parent"]
        check(
            facts["ppid"] != 1 and parent["ppid"] == 1 and "--supervise" in parent["command"],
            f"relayer is not supervised by the gate under tini: {facts}",
        )
    else:  # tini -> relayer (gate exec'd it)
        check(facts["ppid"] == 1, f"relayer is not a child of tini: {facts}")
    check(facts["uid"] == uid and facts["gid"] == uid, f"relayer runs as {facts['uid']}:{facts['gid']}")
    check(facts["would_run"] == [], f"the relayer's own runner would re-run {facts['would_run']}")
    check(facts["holds_lock"], "the relayer does not hold the disk lock (gate --hold-lock/--supervise)")
    return facts


def check_stopped(run: Run, seconds: float, *, supervised: bool = True) -> str | None:
    """Exit 143 after one SIGTERM reached the relayer; supervised, the final snapshot's id (None
    when the database was unchanged since the last one)."""
    check(run.rc == 143, f"expected exit 143 (SIGTERM), got {run.rc} after {seconds:.1f} s")
    signals = [r["signal"] for r in run.relayer("signal")]
    check(signals == ["SIGTERM"], f"the relayer received {signals}")
    if not supervised:
        return None
    final = [e for e in run.after("supervisor.child_exited") if e["event"].startswith("snapshot.")]
    check(
        [e["event"] for e in final][-1:] in (["snapshot.committed"], ["snapshot.unchanged"]),
        f"no shutdown snapshot after the relayer exited:\n{run.output[-3000:]}",
    )
    check(run.named("supervisor.exited")[-1]["exit_code"] == 143, "the supervisor's exit is not logged")
    return final[-1].get("snapshot_id")


def lifecycle(lab: Lab) -> None:
    disk = lab.volume("disk")
    seed = lab.work / "relayer.db"
    rows = build_legacy_001(seed, commands=500)
    holder = f"{RUN_ID}-seed"
    lab.containers.append(holder)
    docker("create", "--name", holder, "-v", f"{disk}:/data", f"{IMAGE}:job")
    docker("cp", str(seed), f"{holder}:/data/relayer.db")
    check(owner_of(disk, "/data", "/data/relayer.db") == ["0:0", "0:0"], "the seeded disk is not root's")

    say("== 1. first deploy on a disk that root owns (legacy database at 001, as the relayer left it)")
    run = run_once(lab, f"{IMAGE}:service", "relayer-job", "preflight", env=lab.store_env())
    check(run.rc == 0, f"preflight failed:\n{run.output[-3000:]}")
    old = start_service(lab, f"{IMAGE}:service", disk)
    old.wait_healthy()
    gate = old.run()
    check(gate.finished["exit_code"] == 0, f"gate failed:\n{gate.output[-3000:]}")
    facts = check_relayer(gate)
    check(facts["counts"]["commands"] == rows["commands"], "rows lost in the first deploy")
    changed = {e["path"] for e in gate.named("ownership.changed")}
    check(changed == {"/data", "/data/relayer.db"}, f"ownership changed on {changed}")
    check(owner_of(disk, "/data", "/data/relayer.db") == [f"{APP_UID}:{APP_UID}"] * 2, "not handed over")
    say(
        f"   ok: /data and relayer.db handed to {APP_UID}; migrated to 004; relayer pid {facts['pid']}, "
        f"supervised under tini, uid {facts['uid']}, holds the lock, nothing left for its own runner"
    )

    say("== 2. deploy v2 (adds 005): pre-deploy, stop old, start new")
    run = run_once(lab, f"{IMAGE}:service-v2", "relayer-job", "preflight", env=lab.store_env())
    check(run.rc == 0 and run.finished["would_apply"] == ["005_device_label.sql"], run.output[-3000:])
    down = time.monotonic()
    stopped, stop_s = old.stop()
    check_stopped(stopped, stop_s)
    new = start_service(lab, f"{IMAGE}:service-v2", disk)
    up = new.wait_healthy()
    gate = new.run()
    check([a["name"] for a in gate.finished["applied"]] == ["005_device_label.sql"], gate.output[-3000:])
    check(gate.finished["snapshot_id"] and gate.finished["post_migrate_snapshot_id"], "snapshots missing")
    check(not gate.named("ownership.changed"), "ownership changed again on a disk the user owns")
    check_relayer(gate)
    pre_005 = gate.finished["snapshot_id"]
    lab.figures["SIGTERM to exit, relayer running (docker stop)"] = f"{stop_s:.2f} s (exit 143)"
    lab.figures["downtime of a deploy applying one migration (old stops -> new /health)"] = (
        f"{up - down:.2f} s"
    )
    say(
        f"   ok: old stopped in {stop_s:.2f} s (exit 143, SIGTERM recorded); 005 applied; "
        f"new relayer healthy {up - down:.2f} s after the stop began"
    )

    say("== 3. second start of the same deploy (a restart): nothing to do")
    stopped, stop_s = new.stop()
    check_stopped(stopped, stop_s)
    again = start_service(lab, f"{IMAGE}:service-v2", disk)
    again.wait_healthy()
    gate = again.run()
    check(gate.finished["applied"] == [] and gate.finished["snapshot_unchanged"], gate.output[-3000:])
    check(not gate.named("snapshot.uploaded"), "a no-op start uploaded a snapshot")
    check_relayer(gate)
    say("   ok: nothing applied, snapshot unchanged (no upload), relayer started")

    say("== 4. deploy v3 (006 fails on data): blocked in pre-deploy, the running relayer untouched")
    before = again.db()
    run = run_once(lab, f"{IMAGE}:service-v3", "relayer-job", "preflight", env=lab.store_env())
    check(run.rc == 7 and "006_device_platform.sql" in run.finished["error"], run.output[-3000:])
    check(again.healthy() and again.run().rc is None, "the running relayer stopped")
    check(again.db() == before, "the database changed during a blocked deploy")
    say(
        f"   ok: preflight exit 7 ({run.finished['error'][:80]}...); "
        "relayer still serving, database unchanged"
    )

    say("== 5. roll back to v1 with RESTORE_SNAPSHOT (the pre-migrate snapshot of step 2)")
    stopped, stop_s = again.stop()
    check_stopped(stopped, stop_s)
    sql(disk, "INSERT INTO repos VALUES ('after-snapshot', (SELECT id FROM admin LIMIT 1), '/x', 'x', 'now')")
    rolled = start_service(lab, f"{IMAGE}:service", disk, env={"RESTORE_SNAPSHOT": pre_005})
    rolled.wait_healthy()
    gate = rolled.run()
    check(gate.finished["restored"] == pre_005 and gate.named("restore.completed"), gate.output[-3000:])
    facts = check_relayer(gate)
    check("label" not in facts["columns"]["devices"], "the restored database still has 005's column")
    check(facts["ledger"][-1] == "004_cursor_chat_id.sql", f"ledger after rollback: {facts['ledger']}")
    check(facts["counts"]["repos"] == rows["repos"], "the row written after the snapshot survived")
    check(facts["owner"] == f"{APP_UID}:{APP_UID}", f"restored database owned by {facts['owner']}")
    say(f"   ok: restored {pre_005}, back at 004 with the data of that moment; relayer started")

    say("== 6. one-off snapshot from a second container while the relayer runs")
    run = run_once(
        lab,
        f"{IMAGE}:service",
        "relayer-job",
        "snapshot",
        "--reason",
        "manual",
        "--force",
        volume=disk,
        env={**lab.store_env(), **disk_env()},
    )
    check(run.rc == 0 and run.named("snapshot.committed"), run.output[-3000:])
    check(any(e.get("mode") == "shared" for e in run.named("lock.acquired")), "not a shared lock")
    check(rolled.healthy(), "the relayer stopped during the snapshot")
    say(f"   ok: snapshot {run.finished['snapshot_id']} beside the running relayer (shared lock)")
    stopped, stop_s = rolled.stop()
    check_stopped(stopped, stop_s)

    say("== 7. SIGTERM to the gate while it works (waiting for a lock another container holds)")
    locker = f"{RUN_ID}-locker"
    lab.containers.append(locker)
    docker(
        "run",
        "-d",
        "--name",
        locker,
        "--network=none",
        "--user",
        f"{APP_UID}:{APP_UID}",
        "-v",
        f"{disk}:/data",
        "--entrypoint",
        "python",
        f"{IMAGE}:job",
        "-c",
        "import fcntl, os, time; fd = os.open('/data/.relayer-job.lock', os.O_RDWR); "
        "fcntl.flock(fd, fcntl.LOCK_EX); os.ftruncate(fd, 0); "
        'os.write(fd, b\'{"pid": 1, "command": "a manual migrate"}\'); time.sleep(600)',
    )
    waiting = start_service(lab, f"{IMAGE}:service", disk)
    deadline = time.monotonic() + 60
    while not waiting.run().named("lock.waiting"):
        check(time.monotonic() < deadline and waiting.run().rc is None, waiting.logs()[-2000:])
        time.sleep(0.05)
    stopped, stop_s = waiting.stop()
    docker("rm", "-f", locker)
    check(stopped.rc == 143, f"expected 143, got {stopped.rc}:\n{stopped.output[-2000:]}")
    finished = stopped.finished
    check(finished["error_code"] == "stopped_by_signal" and "SIGTERM" in finished["error"], finished)
    check(not stopped.relayer("started"), "the relayer started after a stop")
    lab.figures["SIGTERM to exit, gate waiting for the lock (docker stop)"] = f"{stop_s:.2f} s (exit 143)"
    say(f"   ok: exit 143 in {stop_s:.2f} s, job.finished: {finished['error'][:90]}...")


def supervised(lab: Lab) -> None:
    say("== the supervised relayer writes: a periodic snapshot, and the final one after SIGTERM")
    disk = lab.volume("supervised")
    env = {"SNAPSHOT_STORE": f"s3://{lab.bucket}/supervised", "SNAPSHOT_INTERVAL": "1s"}
    service = start_service(lab, f"{IMAGE}:service", disk, env=env)
    service.wait_healthy()
    check_relayer(service.run())
    service.write()
    deadline = time.monotonic() + 60
    while not [e for e in service.run().after("supervisor.started") if e["event"] == "snapshot.committed"]:
        check(time.monotonic() < deadline, f"no periodic snapshot:\n{service.logs()[-3000:]}")
        time.sleep(0.1)
    written = service.write()  # the last write before the stop
    stopped, stop_s = service.stop()
    final = check_stopped(stopped, stop_s)
    check(final is not None, "the final snapshot found nothing new after the last write")
    key = f"supervised/snapshots/{final}/relayer.db.zst"
    assert lab.s3 is not None
    body = lab.s3.client().get_object(Bucket=lab.bucket, Key=key)["Body"].read()
    copy = lab.work / "final.db"
    copy.write_bytes(zstandard.ZstdDecompressor().decompress(body))
    conn = sqlite3.connect(copy)
    count = conn.execute("SELECT count(*) FROM bootstrap_devices").fetchone()[0]
    conn.close()
    check(count == written, f"the final snapshot holds {count} of the relayer's {written} writes")
    lab.figures["SIGTERM to exit, supervised relayer, with the final snapshot (docker stop)"] = (
        f"{stop_s:.2f} s (exit 143)"
    )
    say(f"   ok: stopped in {stop_s:.2f} s (exit 143); final snapshot {final} holds all {written} writes")


def entrypoint_override(lab: Lab) -> None:
    say("== a platform that replaces the entrypoint (relayer-job as PID 1) still gets tini; exec mode")
    disk = lab.volume("override")
    service = start_service(
        lab,
        f"{IMAGE}:service",
        disk,
        entrypoint="relayer-job",
        command=("gate", "--hold-lock", "--", "relayer"),
        env={"SNAPSHOT_STORE": f"s3://{lab.bucket}/override"},
    )
    service.wait_healthy()
    check_relayer(service.run(), supervised=False)
    stopped, stop_s = service.stop()
    check_stopped(stopped, stop_s, supervised=False)
    say(f"   ok: relayer-job re-executed itself under tini; stop took {stop_s:.2f} s")


def gate_at_100_mb(lab: Lab) -> None:
    say("== gate with nothing to do on a 100 MB database")
    disk = lab.volume("big")
    store = {"SNAPSHOT_STORE": f"s3://{lab.bucket}/big"}
    run = run_once(lab, f"{IMAGE}:job", "relayer-job", "migrate", volume=disk, env=disk_env())
    check(run.rc == 0, run.output[-2000:])
    stamp = "2026-01-15T10:00:00Z"
    sql(
        disk,
        f"INSERT INTO admin (id, username, password_hash, totp_secret, created_at, updated_at) "
        f"VALUES ('a', 'ops', 'h', 't', '{stamp}', '{stamp}')",
    )
    sql(
        disk,
        f"INSERT INTO devices (id, admin_id, device_id, name, role, token_hash, registered_at, "
        f"last_seen_at) VALUES ('d', 'a', 'exec', 'x', 'executor', 'th', '{stamp}', '{stamp}')",
    )
    sql(
        disk,
        "INSERT INTO commands (id, device_id, input, status, output, created_at, updated_at) "
        "SELECT 'c' || x, 'd', 'input ' || x, 'done', hex(randomblob(600)), "
        f"'{stamp}', '{stamp}' FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
        "SELECT x + 1 FROM c WHERE x < 73000) SELECT x FROM c)",
    )
    size = sql(disk, "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()")[0][0]
    first = start_service(lab, f"{IMAGE}:service", disk, env=store)
    first.wait_healthy()
    check(first.run().finished["exit_code"] == 0, "first gate at 100 MB failed")
    first.stop()
    runs = []  # (container start -> relayer starts, the job's job.finished)
    for _ in range(3):
        service = start_service(lab, f"{IMAGE}:service", disk, env=store)
        service.wait_healthy()
        run = service.run()
        check(run.finished["applied"] == [] and run.finished["snapshot_unchanged"], run.output[-2000:])
        runs.append((check_relayer(run)["time"] - service.started_at(), run.finished))
        service.stop()
    to_exec, finished = sorted(runs, key=lambda r: r[0])[1]
    steps = ", ".join(f"{step} {seconds:.2f}" for step, seconds in finished["durations_s"].items())
    lab.figures[f"gate, nothing to do, {size / MB:.0f} MB database (container start -> relayer starts)"] = (
        f"{to_exec:.2f} s, median of 3 (job.finished duration_s {finished['duration_s']:.2f}: {steps})"
    )
    say(f"   ok: {size / MB:.0f} MB; to relayer start: {', '.join(f'{r[0]:.2f}' for r in runs)} s")


def main() -> int:
    started = time.monotonic()
    try:
        engine = docker("version", "--format", "{{.Server.Version}}").stdout.strip()
    except (CheckFailed, OSError) as exc:
        say(f"FAILED: no Docker engine answers `{' '.join(DOCKER)} version` (set DOCKER_HOST): {exc}")
        return 1
    say(f"Docker engine {engine}, run {RUN_ID}")
    with lab_session() as lab:
        try:
            build_images(lab)
            sizes(lab)
            unconfigured(lab)
            bytecode(lab)
            non_root_start(lab)
            lifecycle(lab)
            supervised(lab)
            entrypoint_override(lab)
            gate_at_100_mb(lab)
        except CheckFailed as exc:
            say(f"FAILED: {exc}")
            return 1
        say("\nFigures (scripts/image-test.sh):")
        for name, value in lab.figures.items():
            say(f"  {name}: {value}")
    say(f"\nimage test passed in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
