"""A client's Vonage applications (sql/019): the public key that verifies the JWTs its dialer
signs for the Voice API, registered by the operator (`PUT /admin/v1/clients/{account_sid}/
vonage-applications/{application_id}`, or `consent-proxy vonage-application`), and the JWT ids
seen within their lifetime (a JWT is accepted once)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import asyncpg
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from proxy import store
from proxy.admin import PREFIX, read_json
from proxy.errors import BadInput, Conflict, NotFound
from proxy.fields import Fields
from proxy.keys import POOL

PROVIDER = "vonage"
# Vonage application ids are UUIDs; the table takes any id of this shape.
APPLICATION_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
ROUTE = f"{PREFIX}/clients/{{account_sid}}/vonage-applications/{{application_id}}"


@dataclass(frozen=True, slots=True)
class Application:
    application_id: str
    client_id: str
    public_key: str


def check_public_key(pem: str) -> str:
    """An RSA public key in PEM (what Vonage's dashboard shows beside the application), or
    BadInput naming the field."""
    try:
        key = load_pem_public_key(pem.strip().encode())
    except (ValueError, TypeError) as exc:
        raise BadInput("not a PEM public key (-----BEGIN PUBLIC KEY-----)",
                       "public_key") from exc
    if not isinstance(key, RSAPublicKey):
        raise BadInput("expected an RSA public key (Vonage signs with RS256)", "public_key")
    return pem.strip() + "\n"


async def register(pool: asyncpg.Pool, client_id: str, application_id: str,
                   public_key: str) -> bool:
    """Register (or replace the key of) a client's application. False: the application
    belongs to another client, or the client does not exist."""
    async with pool.acquire() as conn, conn.transaction():
        exists = await conn.fetchval("SELECT 1 FROM clients WHERE client_id = $1", client_id)
        if not exists:
            raise NotFound(f"no client {client_id!r}", "client_id")
        row = await conn.fetchrow(
            """INSERT INTO client_applications (provider, application_id, client_id, public_key)
               VALUES ($1, $2, $3, $4)
               ON CONFLICT (provider, application_id) DO UPDATE SET public_key = $4
               WHERE client_applications.client_id = $3
               RETURNING client_id""", PROVIDER, application_id, client_id, public_key)
    return row is not None


async def find(pool: asyncpg.Pool, application_id: str) -> Application | None:
    row = await pool.fetchrow(
        """SELECT application_id, client_id, public_key FROM client_applications
           WHERE provider = $1 AND application_id = $2""", PROVIDER, application_id)
    return Application(row["application_id"], row["client_id"], row["public_key"]) if row \
        else None


async def first_use(pool: asyncpg.Pool, application_id: str, jti: str,
                    expires_at: dt.datetime, now: dt.datetime) -> bool:
    """Record a JWT id; False if it was seen before (a replay). Expired ids are swept as it
    goes, a few at a time."""
    async with pool.acquire() as conn:
        await conn.execute(
            """DELETE FROM client_jwt_ids WHERE ctid = ANY(ARRAY(
                   SELECT ctid FROM client_jwt_ids WHERE expires_at < $1 LIMIT 10))""", now)
        inserted = await conn.fetchval(
            """INSERT INTO client_jwt_ids (provider, application_id, jti, expires_at)
               VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING 1""",
            PROVIDER, application_id, jti, expires_at)
    return inserted is not None


# --- the admin route --------------------------------------------------------------------------

async def put_application(request: web.Request) -> web.Response:
    """Register a client's Vonage application by its public key (JSON `{"public_key": PEM}`)."""
    client_id = request.match_info["account_sid"]
    application_id = request.match_info["application_id"]
    if not store.CLIENT_ID.fullmatch(client_id):
        raise NotFound(f"no client {client_id!r}", "client_id")
    if not APPLICATION_ID.fullmatch(application_id):
        raise BadInput("a Vonage application id is a lower-case UUID", "application_id")
    f = Fields(await read_json(request), ("public_key",))
    pem = check_public_key(f.text("public_key", max_len=20000) or "")
    if not await register(request.app[POOL], client_id, application_id, pem):
        raise Conflict("this application is registered to another client", "application_id")
    return web.json_response({"client_id": client_id, "application_id": application_id,
                              "provider": PROVIDER})


def add_admin_route(app: web.Application) -> None:
    app.router.add_put(ROUTE, put_application)


async def register_from_cli(database_url: str, client_id: str, application_id: str,
                            pem: str) -> None:
    """`consent-proxy vonage-application`: what the admin route does, from a shell."""
    if not APPLICATION_ID.fullmatch(application_id):
        raise BadInput("a Vonage application id is a lower-case UUID", "application_id")
    if not store.CLIENT_ID.fullmatch(client_id):
        raise NotFound(f"no client {client_id!r}", "client_id")
    key = check_public_key(pem)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        if not await register(pool, client_id, application_id, key):
            raise Conflict("this application is registered to another client",
                           "application_id")
    finally:
        await pool.close()
