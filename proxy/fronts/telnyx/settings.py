"""The Telnyx front's configuration, from the environment (Settings.env) when it is mounted.

- `TELNYX_API_KEY`: the upstream API key (V2, a Bearer token); unset: the built-in sandbox.
- `TELNYX_API_BASE`: where the Telnyx API v2 lies (default https://api.telnyx.com/v2).
- `TELNYX_PUBLIC_KEY`: the account's Ed25519 public key (base64, from the Telnyx portal), with
  which inbound webhooks are verified; unset: every inbound webhook is refused (403).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from proxy.settings import ConfigError

DEFAULT_API_BASE = "https://api.telnyx.com/v2"


@dataclass(frozen=True, slots=True)
class TelnyxSettings:
    api_key: str | None
    api_base: str
    public_key: bytes | None = None  # 32 raw bytes

    @property
    def sandbox(self) -> bool:
        """No upstream API key: allowed requests are answered by the built-in sandbox."""
        return not self.api_key


def load(env: Mapping[str, str]) -> TelnyxSettings:
    base = (env.get("TELNYX_API_BASE") or DEFAULT_API_BASE).rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise ConfigError(f"TELNYX_API_BASE: expected an http(s) URL, got {base[:100]!r}")
    return TelnyxSettings(api_key=env.get("TELNYX_API_KEY") or None, api_base=base,
                          public_key=_public_key(env.get("TELNYX_PUBLIC_KEY") or None))


def _public_key(value: str | None) -> bytes | None:
    if value is None:
        return None
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError("TELNYX_PUBLIC_KEY: expected the base64 Ed25519 public key") from exc
    if len(raw) != 32:
        raise ConfigError("TELNYX_PUBLIC_KEY: expected a 32-byte Ed25519 public key (base64)")
    return raw
