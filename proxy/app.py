"""The application factory: wires settings, pool, clock, the gate, middlewares and routes, and
mounts every front (proxy/fronts/); it names none of them."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import re
import secrets
import time
from collections.abc import AsyncIterator

import asyncpg
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from proxy import admin, audit, check, checkpoints, console, db, stops
from proxy.clients import ClientDirectory, ClientEvents
from proxy.credentials import constant_time_equals
from proxy.db import STORE_ERRORS, constraint_refusal
from proxy.errors import ProxyError, StoreUnavailable, Unauthorized
from proxy.front import renderer_for
from proxy.fronts import FRONTS
from proxy.gate import DENIAL_CODES, FAULTS, Gate
from proxy.keys import (
    CLIENTS,
    CLOCK,
    DRAINING,
    GATE,
    METRICS,
    OPTOUT_SPOOL,
    POOL,
    READER,
    REQUEST_ID,
    SETTINGS,
    SPOOL_DRAIN,
    WORKERS,
    WRITER,
    Clock,
)
from proxy.logging import bind_request, end_request
from proxy.metrics import Metrics
from proxy.policy import REASONS
from proxy.reader import GroupFetch
from proxy.settings import Settings
from proxy.workers import Workers
from proxy.writer import GroupCommit

log = structlog.get_logger("proxy")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _route_name(request: web.Request) -> str:
    info = request.match_info
    route = info.route if info is not None else None
    if route is None or route.resource is None:
        return "unmatched"
    return route.resource.canonical


# Request ids: a random prefix per process and a counter, 32 hex digits like a token_hex(16),
# unique without a getrandom() system call per request (1 % of the proxy's CPU under load).
_ID_PREFIX = secrets.token_hex(8)
_ID_COUNTER = itertools.count(secrets.randbits(32))


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFF_FFFF_FFFF_FFFF:016x}"


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id in, request id out, one log line per request."""
    incoming = request.headers.get("X-Request-Id", "")
    if _REQUEST_ID.match(incoming):
        request_id, token = incoming, bind_request(incoming)
    else:
        request_id = new_request_id()
        token = bind_request(request_id, generated=True)
    request[REQUEST_ID] = request_id
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        response.headers["X-Request-Id"] = request_id
        if request.app[DRAINING].is_set():
            response.force_close()  # the next request goes to another gate
        return response
    except web.HTTPException as exc:  # a redirect raised past the error middleware
        status = exc.status
        exc.headers["X-Request-Id"] = request_id
        raise
    finally:
        elapsed = time.perf_counter() - started
        route = _route_name(request)
        request.app[METRICS].request_latency.labels(route, request.method).observe(elapsed)
        log.info(
            "request_handled",
            method=request.method,
            route=route,
            status=status,
            latency_ms=round(elapsed * 1000, 3),
        )
        end_request(token)


def admin_error(status: int, message: str, field: str | None = None) -> web.Response:
    return web.json_response({"error": message, "field": field}, status=status)


def _error(request: web.Request, exc: ProxyError) -> web.Response:
    renderer = renderer_for(request.app, request.path)
    if renderer is not None:  # the front that owns the path renders it in its own shape
        return renderer.error(request, exc)
    response = admin_error(exc.status, exc.message, exc.field)
    if isinstance(exc, Unauthorized):
        response.headers["WWW-Authenticate"] = 'Bearer realm="consent-proxy admin"'
    return response


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Domain exceptions -> the response shape of the route family (a front's own on the
    paths it registered, proxy/front.py; {"error","field"} elsewhere). Never a bare 500 page.
    The admin API's bearer token is checked here too, first: one middleware less for every
    request to pass."""
    try:
        _admin_auth(request)
        return await handler(request)
    except ProxyError as exc:
        if exc.status >= 500:
            log.warning("request_failed", error=exc.message)
        return _error(request, exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        renderer = renderer_for(request.app, request.path)
        if renderer is not None:
            return renderer.http_error(request, exc.status, exc.reason)
        return admin_error(exc.status, exc.reason)
    except asyncpg.IntegrityConstraintViolationError as exc:
        log.warning("constraint_refused", constraint=exc.constraint_name)
        return _error(request, constraint_refusal(exc))
    except STORE_ERRORS as exc:
        log.warning("consent_store_unavailable", error=type(exc).__name__)
        await db.discard(request.app[POOL])  # the next request looks for the primary afresh
        return _error(request, StoreUnavailable(
            "consent store unavailable (CONSENT_STORE_UNAVAILABLE); nothing was forwarded"))
    except Exception:
        log.exception("request_crashed")
        return _error(request, ProxyError(
            "internal error; see the proxy log for this request id"))


def _admin_auth(request: web.Request) -> None:
    if request.path.startswith(admin.PREFIX + "/") or request.path == admin.PREFIX:
        expected = request.app[SETTINGS].admin_token
        presented = request.headers.get("Authorization", "")
        scheme, _, token = presented.partition(" ")
        if not expected or scheme.lower() != "bearer" or not constant_time_equals(
            token.strip(), expected
        ):
            raise Unauthorized("missing or invalid admin token (Authorization: Bearer …)")


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def error_doc(request: web.Request) -> web.Response:
    """`more_info` of every denial and fault code points here: what the code means and what
    to do (proxy/gate/codes.py)."""
    try:
        code = int(request.match_info["code"])
    except ValueError as exc:
        raise web.HTTPNotFound() from exc
    for reason, (status, number) in DENIAL_CODES.items():
        if number == code:
            doc = REASONS[reason]
            return web.json_response({"code": code, "status": status, "reason": reason,
                                      "rule": doc.rule, "meaning": doc.meaning,
                                      "fix": doc.fix})
    for (status, number), (name, meaning, fix) in FAULTS.items():
        if number == code:
            return web.json_response({"code": code, "status": status, "reason": name,
                                      "rule": None, "meaning": meaning, "fix": fix})
    raise web.HTTPNotFound()


# A store failure, or a spooled STOP that cannot be applied (Gate.apply_spool).
_UNREADY: tuple[type[BaseException], ...] = (*STORE_ERRORS, StoreUnavailable)


async def readyz(request: web.Request) -> web.Response:
    # STOPs waiting in the outage spool are applied here once the database answers again
    # (N11): the balancer asks every second, and the other gates, which decide as soon as
    # the database is back, do not know this gate's spool; the drain's backoff or this
    # gate's next decision could come much later. Until they are applied it is not ready.
    spooled = request.app[OPTOUT_SPOOL].entries
    extra = {"optout_spool": spooled} if spooled else {}
    if request.app[DRAINING].is_set():  # SIGTERM: the balancer takes this gate out first
        return web.json_response({"status": "draining", **extra}, status=503)
    try:
        async with request.app[POOL].acquire(timeout=2) as conn:
            # Ready only where decisions can be written: not on a standby, nor read-only.
            pending, unknown = await db.migration_state(conn)
            if await conn.fetchval(db.READ_ONLY_SQL):
                raise asyncpg.exceptions.ReadOnlySQLTransactionError("cannot write")
        if spooled and not (pending or unknown):
            await request.app[GATE].apply_spool()
            spooled = request.app[OPTOUT_SPOOL].entries
            extra = {"optout_spool": spooled} if spooled else {}
    except _UNREADY:
        await db.discard(request.app[POOL])
        return web.json_response(
            {"status": "unavailable", "reason": "CONSENT_STORE_UNAVAILABLE", **extra},
            status=503)
    if unknown:  # a newer version migrated the schema: this instance must be replaced
        return web.json_response(
            {"status": "schema_newer_than_code", "unknown": unknown, **extra}, status=503)
    if pending:
        return web.json_response(
            {"status": "migrations_pending", "pending": pending, **extra}, status=503)
    return web.json_response({"status": "ready", **extra})


async def _pool_ctx(app: web.Application) -> AsyncIterator[None]:
    url = app[SETTINGS].database_url
    if url is None:
        raise RuntimeError("DATABASE_URL is not set and no embedded database was started")
    cache = app[SETTINGS].statement_cache_size
    try:
        pool = await db.create_pool(url, statement_cache_size=cache)
    except STORE_ERRORS as exc:
        # Started while the database cannot be reached: serve all the same, failing closed
        # (503) until it can; the pool connects on first use instead of now.
        log.warning("database_unreachable_at_start", error=type(exc).__name__)
        pool = await db.create_pool(url, statement_cache_size=cache, min_size=0)
    app[POOL] = pool
    app[METRICS].watch_pool(pool)
    reader, writer = GroupFetch(pool), GroupCommit(pool)
    app[METRICS].watch_batchers(reader, writer)
    reader.start()
    writer.start()
    app[READER], app[WRITER] = reader, writer
    app[GATE] = Gate(pool=pool, load_facts=reader.load_facts, writer=writer,
                     rules=app[SETTINGS].rules, clock=app[CLOCK], metrics=app[METRICS],
                     drain=app[SPOOL_DRAIN])
    yield
    await reader.close()
    await writer.close()  # every queued decision and outcome is written before the pool goes
    await pool.close()


async def _client_events_ctx(app: web.Application) -> AsyncIterator[None]:
    url = app[SETTINGS].session_database_url  # LISTEN needs a session: not a pooler's
    assert url is not None  # _pool_ctx has refused to start without it
    events = ClientEvents(url, app[CLIENTS])
    events.start()
    yield
    await events.close()


async def _workers_ctx(app: web.Application) -> AsyncIterator[None]:
    app[WORKERS] = Workers()
    yield
    app[WORKERS].close()


async def metrics(request: web.Request) -> web.Response:
    return request.app[METRICS].render()


def create_app(settings: Settings, *, clock: Clock | None = None) -> web.Application:
    app = web.Application(
        middlewares=[request_context, errors],
        client_max_size=settings.rules.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[CLOCK] = clock or utc_now
    app[METRICS] = Metrics()
    app[CLIENTS] = ClientDirectory()
    app[DRAINING] = asyncio.Event()
    app.cleanup_ctx.append(_pool_ctx)
    app.cleanup_ctx.append(_client_events_ctx)
    app.cleanup_ctx.append(_workers_ctx)
    stops.install(app)
    checkpoints.install(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/errors/{code}", error_doc)
    admin.add_routes(app)
    check.add_routes(app)
    audit.add_routes(app)
    console.mount(app)
    for front in FRONTS:
        front.mount(app, settings)
    return app
