"""Telnyx webhook signatures (Ed25519, PyNaCl): checking Telnyx's, and making our own for the
messages relayed to a sender's webhook.

Telnyx signs `f"{timestamp}|{raw body}"` with its account key; the signature (base64) comes in
`telnyx-signature-ed25519`, the Unix time in `telnyx-timestamp`, and a webhook more than
300 seconds from our clock (app[CLOCK]) is refused as a replay. Relays are signed the same
way with an Ed25519 key derived from PROXY_SECRET and the client's token version, so a sender
verifies them with the telnyx SDK's own helper and the public key the proxy serves it
(`relay_public_key`).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import hashlib
import hmac
from collections.abc import Mapping

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

SIGNATURE_HEADER = "telnyx-signature-ed25519"
TIMESTAMP_HEADER = "telnyx-timestamp"
TOLERANCE_SECONDS = 300


class SignatureError(Exception):
    """The webhook is not Telnyx's: `missing` when it carries no signature at all."""

    def __init__(self, why: str, *, missing: bool = False) -> None:
        super().__init__(why)
        self.why, self.missing = why, missing


def verify(public_key: bytes | None, body: bytes, headers: Mapping[str, str],
           now: dt.datetime) -> int:
    """Check a Telnyx webhook's signature and freshness; its timestamp, or SignatureError."""
    if public_key is None:
        raise SignatureError("TELNYX_PUBLIC_KEY is not set")
    signature, stamp = headers.get(SIGNATURE_HEADER), headers.get(TIMESTAMP_HEADER)
    if not signature or not stamp:
        raise SignatureError("no signature", missing=True)
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        raise SignatureError("bad timestamp")
    timestamp = int(stamp)
    if abs(now.timestamp() - timestamp) > TOLERANCE_SECONDS:
        raise SignatureError("timestamp outside 300 seconds")
    try:
        raw = base64.b64decode(signature, validate=True)
        VerifyKey(public_key).verify(stamp.encode() + b"|" + body, raw)
    except (binascii.Error, ValueError, BadSignatureError) as exc:
        raise SignatureError("signature does not match") from exc
    return timestamp


@functools.lru_cache(maxsize=256)
def relay_key(proxy_secret: str, client_id: str, version: int) -> SigningKey:
    """The key a client's relays are signed with: derived from PROXY_SECRET and the client's
    token version (rotating the client's token rotates it), never stored."""
    seed = hmac.new(proxy_secret.encode(),
                    f"consent-proxy/telnyx-relay-key/v1:{client_id}:{version}".encode(),
                    hashlib.sha256).digest()
    return SigningKey(seed)


def relay_public_key(proxy_secret: str, client_id: str, version: int) -> str:
    """The relay key's public half, base64, as a sender configures it for the SDK helper."""
    return base64.b64encode(bytes(relay_key(proxy_secret, client_id, version).verify_key)
                            ).decode()


def sign_relay(proxy_secret: str, client_id: str, version: int, body: bytes,
               now: dt.datetime) -> dict[str, str]:
    """The headers of a relayed webhook, signed as Telnyx signs its own."""
    stamp = str(int(now.timestamp()))
    key = relay_key(proxy_secret, client_id, version)
    signature = key.sign(stamp.encode() + b"|" + body).signature
    return {SIGNATURE_HEADER: base64.b64encode(signature).decode(), TIMESTAMP_HEADER: stamp}
