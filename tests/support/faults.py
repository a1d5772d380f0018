"""A fault-injecting HTTP proxy between boto3 and the real S3 server (stdlib only).

Requests matching a rule get the rule's fault; everything else is forwarded byte for byte (headers
and body untouched, so SigV4 signatures stay valid). Faults: 503 SlowDown, 500 InternalError,
connection reset, close without a response, stall (before answering), a response body cut off
half-way, a stall half-way through the request body or the response body, a response body
sent one byte every `stall_seconds` (a link that never stops but never gets anywhere), and a
request body with one byte changed on the way (headers untouched).
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import BinaryIO

ERROR_BODIES = {
    "slowdown503": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
    "error500": (500, "Internal Server Error", "InternalError", "We encountered an internal error."),
}
ACTIONS = {
    "slowdown503",
    "error500",
    "reset",
    "close",
    "stall",
    "truncate",
    "stall_request_body",
    "stall_response_body",
    "trickle_response_body",
    "corrupt_request_body",
}


@dataclass
class Rule:
    method: str | None
    path: re.Pattern[str]
    action: str
    times: int | None = 1  # None: forever
    query: re.Pattern[str] | None = None
    stall_seconds: float = 0.0
    fired: int = 0

    def matches(self, method: str, path: str, query: str) -> bool:
        return (
            (self.times is None or self.fired < self.times)
            and (self.method is None or self.method == method)
            and self.path.search(path) is not None
            and (self.query is None or self.query.search(query) is not None)
        )


@dataclass
class Message:
    head: bytes
    first_line: str
    headers: dict[str, str]
    body: bytes = b""


def _read_head(stream: BinaryIO) -> Message | None:
    lines = []
    while True:
        line = stream.readline(65536)
        if not line:
            return None
        if line in (b"\r\n", b"\n"):
            break
        lines.append(line)
    head = b"".join(lines) + b"\r\n"
    first, *rest = head.decode("latin-1").split("\r\n")
    headers = {}
    for raw in rest:
        if ":" in raw:
            name, value = raw.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return Message(head, first, headers)


def _read_body(stream: BinaryIO, headers: dict[str, str], *, until_close: bool) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out = b""
        while True:
            size_line = stream.readline()
            out += size_line
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers end with an empty line
                    trailer = stream.readline()
                    out += trailer
                    if trailer in (b"\r\n", b"\n", b""):
                        return out
            out += stream.read(size + 2)
    if "content-length" in headers:
        return stream.read(int(headers["content-length"]))
    return stream.read() if until_close else b""


@dataclass
class FaultProxy:
    upstream_host: str
    upstream_port: int
    rules: list[Rule] = field(default_factory=list)
    requests: list[tuple[str, str, str, str]] = field(default_factory=list)  # method, path, query, outcome
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> FaultProxy:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._stopping = False
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._stopping = True
        self._server.close()

    def add_rule(
        self,
        method: str | None,
        path_regex: str,
        action: str,
        *,
        times: int | None = 1,
        query_regex: str | None = None,
        stall_seconds: float = 0.0,
    ) -> Rule:
        assert action in ACTIONS, action
        rule = Rule(
            method,
            re.compile(path_regex),
            action,
            times,
            re.compile(query_regex) if query_regex else None,
            stall_seconds,
        )
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.requests.clear()

    def count(self, method: str, path_regex: str = "", query_regex: str = "") -> int:
        with self._lock:
            return sum(
                1
                for m, p, q, _ in self.requests
                if m == method and re.search(path_regex, p) and re.search(query_regex, q)
            )

    def _accept(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _pick(self, method: str, path: str, query: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, path, query):
                    rule.fired += 1
                    return rule
            return None

    def _log(self, method: str, path: str, query: str, outcome: str) -> None:
        with self._lock:
            self.requests.append((method, path, query, outcome))

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection((self.upstream_host, self.upstream_port))
        from_client, from_upstream = client.makefile("rb"), upstream.makefile("rb")
        try:
            while self._exchange(client, from_client, upstream, from_upstream):
                pass
        except OSError:
            pass
        finally:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.close()

    def _exchange(
        self, client: socket.socket, from_client: BinaryIO, upstream: socket.socket, from_upstream: BinaryIO
    ) -> bool:
        """Relay one request and its response; False when the connection is over."""
        request = _read_head(from_client)
        if request is None:
            return False
        method, target = request.first_line.split(" ")[:2]
        path, _, query = target.partition("?")
        expects_continue = request.headers.get("expect", "").lower() == "100-continue"
        rule = self._pick(method, path, query)
        action = rule.action if rule else "forward"
        self._log(method, path, query, action)
        if action in ERROR_BODIES or action in ("reset", "close"):
            if not expects_continue:
                _read_body(from_client, request.headers, until_close=False)
            if action == "reset":
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif action != "close":
                status, reason, code, text = ERROR_BODIES[action]
                body = f"<Error><Code>{code}</Code><Message>{text}</Message></Error>".encode()
                head = (
                    f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                )
                client.sendall(head.encode() + body)
            return False
        if expects_continue:
            client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if action == "stall_request_body":
            assert rule is not None
            from_client.read(int(request.headers.get("content-length", "0")) // 2)
            time.sleep(rule.stall_seconds)
            return False
        request.body = _read_body(from_client, request.headers, until_close=False)
        if action == "corrupt_request_body" and request.body:
            middle = len(request.body) // 2
            flipped = bytes([request.body[middle] ^ 0xFF])
            request.body = request.body[:middle] + flipped + request.body[middle + 1 :]
        if action == "stall":
            assert rule is not None
            time.sleep(rule.stall_seconds)
        upstream.sendall(request.head + request.body)
        response = _read_head(from_upstream)
        while response is not None and response.first_line.split(" ")[1].startswith("1"):
            response = _read_head(from_upstream)  # interim 100 Continue: already answered ourselves
        if response is None:
            return False
        no_body = method == "HEAD" or response.first_line.split(" ")[1] in ("204", "304")
        keep_alive = response.headers.get("connection", "").lower() != "close"
        body = (
            b""
            if no_body
            else _read_body(
                from_upstream,
                response.headers,
                until_close="content-length" not in response.headers
                and "transfer-encoding" not in response.headers,
            )
        )
        if action == "truncate" and body:
            client.sendall(response.head + body[: len(body) // 2])
            return False
        if action == "trickle_response_body" and body:
            assert rule is not None
            client.sendall(response.head)
            for i in range(len(body)):
                client.sendall(body[i : i + 1])
                time.sleep(rule.stall_seconds)
            return keep_alive
        if action == "stall_response_body" and body:
            assert rule is not None
            client.sendall(response.head + body[: len(body) // 2])
            time.sleep(rule.stall_seconds)
            return False
        client.sendall(response.head + body)
        return keep_alive
