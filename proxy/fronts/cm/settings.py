"""The CM.com front's configuration, read from the environment when it mounts.

- `CM_PRODUCT_TOKEN`: the upstream product token (a UUID, hyphens included, as CM issues it);
  unset: the built-in sandbox answers allowed messages and nothing is sent anywhere;
- `CM_API_BASE`: where CM's gateway is (default `https://gw.messaging.cm.com`); the path
  `/v1.0/message` is appended;
- `CM_WEBHOOK_SECRET`: the secret CM's inbound-message webhook must present (CM signs
  nothing: the secret is part of the callback URL, see webhooks.py); unset: inbound messages
  are refused (503, so that CM keeps them and retries), never taken unauthenticated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from proxy.settings import ConfigError

DEFAULT_API_BASE = "https://gw.messaging.cm.com"
MESSAGE_PATH = "/v1.0/message"
# CM's product tokens are UUIDs; the hyphens are part of them.
_PRODUCT_TOKEN = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-"
                            r"[0-9A-Fa-f]{12}")
MIN_WEBHOOK_SECRET = 16


@dataclass(frozen=True, slots=True)
class CmSettings:
    api_base: str
    product_token: str | None = field(default=None, repr=False)
    webhook_secret: str | None = field(default=None, repr=False)

    @property
    def sandbox(self) -> bool:
        return self.product_token is None

    @property
    def message_url(self) -> str:
        return self.api_base + MESSAGE_PATH


def load(env: Mapping[str, str]) -> CmSettings:
    token = env.get("CM_PRODUCT_TOKEN") or None
    if token is not None and not _PRODUCT_TOKEN.fullmatch(token):
        raise ConfigError("CM_PRODUCT_TOKEN: expected CM's product token, a UUID with its "
                          "hyphens (00000000-0000-0000-0000-000000000000)")
    base = (env.get("CM_API_BASE") or DEFAULT_API_BASE).rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or (
            parts.query or parts.fragment):
        raise ConfigError("CM_API_BASE: expected an http(s) URL without a path "
                          f"(e.g. {DEFAULT_API_BASE}), got {base!r}")
    secret = env.get("CM_WEBHOOK_SECRET") or None
    if secret is not None and (len(secret) < MIN_WEBHOOK_SECRET or not secret.isascii()
                               or not all(c.isalnum() or c in "-_" for c in secret)):
        raise ConfigError(f"CM_WEBHOOK_SECRET: expected at least {MIN_WEBHOOK_SECRET} "
                          "letters, digits, '-' or '_' (it is part of a URL)")
    return CmSettings(base, token, secret)
