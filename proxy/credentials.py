"""Dialer credentials: an account SID and a token derived from PROXY_SECRET.

A front whose provider authenticates with one secret string (a bearer API key, a product
token) takes both as one API key, `<client_id>.<token>` (`api_key`, `split_api_key`).

The token is never stored. It is HMAC-SHA256(PROXY_SECRET, sid + version), so the proxy can
check it and can also re-create it to sign relayed webhooks for that client. Rotating a
client's token means bumping its version; rotating PROXY_SECRET invalidates every token.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import secrets


def new_account_sid() -> str:
    return "AC" + secrets.token_hex(16)


@functools.lru_cache(maxsize=4096)  # checked on every request; clients are few
def derive_token(proxy_secret: str, account_sid: str, version: int) -> str:
    message = f"consent-proxy/client-token/v1:{account_sid}:{version}".encode()
    return hmac.new(proxy_secret.encode(), message, hashlib.sha256).hexdigest()[:32]


def token_matches(proxy_secret: str, account_sid: str, version: int, presented: str) -> bool:
    expected = derive_token(proxy_secret, account_sid, version)
    return constant_time_equals(expected, presented)


def basic(authorization: str) -> tuple[str, str] | None:
    """(user, password) of an `Authorization: Basic …` header, or None when it is none or
    not well formed (strict base64, UTF-8, a colon)."""
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def api_key(client_id: str, token: str) -> str:
    """The one-string form of a client's credentials, for providers whose API takes one key."""
    return f"{client_id}.{token}"


def split_api_key(key: str) -> tuple[str, str] | None:
    """`api_key`'s client id and token (the token holds no dot; a client id may), or None."""
    client_id, sep, token = key.rpartition(".")
    return (client_id, token) if sep and client_id and token else None


def constant_time_equals(a: str, b: str) -> bool:
    # surrogateescape: header bytes that are not UTF-8 compare (unequal) instead of raising.
    return hmac.compare_digest(a.encode("utf-8", "surrogateescape"),
                               b.encode("utf-8", "surrogateescape"))
