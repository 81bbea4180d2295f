"""The error the Twilio front answers in Twilio's shape; its own module so that the modules
the front calls (proxy/twilio_routes.py) can raise it too."""

from __future__ import annotations

from typing import Any

from proxy.errors import ProxyError


class TwilioError(ProxyError):
    """An error answered in Twilio's shape: {"code","message","more_info","status"} + extras."""

    def __init__(self, status: int, code: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.extra = extra
