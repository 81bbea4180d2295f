"""How every front's upstream classifies a provider that does not answer whole
(proxy/upstream.py): no connection is "unreachable" (nothing was sent, N6 gives back); a
connection broken once the request went out, or an answer larger than any provider gives, is
"unknown" (UpstreamTimeout: what it used stays used). Against a real socket server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from proxy import upstream

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _request_read(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def _ask(session: aiohttp.ClientSession, serve: Serve) -> upstream.UpstreamResponse:
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        return await upstream.exchange(session, "POST", f"http://127.0.0.1:{port}/x",
                                       headers={}, data=b"{}",
                                       within=aiohttp.ClientTimeout(total=5))
    finally:
        server.close()


async def test_a_whole_answer_is_read(session: aiohttp.ClientSession) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request_read(reader)
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 11\r\nConnection: close\r\n\r\n{\"sid\": 1}\n")
        await writer.drain()
        writer.close()

    answer = await _ask(session, serve)
    assert (answer.status, answer.json()) == (201, {"sid": 1})


async def test_no_connection_is_unreachable(session: aiohttp.ClientSession) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(upstream.UpstreamUnreachable):
        await upstream.exchange(session, "POST", f"http://127.0.0.1:{port}/x", headers={},
                                data=b"{}", within=aiohttp.ClientTimeout(total=5))


async def test_a_connection_closed_after_the_request_is_unknown(
        session: aiohttp.ClientSession) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request_read(reader)  # the request arrived: it may have been acted on
        writer.close()

    with pytest.raises(upstream.UpstreamTimeout):
        await _ask(session, serve)


async def test_an_answer_cut_off_is_unknown(session: aiohttp.ClientSession) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request_read(reader)
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 100\r\n\r\n{\"sid\":")
        await writer.drain()
        writer.close()

    with pytest.raises(upstream.UpstreamTimeout):
        await _ask(session, serve)


async def test_an_answer_larger_than_any_provider_gives_is_unknown(
        session: aiohttp.ClientSession) -> None:
    size = upstream.MAX_ANSWER_BYTES + 1

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request_read(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size // 65536 + 1):
            writer.write(b"x" * 65536)
            await writer.drain()
        writer.close()

    with pytest.raises(upstream.UpstreamTimeout, match="larger"):
        await _ask(session, serve)
