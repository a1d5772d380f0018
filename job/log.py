"""Structured logging: JSON lines for Render, console rendering on a TTY, secrets always redacted.

Every event carries event, level, timestamp (ISO-8601 UTC), run_id and command. The redaction
processor runs after exception formatting, so secrets cannot leak through a traceback either.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sys
import uuid
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any, TextIO
from urllib.parse import quote, unquote

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "***"

# Keys whose values are secrets whatever they hold.
_SECRET_KEY = re.compile(
    r"(secret|password|passwd|token|api_?key|authorization|credential|private_?key|signature)",
    re.IGNORECASE,
)
# Secrets inside a piece of text; the group named `secret` is what gets replaced.
_TEXT_SECRETS = (
    # user:password@ in any URL-like string (also with an empty user name).
    re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]*:(?P<secret>[^/\s@]+)@", re.I),
    # Secret-looking query parameters: ?token=, &X-Amz-Signature=, &sig=, ?password=, ?api_key= ...
    re.compile(
        r"[?&][^=&#\s]*?(?:pass|pwd|secret|token|sig|credential|key|auth|session|salt)[^=&#\s]*="
        r"(?P<secret>[^&#\s'\"<>]+)",
        re.I,
    ),
    # name=value pairs in free text whose name says secret (a botocore message, a command line).
    re.compile(
        r"(?<![\w.-])[\w.-]*(?:secret|password|passwd|passphrase|token|signature|credential|"
        r"api_?key|private_?key|salt)[\w.-]*=(?P<secret>[^\s&#'\",;<>]+)",
        re.I,
    ),
    re.compile(
        r"(?:aws_secret_access_key|aws_session_token|secret_key|x-amz-security-token)\s*[=:]\s*"
        r"(?P<secret>\S+)",
        re.I,
    ),
    re.compile(r"\b(?P<secret>rnd_[A-Za-z0-9]{16,})\b"),  # Render API keys
    re.compile(r"Bearer\s+(?P<secret>\S+)", re.I),
)
# Environment variables whose values must never be printed, wherever they turn up.
_SECRET_ENV = re.compile(
    r"SECRET|TOKEN|PASSWORD|PASSWD|PASSPHRASE|API_?KEY|CREDENTIAL|PRIVATE|SIGNATURE|SALT|_KEY$|"
    r"(^|_)AUTH(_|$)",
    re.IGNORECASE,
)
_MIN_SECRET_LEN = 6  # a named secret shorter than this would redact ordinary words
# Embedded secrets are caught in place by their pattern whatever their length; shorter ones than
# this are not also searched for elsewhere (in a path derived from DATABASE_URL, say).
_MIN_EMBEDDED_LEN = 4
_remembered: set[str] = set()


def embedded_secrets(text: str) -> set[str]:
    """The secrets a piece of text carries (URL passwords, secret query parameters...)."""
    return {
        m["secret"]
        for pattern in _TEXT_SECRETS
        for m in pattern.finditer(text)
        if len(m["secret"]) >= _MIN_EMBEDDED_LEN and m["secret"] != REDACTED
    }


def remember_secrets(texts: Iterable[str]) -> None:
    """Treat the secrets embedded in these texts (e.g. argv) like secret environment values."""
    for text in texts:
        _remembered.update(embedded_secrets(text))


def _spellings(value: str) -> set[str]:
    """The forms a secret takes once quoted, escaped or percent-encoded in a message."""
    return {
        value,
        unquote(value),
        quote(value, safe=""),
        json.dumps(value)[1:-1],
        repr(value)[1:-1],
    }


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Every secret known to this process: the values of secret-named environment variables,
    the secrets embedded in any variable (a password in AWS_ENDPOINT_URL, DATABASE_URL or
    SNAPSHOT_STORE) and those remembered from the command line. Longest first."""
    env = os.environ if environ is None else environ
    values = {v for k, v in env.items() if _SECRET_ENV.search(k) and len(v) >= _MIN_SECRET_LEN}
    for value in env.values():
        values |= embedded_secrets(value)
    values |= _remembered
    spelled = {s for v in values for s in _spellings(v) if len(s) >= _MIN_EMBEDDED_LEN}
    return sorted(spelled, key=len, reverse=True)


def redact_text(text: str, secrets: list[str] | None = None) -> str:
    """Remove every secret we can recognise from a piece of text."""
    for value in secret_values() if secrets is None else secrets:
        text = text.replace(value, REDACTED)
    for pattern in _TEXT_SECRETS:
        text = pattern.sub(_redact_match, text)
    return text


def _redact_match(match: re.Match[str]) -> str:
    start, end = match.span("secret")
    whole = match.group(0)
    offset = match.start()
    return whole[: start - offset] + REDACTED + whole[end - offset :]


def _redact(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, Mapping):
        return {
            k: REDACTED if isinstance(k, str) and _SECRET_KEY.search(k) else _redact(v, secrets)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set):
        return [_redact(v, secrets) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return redact_text(str(value), secrets)


def redact_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """structlog processor: no secret reaches the output, whichever key or value carries it."""
    secrets = secret_values()
    out: MutableMapping[str, Any] = {}
    for key, value in event_dict.items():
        out[key] = REDACTED if _SECRET_KEY.search(key) else _redact(value, secrets)
    return dict(out)


_FIRST_KEYS = ("timestamp", "level", "event", "error", "error_code")
_LAST_KEYS = ("run_id", "command")


def order_keys(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """What happened and what went wrong first (the on-call reader scans the left edge), the
    run's identity last; the facts in between keep the order the code gave them."""
    head = {k: event_dict.pop(k) for k in _FIRST_KEYS if k in event_dict}
    tail = {k: event_dict.pop(k) for k in _LAST_KEYS if k in event_dict}
    return {**head, **event_dict, **tail}


def _level_number(name: str) -> int:
    return int(logging.getLevelNamesMapping()[name.upper()])


def configure(
    *,
    fmt: str,
    level: str,
    command: str,
    stream: TextIO | None = None,
) -> str:
    """Set up structlog for this process and return its run_id."""
    renderer: Processor
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=(stream or sys.stdout).isatty(), sort_keys=False)
    else:
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_secrets,
            order_keys,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_level_number(level)),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=False,
    )
    run_id = uuid.uuid4().hex[:12]
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(run_id=run_id, command=command)
    return run_id


def get_logger() -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger()
    return logger


class RedactingStream(io.TextIOBase):
    """A text stream that redacts whole lines before they reach the real one, so that reports
    printed on stdout, usage messages and warnings pass the same redaction as the logs."""

    def __init__(self, raw: TextIO) -> None:
        super().__init__()
        self.raw = raw
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            lines, _, self._pending = self._pending.rpartition("\n")
            self.raw.write(redact_text(lines + "\n"))
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self.raw.write(redact_text(self._pending))
            self._pending = ""
        self.raw.flush()

    def isatty(self) -> bool:
        return self.raw.isatty()

    def fileno(self) -> int:
        return self.raw.fileno()

    def writable(self) -> bool:
        return True


@contextmanager
def redacted_output() -> Iterator[None]:
    """Route everything this process prints on stdout and stderr through the redaction."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactingStream(saved[0]), RedactingStream(saved[1])
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = saved
