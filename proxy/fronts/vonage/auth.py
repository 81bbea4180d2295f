"""Who is asking, in Vonage's two styles.

- SMS API: the client's id as api_key and its token as api_secret, in HTTP Basic (as the
  vonage SDK sends them) or in the body (`api_key`, `api_secret`), never both. Signed requests
  (`sig` with a signature secret) are refused: the proxy holds no per-client signature secret.
- Voice API: `Authorization: Bearer <JWT>` signed RS256 by the client's Vonage application
  (its `application_id` claim), checked against the public key registered for it
  (proxy/fronts/vonage/applications.py); `exp`, `iat` and `jti` are required, its lifetime is
  at most a day, and each `jti` is accepted once within it.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence

import jwt
from aiohttp import web

from proxy import credentials, store
from proxy.fronts.vonage import applications
from proxy.fronts.vonage.errors import (
    INVALID_CREDENTIALS,
    INVALID_PARAMS,
    MISSING_PARAMS,
    SmsError,
    VoiceError,
)
from proxy.fronts.vonage.wire import first
from proxy.keys import CLIENTS, POOL, SETTINGS

CREDENTIAL_FIELDS = ("api_key", "api_secret")
# Clock skew tolerated between the dialer and the proxy, and the longest JWT accepted (the
# vonage SDKs mint 15 minutes; Vonage accepts up to a day).
LEEWAY_SECONDS = 30
MAX_JWT_LIFETIME = 24 * 3600


def _basic(request: web.Request) -> tuple[str, str] | None:
    return credentials.basic(request.headers.get("Authorization", ""))


async def _client(request: web.Request, client_id: str, token: str) -> store.Client | None:
    secret = request.app[SETTINGS].proxy_secret
    if not secret or not store.CLIENT_ID.fullmatch(client_id):
        return None
    client = await request.app[CLIENTS].get(request, client_id)
    if client is None or not credentials.token_matches(secret, client.id,
                                                       client.token_version, token):
        return None
    return client


async def sms_client(request: web.Request, pairs: Sequence[tuple[str, str]]
                     ) -> tuple[store.Client, list[tuple[str, str]]]:
    """The client behind an SMS request, and the request's fields without its credentials."""
    if first(pairs, "sig") is not None:
        raise SmsError(INVALID_CREDENTIALS, "signed requests (sig) are not accepted by "
                       "consent-proxy; send api_key and api_secret")
    header = _basic(request)
    body_key, body_secret = first(pairs, "api_key"), first(pairs, "api_secret")
    if header is not None and (body_key or body_secret):
        raise SmsError(INVALID_PARAMS, "credentials in both the Authorization header and "
                       "the body")
    key, secret = header or (body_key, body_secret)
    if not key or not secret:
        raise SmsError(MISSING_PARAMS, "api_key and api_secret are required")
    client = await _client(request, key, secret)
    if client is None:
        raise SmsError(INVALID_CREDENTIALS, "the api_key and api_secret are not valid")
    return client, [(k, v) for k, v in pairs if k not in CREDENTIAL_FIELDS]


def _unauthorized(detail: str) -> VoiceError:
    return VoiceError(401, detail)


async def voice_client(request: web.Request) -> store.Client:
    """The client whose registered application signed the request's JWT (used once)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("a JWT is required (Authorization: Bearer)")
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise _unauthorized("the JWT cannot be read") from exc
    application_id = unverified.get("application_id")
    if header.get("alg") != "RS256" or not isinstance(application_id, str) or \
            not applications.APPLICATION_ID.fullmatch(application_id):
        raise _unauthorized("the JWT must be RS256 with an application_id claim")
    pool = request.app[POOL]
    application = await applications.find(pool, application_id)
    if application is None:
        raise _unauthorized("the JWT's application is not registered with consent-proxy")
    try:
        claims = jwt.decode(token, application.public_key, algorithms=["RS256"],
                            leeway=LEEWAY_SECONDS,
                            options={"require": ["exp", "iat", "jti"]})
    except jwt.PyJWTError as exc:
        raise _unauthorized(f"the JWT is not valid: {type(exc).__name__}") from exc
    iat, exp, jti = claims["iat"], claims["exp"], claims["jti"]
    if not isinstance(jti, str) or not 1 <= len(jti) <= 200:
        raise _unauthorized("the JWT's jti must be a string")
    if not isinstance(iat, int | float) or not isinstance(exp, int | float) or \
            exp - iat > MAX_JWT_LIFETIME:
        raise _unauthorized("the JWT lives longer than a day")
    client = await request.app[CLIENTS].get(request, application.client_id)
    if client is None:  # disabled since
        raise _unauthorized("the JWT's client is disabled")
    # The JWT's own clock: wall time, as the dialer's SDK minted it.
    now = dt.datetime.fromtimestamp(time.time(), dt.UTC)
    expires = dt.datetime.fromtimestamp(exp + LEEWAY_SECONDS, dt.UTC)
    if not await applications.first_use(pool, application_id, jti, expires, now):
        raise _unauthorized("the JWT was used before (jti replayed)")
    return client
