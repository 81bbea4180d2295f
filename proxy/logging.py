"""structlog JSON logging, configured once. Masking lives in a processor so no call site
can forget it: phone numbers are masked, secrets and message bodies never reach the output.

Request-scoped fields (the request id, then the decision) live in one context variable set by
the request middleware (`bind_request` / `add_to_request`): every line logged while the
request is handled carries them.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import logging
import re
import sys
import threading
import time
from collections.abc import MutableMapping
from typing import Any, TextIO

import orjson
import structlog

from proxy.phone import E164, mask, mask_text

_SECRET_KEYS = frozenset(
    {
        "auth_token", "token", "admin_token", "authorization", "password", "proxy_secret",
        "body", "Body", "sms_body", "secret", "signature",
    }
)
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


# Values that cannot hold a phone number or a secret pass as they are.
_PLAIN = (int, float, bool, type(None))
# Every shape mask_text masks holds seven digits in a row, single separators allowed
# (proxy/phone.py): text without seven digits-or-separators in a row cannot hold one and is
# left as it is, without the full search. (The looser test is the faster one: no
# backtracking.)
_SHORTEST_NUMBER = 7
_DIGIT_RUN = re.compile(r"\d[\d\s\-.]{6}")


# Texts with digit runs that turned out to hold no number (a route such as
# /2010-04-01/Accounts/…): recognised at once the next time. Phone numbers never get here,
# as they come out masked.
_UNMASKED: set[str] = set()
_UNMASKED_MAX = 1024


# A SHA-256 in hex (an audit checkpoint's hash and MAC) holds no phone number, but one that
# starts "00" and seven digits would look like one; it must reach the log as it is.
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


def _scrub_text(value: str) -> str:
    if len(value) < _SHORTEST_NUMBER or value in _UNMASKED or _DIGIT_RUN.search(value) is None:
        return value
    if E164.fullmatch(value):
        return mask(value)
    if _HEX_DIGEST.fullmatch(value):
        return value
    masked = mask_text(value)
    if masked == value and len(_UNMASKED) < _UNMASKED_MAX:
        _UNMASKED.add(value)
    return masked


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _scrub_text(value)
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, dict):
        return {k: _field(k, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


_PLAIN_TYPES = frozenset(_PLAIN)


def _field(key: str, value: Any) -> Any:
    """A field as it may be logged: a secret's value never, anything else masked."""
    if key in _SECRET_KEYS:
        return "[redacted]"
    # The two shapes of nearly every field, without _scrub's chain of isinstance calls (a
    # dozen fields on every request's line).
    kind = type(value)
    if kind is str:
        return _scrub_text(value)
    if kind in _PLAIN_TYPES:
        return value
    return _scrub(value)


def redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in event_dict.items():
        event_dict[key] = _field(key, value)
    return event_dict


# --- request-scoped fields -------------------------------------------------------------------

# One dict per request, shared with the tasks the request starts. Cheaper than structlog's
# contextvars (a variable per key, and a scan of the whole context on every line).
_REQUEST: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "consent_proxy_request", default=None)


def bind_request(request_id: str, *,
                 generated: bool = False) -> contextvars.Token[dict[str, Any] | None]:
    """Start a request's fields; pass the token to `end_request` when it is answered.
    `generated`: an id of our own (hex digits, never a phone number) needs no redaction."""
    return _REQUEST.set({"request_id": request_id if generated else _scrub(request_id)})


def add_to_request(**fields: Any) -> None:
    """Add fields to the current request's lines (no-op outside a request). Redacted here,
    once, rather than on every line."""
    current = _REQUEST.get()
    if current is not None:
        for key, value in fields.items():
            current[key] = _field(key, value)


def end_request(token: contextvars.Token[dict[str, Any] | None]) -> None:
    _REQUEST.reset(token)


def merge_request(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """After `redact`: the request's fields were redacted when they were added."""
    current = _REQUEST.get()
    if current:
        for key, value in current.items():
            event_dict.setdefault(key, value)
    return event_dict


# --- output ----------------------------------------------------------------------------------

class LineLogger:
    """Writes each rendered line to a text stream. Inside an event loop, the lines of one loop
    iteration leave in one write at its end (one syscall instead of one per request, and
    nothing is held longer than that iteration); outside a loop, and at exit, at once."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        atexit.register(self.flush)

    def msg(self, message: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a thread or plain code: nothing will come back to flush
            self._write([message])
            return
        if loop is not self._loop:
            self.flush()  # lines of a loop that stopped before its flush ran
            self._loop = loop
        if not self._pending:
            loop.call_soon(self.flush)
        self._pending.append(message)

    def flush(self) -> None:
        lines, self._pending = self._pending, []
        if lines:
            self._write(lines)

    def _write(self, lines: list[str]) -> None:
        with self._lock:
            self._stream.write("\n".join(lines) + "\n")
            self._stream.flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class _LineLoggerFactory:
    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream
        self._logger: LineLogger | None = None

    def __call__(self, *_args: Any) -> LineLogger:
        # One writer per stream, so lines keep their order across loggers.
        if self._logger is None:
            self._logger = LineLogger(self._stream or sys.stdout)
        return self._logger


class _UtcTimestamp:
    """`timestamp`: ISO 8601 in UTC with microseconds ("2026-12-01T20:49:33.287903Z"). The
    part up to the second is formatted once per second: this runs on every line."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, _logger: Any, _method: str,
                 event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        event_dict["timestamp"] = f"{self._prefix}.{int((now - second) * 1e6):06d}Z"
        return event_dict


def _dumps(value: Any, default: Any = None) -> str:
    # orjson: a fifth of json.dumps' time on the one line every request writes.
    return orjson.dumps(value, default=default, option=orjson.OPT_NON_STR_KEYS).decode()


def configure_logging(level: str = "info", stream: TextIO | None = None, *,
                      once: bool = False) -> None:
    """`once`: this process configures logging this one time (the CLI), so each module's
    logger can be built on its first use instead of on every call."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            redact,
            merge_request,
            _UtcTimestamp(),
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=_LineLoggerFactory(stream),
        cache_logger_on_first_use=once,
    )
