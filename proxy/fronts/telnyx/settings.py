"""The Telnyx front's configuration, from the environment (Settings.env) when it is mounted.

- `TELNYX_API_KEY`: the upstream API key (V2, a Bearer token); unset: the built-in sandbox.
- `TELNYX_API_BASE`: where the Telnyx API v2 lies (default https://api.telnyx.com/v2).
- `TELNYX_PUBLIC_KEY`: the account's Ed25519 public key (base64, from the Telnyx portal), with
  which inbound webhooks are verified; unset: every inbound webhook is refused (403).
- `TELNYX_CONNECTIONS`, `TELNYX_MESSAGING_PROFILES`, `TELNYX_BILLING_GROUPS`: which Call
  Control applications (`connection_id`), messaging profiles (`messaging_profile_id`) and
  billing groups (a call's `billing_group_id`) of the upstream account each client may use, as
  `client_id:id` entries separated by commas. A call's events go to its application's webhook
  and a message's to its profile's, and a call is billed to its group: on an account shared by
  several clients, another client's would receive them or pay. Unset: any (an account with one
  client).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from proxy.settings import ConfigError
from proxy.store.clients import CLIENT_ID

DEFAULT_API_BASE = "https://api.telnyx.com/v2"
# A Telnyx resource id: a Call Control application's number, a messaging profile's UUID.
_RESOURCE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# (client id, resource id) pairs a client may use; None: any.
Grants = frozenset[tuple[str, str]] | None


@dataclass(frozen=True, slots=True)
class TelnyxSettings:
    api_key: str | None
    api_base: str
    public_key: bytes | None = None  # 32 raw bytes
    connections: Grants = None
    messaging_profiles: Grants = None
    billing_groups: Grants = None

    @property
    def sandbox(self) -> bool:
        """No upstream API key: allowed requests are answered by the built-in sandbox."""
        return not self.api_key


def granted(grants: Grants, client_id: str, resource: str) -> bool:
    """Whether the client may use the upstream account's `resource` (None: all may)."""
    return grants is None or (client_id, resource) in grants


def load(env: Mapping[str, str]) -> TelnyxSettings:
    base = (env.get("TELNYX_API_BASE") or DEFAULT_API_BASE).rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise ConfigError(f"TELNYX_API_BASE: expected an http(s) URL, got {base[:100]!r}")
    return TelnyxSettings(api_key=env.get("TELNYX_API_KEY") or None, api_base=base,
                          public_key=_public_key(env.get("TELNYX_PUBLIC_KEY") or None),
                          connections=_grants(env, "TELNYX_CONNECTIONS"),
                          messaging_profiles=_grants(env, "TELNYX_MESSAGING_PROFILES"),
                          billing_groups=_grants(env, "TELNYX_BILLING_GROUPS"))


def _grants(env: Mapping[str, str], name: str) -> Grants:
    value = env.get(name, "").strip()
    if not value:
        return None
    out = set()
    for entry in value.split(","):
        client_id, sep, resource = entry.strip().partition(":")
        if not (sep and CLIENT_ID.fullmatch(client_id) and _RESOURCE_ID.fullmatch(resource)):
            raise ConfigError(f"{name}: expected comma-separated client_id:id entries, got "
                              f"{entry.strip()[:100]!r}")
        out.add((client_id, resource))
    return frozenset(out)


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
