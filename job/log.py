"""Structured logging: JSON lines for Render, console rendering on a TTY, secrets always redacted.

Every event carries event, level, timestamp (ISO-8601 UTC), run_id and command. The redaction
processor runs after exception formatting, so secrets cannot leak through a traceback either.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import uuid
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "***"

# Keys whose values are secrets whatever they hold.
_SECRET_KEY = re.compile(
    r"(secret|password|passwd|token|api_?key|authorization|credential|private_?key|signature)",
    re.IGNORECASE,
)
# user:password@ in any URL-like string.
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^/\s:@]+):[^/\s@]+@", re.I)
# Render API keys and AWS-style key=value pairs in free text (e.g. a botocore error message).
_TEXT_SECRETS = (
    re.compile(r"\brnd_[A-Za-z0-9]{16,}\b"),
    re.compile(
        r"(?P<key>(aws_secret_access_key|aws_session_token|secret_key|x-amz-security-token)"
        r"\s*[=:]\s*)\S+",
        re.I,
    ),
    re.compile(r"(?P<key>Bearer\s+)\S+", re.I),
)
# Environment variables whose values must never be printed, wherever they turn up.
_SECRET_ENV = re.compile(r"(SECRET|TOKEN|PASSWORD|API_KEY|CREDENTIAL)", re.IGNORECASE)
_MIN_SECRET_LEN = 6


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    values = {v for k, v in env.items() if _SECRET_ENV.search(k) and len(v) >= _MIN_SECRET_LEN}
    return sorted(values, key=len, reverse=True)


def redact_text(text: str, secrets: list[str] | None = None) -> str:
    """Remove every secret we can recognise from a piece of text."""
    for value in secret_values() if secrets is None else secrets:
        text = text.replace(value, REDACTED)
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", text)
    for pattern in _TEXT_SECRETS:
        text = pattern.sub(lambda m: (m.groupdict().get("key") or "") + REDACTED, text)
    return text


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


_FIRST_KEYS = ("timestamp", "level", "event", "run_id", "command")


def order_keys(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """timestamp, level and event first: the on-call reader scans the left edge."""
    head = {k: event_dict.pop(k) for k in _FIRST_KEYS if k in event_dict}
    return {**head, **event_dict}


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
        renderer = structlog.dev.ConsoleRenderer(colors=(stream or sys.stdout).isatty())
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
