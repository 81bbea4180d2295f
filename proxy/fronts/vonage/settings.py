"""The Vonage front's configuration, read from the environment when it mounts.

| key | meaning |
| --- | --- |
| VONAGE_API_KEY, VONAGE_API_SECRET | the upstream account for SMS (both or neither) |
| VONAGE_APPLICATION_ID, VONAGE_PRIVATE_KEY_PATH | the upstream application for voice calls |
| VONAGE_REST_BASE | the SMS API's base URL (default https://rest.nexmo.com) |
| VONAGE_API_BASE | the Voice API's base URL (default https://api.nexmo.com) |
| VONAGE_SIGNATURE_SECRET, VONAGE_SIGNATURE_METHOD | how inbound SMS webhooks are signed |

Unset credentials: the built-in sandbox answers that channel (proxy/fronts/vonage/upstream.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from proxy.settings import ConfigError

# The HMAC methods of Vonage's signed SMS webhooks the vonage SDK verifies (Auth.check_signature;
# its "md5" is HMAC-MD5). Vonage's plain "MD5 hash" method is not an HMAC and the SDK does not
# verify it: choose one of these in the Vonage dashboard.
SIGNATURE_METHODS = ("md5", "sha1", "sha256", "sha512")


@dataclass(frozen=True, slots=True)
class VonageSettings:
    api_key: str | None
    api_secret: str | None
    application_id: str | None
    private_key: str | None  # PEM, read once at start-up
    rest_base: str
    api_base: str
    signature_secret: str | None
    signature_method: str

    @property
    def sms_sandbox(self) -> bool:
        return self.api_key is None

    @property
    def voice_sandbox(self) -> bool:
        return self.application_id is None


def _base(env: Mapping[str, str], key: str, default: str) -> str:
    value = (env.get(key) or default).rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{key}: expected an http(s) URL, got {value!r}")
    return value


def _pair(env: Mapping[str, str], first: str, second: str) -> tuple[str | None, str | None]:
    a, b = env.get(first) or None, env.get(second) or None
    if (a is None) != (b is None):
        missing = second if b is None else first
        raise ConfigError(f"{missing}: required when {first if b is None else second} is set")
    return a, b


def _private_key(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        pem = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"VONAGE_PRIVATE_KEY_PATH: cannot read {path!r}: {exc}") from exc
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except ValueError as exc:
        raise ConfigError("VONAGE_PRIVATE_KEY_PATH: not an unencrypted PEM private key") from exc
    if not isinstance(key, RSAPrivateKey):
        raise ConfigError("VONAGE_PRIVATE_KEY_PATH: expected an RSA private key (RS256)")
    # PKCS#8, the form the vonage JWT helper takes as text (a PKCS#1 file works too).
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()


def load(env: Mapping[str, str]) -> VonageSettings:
    api_key, api_secret = _pair(env, "VONAGE_API_KEY", "VONAGE_API_SECRET")
    application_id, key_path = _pair(env, "VONAGE_APPLICATION_ID", "VONAGE_PRIVATE_KEY_PATH")
    method = (env.get("VONAGE_SIGNATURE_METHOD") or "md5").lower()
    if method not in SIGNATURE_METHODS:
        raise ConfigError(f"VONAGE_SIGNATURE_METHOD: expected one of "
                          f"{'|'.join(SIGNATURE_METHODS)}, got {method!r}")
    return VonageSettings(
        api_key=api_key, api_secret=api_secret, application_id=application_id,
        private_key=_private_key(key_path),
        rest_base=_base(env, "VONAGE_REST_BASE", "https://rest.nexmo.com"),
        api_base=_base(env, "VONAGE_API_BASE", "https://api.nexmo.com"),
        signature_secret=env.get("VONAGE_SIGNATURE_SECRET") or None,
        signature_method=method)
