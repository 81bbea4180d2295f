"""`POST /admin/v1/imports` and `GET /admin/v1/exports`: the HTTP side of proxy/imports/."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Literal

import structlog
from aiohttp import web

from proxy.errors import BadInput, RequestTimeout
from proxy.imports.export import export_rows
from proxy.imports.run import kind_of, run_import
from proxy.keys import CLOCK, POOL, SETTINGS
from proxy.records import ADMIN_ACTOR

log = structlog.get_logger(__name__)
CHUNK = 1 << 16
_CONTENT_TYPES = {"text/csv": "csv", "application/x-ndjson": "ndjson",
                  "application/ndjson": "ndjson", "application/jsonl": "ndjson"}


def _query(request: web.Request, allowed: set[str]) -> Any:
    query = request.rel_url.query
    unknown = set(query) - allowed
    if unknown:
        raise BadInput("unknown query parameter", sorted(unknown)[0])
    return query


def _choice(query: Any, key: str, options: tuple[str, ...], default: str) -> str:
    value = query.get(key, default)
    if value not in options:
        raise BadInput(f"expected one of {', '.join(options)}", key)
    result: str = value
    return result


def _import_format(request: web.Request, query: Any) -> Literal["csv", "ndjson"]:
    if "format" in query:
        return "csv" if _choice(query, "format", ("csv", "ndjson"), "csv") == "csv" \
            else "ndjson"
    found = _CONTENT_TYPES.get(request.content_type)
    if found is None:
        raise BadInput("send text/csv or application/x-ndjson (or name ?format=)", "format")
    return "csv" if found == "csv" else "ndjson"


async def _chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The upload as it arrives; a sender that stalls longer than limits.body_timeout_seconds
    between chunks is cut off (RequestTimeout), as for any body (proxy/body.py)."""
    timeout = request.app[SETTINGS].rules.body_timeout_seconds
    while True:
        try:
            async with asyncio.timeout(timeout):
                chunk = await request.content.readany()
        except TimeoutError as exc:
            raise RequestTimeout(f"the upload stalled for {timeout:g} seconds "
                                 "(limits.body_timeout_seconds)") from exc
        if not chunk:
            return
        yield chunk


async def post_import(request: web.Request) -> web.Response:
    """The report: 200 when committed or a dry run, 422 with the report when rows are wrong
    (nothing was written). `Accept: text/csv` answers the row errors as CSV instead."""
    query = _query(request, {"kind", "dry_run", "mode", "format"})
    if not query.get("kind"):
        raise BadInput("required query parameter is missing", "kind")
    kind = kind_of(query["kind"]).name
    dry_run = _choice(query, "dry_run", ("true", "false"), "false") == "true"
    mode: Literal["insert", "upsert"] = \
        "upsert" if _choice(query, "mode", ("insert", "upsert"), "insert") == "upsert" \
        else "insert"
    fmt = _import_format(request, query)
    report = await run_import(request.app[POOL], kind=kind, body=_chunks(request), fmt=fmt,
                              dry_run=dry_run, mode=mode, actor=ADMIN_ACTOR,
                              now=request.app[CLOCK]())
    status = 422 if report.error_count else 200
    if "text/csv" in request.headers.get("Accept", ""):
        return web.Response(text=report.errors_csv(), status=status, content_type="text/csv")
    body = report.to_json()
    if report.error_count:
        return web.json_response(
            {"error": f"{report.error_count} rows are wrong; nothing was imported",
             "field": None, "report": body}, status=422)
    return web.json_response(body)


async def get_export(request: web.Request) -> web.StreamResponse:
    query = _query(request, {"kind", "organisation", "format"})
    if not query.get("kind"):
        raise BadInput("required query parameter is missing", "kind")
    kind = kind_of(query["kind"]).name
    fmt: Literal["csv", "ndjson"] = \
        "csv" if _choice(query, "format", ("csv", "ndjson"), "csv") == "csv" else "ndjson"
    rows = export_rows(request.app[POOL], kind=kind,
                       organisation=query.get("organisation") or None, fmt=fmt)
    first = await anext(rows, b"")  # a bad query is refused before the status line is sent
    content_type = "text/csv" if fmt == "csv" else "application/x-ndjson"
    response = web.StreamResponse(headers={
        "Content-Type": f"{content_type}; charset=utf-8",
        "Content-Disposition": f'attachment; filename="{kind}.{fmt}"'})
    await response.prepare(request)
    total = 0
    try:
        await response.write(first)
        async for chunk in rows:
            total += len(chunk)
            await response.write(chunk)
    except Exception as exc:
        # The status line is gone: cut the stream, so a partial export is never taken for
        # a whole one (the chunked body never terminates).
        log.warning("export_aborted", kind=kind, error=type(exc).__name__)
        await rows.aclose()
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    log.info("export_done", kind=kind, format=fmt, bytes=total + len(first))
    return response
