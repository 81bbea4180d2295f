"""Domain errors raised by handlers and the store; one middleware turns them into responses."""

from __future__ import annotations


class ProxyError(Exception):
    status = 500

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class BadInput(ProxyError):
    """The request is malformed or a value is invalid (422)."""

    status = 422


class NotFound(ProxyError):
    """A referenced thing does not exist (404)."""

    status = 404


class Conflict(ProxyError):
    """The thing already exists (409)."""

    status = 409


class Unauthorized(ProxyError):
    status = 401


class RequestTimeout(ProxyError):
    """The request body did not arrive within limits.body_timeout_seconds (408)."""

    status = 408


class StoreUnavailable(ProxyError):
    """The consent store cannot be reached: fail closed (503)."""

    status = 503
