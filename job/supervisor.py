"""`gate --supervise -- relayer`: the relayer runs as this process's child, and this process protects
its data while it runs, as `litestream replicate -exec` does.

What the relayer sees is what `gate --hold-lock` would give it by exec: the same environment,
working directory, stdin/stdout/stderr and shared disk lock (its file descriptor is inherited), and
it is not PID 1 (tini is, in the image), so a signal it does not handle has its default action.
Only its parent differs.

- Signals: SIGTERM, SIGINT and SIGHUP (a stop), and SIGQUIT, SIGUSR1, SIGUSR2, are forwarded at
  once. This process exits with the relayer's exit code, 128+N when signal N ended it.
- The relayer exits on its own: exit at once with its code, no final snapshot (the platform
  restarts the service, and the gate snapshots first).
- A stop: forward it, wait for the relayer to exit, then a final snapshot (reason `shutdown`)
  within SHUTDOWN_SNAPSHOT_BUDGET of the stop; it then holds the relayer's last committed write.
- Periodic snapshots: job.periodic, on a background thread at low priority.
- This process killed outright (SIGKILL, the OOM killer): the relayer was started with
  PR_SET_PDEATHSIG=SIGKILL, so the kernel kills it too. It never writes on without snapshots;
  in a container tini then exits, the platform restarts the service and the gate runs again.
  SQLite's journal makes that kill as safe as a crash of the relayer.
- Nothing on the network. A failure of this process's own work (snapshots, logging) is caught:
  only the relayer's exit ends the supervision.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable
from types import FrameType

from job import catalog, retention, stop
from job.config import Config
from job.deadline import Deadline
from job.deploy import start_failed
from job.errors import Stopped
from job.lock import DiskLock
from job.log import get_logger
from job.periodic import Periodic, attempt

STOPS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
FORWARDED = (*STOPS, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
PR_SET_PDEATHSIG = 1
POLL_S = 0.2  # how often the main loop logs forwarded signals while it waits for the relayer
ABANDON_WAIT_S = 1.0  # how long a stopped periodic snapshot may take to give way to the final one


def exit_code(returncode: int) -> int:
    """A child's status as a shell reports it: its exit code, or 128+N when signal N ended it."""
    return 128 - returncode if returncode < 0 else returncode


def _dies_with_parent() -> Callable[[], None] | None:
    """A preexec function giving the child PR_SET_PDEATHSIG=SIGKILL (Linux), bound now: between
    fork and exec it may only call what is already loaded."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the supervisor died before the line above took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


class Child:
    """The relayer process. Signals go through a pidfd where there is one, so that a signal
    forwarded just as the relayer exits can never reach a process that reused its pid."""

    def __init__(self, argv: list[str], lock: DiskLock) -> None:
        preexec = _dies_with_parent()
        self.dies_with_parent = preexec is not None
        self.process = subprocess.Popen(argv, pass_fds=(lock.fd,), preexec_fn=preexec)  # noqa: PLW1509
        try:
            self.pidfd: int | None = os.pidfd_open(self.process.pid)
        except (OSError, AttributeError):
            self.pidfd = None

    def send(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, signum)
            else:
                self.process.send_signal(signum)

    def wait(self, timeout: float | None) -> int | None:
        """The exit code once it exited, else None after `timeout` seconds."""
        try:
            return exit_code(self.process.wait(timeout))
        except subprocess.TimeoutExpired:
            return None


class Supervisor:
    def __init__(self, config: Config, argv: list[str], lock: DiskLock, snapshot_id: str | None) -> None:
        self.config, self.argv, self.lock = config, argv, lock
        self.periodic = Periodic(config, snapshot_id=snapshot_id)
        self.child: Child | None = None
        self.stop_signal: int | None = None
        self.stop_at = 0.0
        self.unsent: list[int] = []  # arrived before the relayer was started
        self.received: list[int] = []  # forwarded, not yet logged (no logging in a handler)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum in STOPS and self.stop_signal is None:
            self.stop_signal, self.stop_at = signum, time.monotonic()
            self.periodic.stop()
        if self.child is None:
            self.unsent.append(signum)
            return
        self.child.send(signum)
        self.received.append(signum)

    def _log_received(self) -> None:
        with contextlib.suppress(Exception):
            while self.received:
                name = signal.Signals(self.received.pop(0)).name
                get_logger().info("supervisor.signal_forwarded", signal=name)

    def run(self) -> int:
        log = get_logger()
        for signum in FORWARDED:
            signal.signal(signum, self._on_signal)
        try:
            stop.check(f"starting {self.argv[0]}")  # a stop in the instant since job.finished
            if self.stop_signal is not None:
                raise Stopped(f"stopped by {signal.Signals(self.stop_signal).name}", self.stop_signal)
        except Stopped as exc:
            log.error("supervisor.not_started", error=exc.message, exit_code=exc.exit_code)
            return exc.exit_code
        try:
            self.child = Child(self.argv, self.lock)
        except OSError as exc:
            return start_failed(self.argv, exc)
        for early in self.unsent:
            self._on_signal(early, None)
        try:
            return self._supervise(self.child)
        except Exception as exc:  # a bug here must not end the relayer: wait for it as a plain parent
            with contextlib.suppress(Exception):
                log.error("supervisor.crashed", error=f"{type(exc).__name__}: {exc}", exc_info=True)
            return exit_code(self.child.process.wait())

    def _supervise(self, child: Child) -> int:
        log = get_logger()
        policy = self.config.retention
        log.info(
            "supervisor.started",
            child_command=self.argv,
            pid=os.getpid(),
            child_pid=child.process.pid,
            snapshot_interval_s=self.periodic.interval,
            shutdown_snapshot_budget_s=self.config.shutdown_snapshot_budget,
            retention=retention.describe(policy) if policy else None,
            child_dies_with_supervisor=child.dies_with_parent,
        )
        self.periodic.start()
        while (code := child.wait(POLL_S)) is None:
            self._log_received()
        self._log_received()
        if self.stop_signal is None:
            self.periodic.stop()
            log.warning(
                "supervisor.child_exited", exit_code=code, note="exited on its own: no final snapshot"
            )
        else:
            log.info(
                "supervisor.child_exited",
                exit_code=code,
                after=signal.Signals(self.stop_signal).name,
                seconds_after_stop=round(time.monotonic() - self.stop_at, 3),
            )
            self.periodic.stop(wait=ABANDON_WAIT_S)
            self._final_snapshot()
        log.info("supervisor.exited", exit_code=code)
        return code

    def _final_snapshot(self) -> None:
        """The shutdown snapshot, if the budget left after the relayer's exit allows."""
        budget = self.config.shutdown_snapshot_budget
        left = budget - (time.monotonic() - self.stop_at)
        if budget <= 0 or left <= 0:
            why = (
                "SHUTDOWN_SNAPSHOT_BUDGET is 0"
                if budget <= 0
                else f"the relayer took over {budget:g}s to exit"
            )
            get_logger().warning("snapshot.shutdown_skipped", reason=why)
            return
        attempt(self.config, catalog.SHUTDOWN, Deadline(left))


def run(config: Config, argv: list[str], lock: DiskLock, snapshot_id: str | None = None) -> int:
    """Start `argv` and supervise it until it exits; this process's exit code."""
    return Supervisor(config, argv, lock, snapshot_id).run()
