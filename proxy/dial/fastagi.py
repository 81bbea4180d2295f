"""FastAGI for Asterisk: `AGI(agi://gate:4573/decide,${NUMBER})` in a dialplan asks the gate at
dial time, exactly as `POST /dial/v1/decisions` does (`decisions.py`: the same engine, spool,
group commit, idempotency by call_id and metrics), and gets the answer as channel variables;
`AGI(agi://gate:4573/outcome,${CONSENT_DECISION_ID},${DIALSTATUS})` in the `h` extension
records how the call ended. Requests are read in `agi_requests.py`, the variables set and the
errors answered are `agi_answers.py`'s, the wire is `agi.py`.

The listener lives in the application's lifecycle (`install`). FastAGI has no credentials, so
who may connect decides: the listener refuses peers outside `fastagi.allow_peers` (loopback
unless set) and decides as `fastagi.client`, or as one of `fastagi.clients` a dialplan names.
Everything read is bounded in size and time, sessions beyond `fastagi.max_sessions` are
refused, and a session that stalls, sends junk or goes away is closed, logged
(`fastagi_session` with its `end`) and counted; its task ends with it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import time
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import structlog
from aiohttp import web

from proxy import store
from proxy.dial import agi, agi_answers, agi_requests, answer, decisions
from proxy.dial.agi_answers import AgiError, Variables, guarded
from proxy.errors import ProxyError
from proxy.keys import CLIENTS, CLOCK, GATE, METRICS, POOL, SETTINGS
from proxy.logging import bind_request, end_request
from proxy.settings import FastAgiSettings

log = structlog.get_logger("proxy.fastagi")
T = TypeVar("T")
SESSION_TASK = "fastagi-session"
FRONT_NAME = "fastagi"  # the decision rows' `front` (sql/018)

def _peer(writer: asyncio.StreamWriter) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    name = writer.get_extra_info("peername")
    try:
        address = ipaddress.ip_address(name[0])
    except (TypeError, ValueError, IndexError):
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack socket's IPv4 peer
    return address


class Listener:
    """The FastAGI server: one task per session, all of them known, so none outlives
    `close` (and tests can wait for them: `drained`)."""

    def __init__(self, app: web.Application, settings: FastAgiSettings) -> None:
        self._app, self._settings = app, settings
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        assert self._settings.listen is not None
        host, port = self._settings.listen
        # The reader's limit bounds one line to the whole header's size.
        self._server = await asyncio.start_server(
            self._session, host, port, limit=self._settings.max_header_bytes)

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def sessions(self) -> int:
        return len(self._tasks)

    async def drained(self) -> None:
        """Return once every session running now has ended."""
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    async def close(self) -> None:
        """Stop listening; sessions under way get one read timeout to finish, then are
        cancelled: a decision they started is still committed and its answer kept for the
        call_id (decisions.decide), waited for here for one more read timeout."""
        if self._server is None:
            return
        self._server.close()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks),
                                            timeout=self._settings.read_timeout_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await decisions.settled(self._settings.read_timeout_seconds)
        await self._server.wait_closed()
        self._server = None

    async def _session(self, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        task.set_name(SESSION_TASK)
        self._tasks.add(task)
        started = time.perf_counter()
        request_id = secrets.token_hex(16)  # the decision row's, and every log line's
        token = bind_request(request_id, generated=True)
        peer, end, script = _peer(writer), "answered", None
        try:
            if peer is None or not any(peer in net for net in self._settings.allow_peers):
                raise agi.Dropped("peer_not_allowed")
            if len(self._tasks) > self._settings.max_sessions:
                raise agi.Dropped("too_many_sessions")
            header = await self._timed(agi.read_header(
                reader, max_bytes=self._settings.max_header_bytes,
                max_lines=self._settings.max_header_lines))
            script = header.script[:32]
            await self._answer(header, request_id, reader, writer)
        except agi.Dropped as exc:
            end = exc.why
        except asyncio.CancelledError:
            end = "cancelled"
            raise
        except Exception:
            log.exception("fastagi_crashed")
            end = "crashed"
        finally:
            await self._close(writer)
            self._tasks.discard(task)
            self._app[METRICS].fastagi_sessions.labels(end).inc()
            (log.info if end == "answered" else log.warning)(
                "fastagi_session", script=script, end=end, peer=str(peer),
                latency_ms=round((time.perf_counter() - started) * 1000, 3))
            end_request(token)

    async def _timed(self, read: Awaitable[T]) -> T:
        """Every read: the header as a whole, and each answer to a command, within
        fastagi.read_timeout_seconds, so a stalled peer cannot hold a session."""
        try:
            async with asyncio.timeout(self._settings.read_timeout_seconds):
                return await read
        except TimeoutError as exc:
            raise agi.Dropped("timeout") from exc

    async def _close(self, writer: asyncio.StreamWriter) -> None:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), self._settings.read_timeout_seconds)
        except (TimeoutError, OSError):  # a peer that reads nothing: no goodbye
            writer.transport.abort()

    async def _answer(self, header: agi.Header, request_id: str,
                      reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if header.script == agi_requests.OUTCOME:
            await self._send(reader, writer, await self._outcome(header))
            return
        decided = None
        try:
            if header.script != agi_requests.DECIDE:
                raise AgiError("AGI_BAD_REQUEST", "agi_network_script: expected decide or "
                                                  "outcome (agi://gate:4573/decide)")
            decided = await guarded(self._decide(header, request_id))
            retry = answer.retry_after_seconds(decided.answer, self._app[CLOCK]())
            variables = agi_answers.decision_variables(decided.answer, retry)
        except AgiError as exc:
            variables = agi_answers.error_variables(exc)
        try:
            await self._send(reader, writer, variables)
        except agi.Dropped as exc:
            # N5/N6: the channel hung up while the AGI ran, so the dialplan dials nobody
            # under this decision: a new allow gives back what it used up.
            if (exc.why == "hangup" and decided is not None and decided.new
                    and decided.answer["decision"] == "allow"):
                await self._app[GATE].give_back(decided.answer["decision_id"],
                                                "not_reached", "hangup")
            raise

    async def _decide(self, header: agi.Header, request_id: str) -> decisions.Decided:
        dial, named = agi_requests.dial_request(header)
        client = await self._client(named)
        return await decisions.decide(self._app, client, dial, request_id, FRONT_NAME)

    async def _outcome(self, header: agi.Header) -> Variables:
        try:
            decision_id, status, named = agi_requests.outcome_request(header)
            client = await guarded(self._client(named))
            stored = await guarded(decisions.record_outcome(self._app, client, decision_id,
                                                             status))
        except (AgiError, ProxyError) as exc:
            failure = exc if isinstance(exc, AgiError) else agi_answers.refusal(exc)
            return agi_answers.outcome_error_variables(failure)
        return agi_answers.outcome_variables(stored)

    async def _client(self, named: str | None) -> store.Client:
        """The client a request decides as: the one it names, if this listener serves it,
        else the listener's own. Unknown or disabled: refused, never decided as."""
        wanted = named or self._settings.client
        if wanted is None:
            raise AgiError("AGI_CLIENT_UNKNOWN", "no client: set fastagi.client, or name one "
                                                 "of fastagi.clients with client=")
        if wanted != self._settings.client and wanted not in self._settings.clients:
            raise AgiError("AGI_CLIENT_UNKNOWN", "client: not one this listener serves "
                                                 "(fastagi.client, fastagi.clients)")
        found = await self._app[CLIENTS].find(self._app[POOL], wanted)
        if found is None:
            raise AgiError("AGI_CLIENT_UNKNOWN", "client: unknown or disabled")
        return found

    async def _send(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    variables: Variables) -> None:
        for name, value in variables:
            reply = await self._timed(agi.command(
                reader, writer, agi.set_variable(name, value),
                max_lines=self._settings.max_header_lines))
            if reply.hung_up:
                raise agi.Dropped("hangup")
            if reply.code != 200:
                raise agi.Dropped("command_refused")


LISTENER: web.AppKey[Listener] = web.AppKey("fastagi")


async def _listener_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS].rules.fastagi
    listener = Listener(app, settings)
    await listener.start()
    app[LISTENER] = listener
    log.info("fastagi_listening", host=settings.listen[0] if settings.listen else None,
             port=listener.port)
    yield
    await listener.close()


def install(app: web.Application) -> None:
    """Start the listener with the application when `fastagi.listen` is set (after the pool,
    batchers and spool it decides with; stopped before them)."""
    if app[SETTINGS].rules.fastagi.listen is not None:
        app.cleanup_ctx.append(_listener_ctx)
