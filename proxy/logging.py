"""structlog JSON logging, configured once. Masking lives in a processor so no call site
can forget it: phone numbers are masked, secrets and message bodies never reach the output."""

from __future__ import annotations

import logging
import re
import sys
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
# (proxy/phone.py): text without such a run is left as it is, without the full search.
_SHORTEST_NUMBER = 7
_DIGIT_RUN = re.compile(r"\d(?:[\s\-.]?\d){6}")


# Texts with digit runs that turned out to hold no number (a route such as
# /2010-04-01/Accounts/…): recognised at once the next time. Phone numbers never get here,
# as they come out masked.
_UNMASKED: set[str] = set()
_UNMASKED_MAX = 1024


def _scrub_text(value: str) -> str:
    if len(value) < _SHORTEST_NUMBER or value in _UNMASKED or _DIGIT_RUN.search(value) is None:
        return value
    if E164.fullmatch(value):
        return mask(value)
    masked = mask_text(value)
    if masked == value and len(_UNMASKED) < _UNMASKED_MAX:
        _UNMASKED.add(value)
    return masked


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _scrub_text(value)
    if isinstance(value, dict):
        return {k: "[redacted]" if k in _SECRET_KEYS else _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # Runs on every log line (one per request): the common cases are tested first.
    for key, value in event_dict.items():
        if key in _SECRET_KEYS:
            event_dict[key] = "[redacted]"
        elif value.__class__ is str:
            event_dict[key] = _scrub_text(value)
        elif not isinstance(value, _PLAIN):
            event_dict[key] = _scrub(value)
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
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            redact,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=once,
    )
