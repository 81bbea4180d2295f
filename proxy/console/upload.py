"""The import page: upload a file, read the dry run's report, then commit the same file.

The upload is kept, between the dry run and the commit, in a private directory of this
process (one pending file per user, removed when committed, replaced by the user's next
upload, and all removed when the proxy stops), so the officer commits exactly what was
checked without sending it twice."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

from aiohttp import BodyPartReader, MultipartReader, web

from proxy.console import auth
from proxy.console.pages import choice, form, render
from proxy.errors import BadInput, NotFound
from proxy.imports import KINDS, ImportReport, run_import
from proxy.keys import CLOCK, POOL

UPLOADS = web.AppKey("console_uploads", Path)
# An upload's reader, its CSRF field already read by the console's middleware.
MULTIPART = web.RequestKey("console_multipart", MultipartReader)
MODES = ("insert", "upsert")
CHUNK = 1 << 16
# An upload's id: a random token, then what was checked: kind, mode and format.
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}-[a-z]{1,20}-(insert|upsert)-(csv|ndjson)")


async def uploads_ctx(app: web.Application) -> AsyncIterator[None]:
    directory = Path(tempfile.mkdtemp(prefix="consent-proxy-console-uploads-"))  # mode 0700
    app[UPLOADS] = directory
    yield
    shutil.rmtree(directory, ignore_errors=True)


def _format_of(filename: str | None) -> Literal["csv", "ndjson"]:
    name = (filename or "").lower()
    return "ndjson" if name.endswith((".ndjson", ".jsonl")) else "csv"


def _pending(request: web.Request, user: str) -> list[Path]:
    return sorted(request.config_dict[UPLOADS].glob(f"{user}.*.upload"))


async def _read_file(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as fh:
        while chunk := await asyncio.to_thread(fh.read, CHUNK):
            yield chunk


@auth.requires("officer")
async def import_form(request: web.Request) -> web.Response:
    return render(request, "import.html", {"kinds": tuple(KINDS), "modes": MODES,
                                           "report": None, "upload_id": None})


async def _field(reader: MultipartReader, name: str) -> BodyPartReader:
    part = await reader.next()
    if not isinstance(part, BodyPartReader) or part.name != name:
        raise BadInput("the form's fields arrived out of order (csrf, kind, mode, file)", name)
    return part


async def _text_field(reader: MultipartReader, name: str) -> str:
    part = await _field(reader, name)
    return (await part.read(decode=True))[:100].decode("utf-8", "replace")


@auth.requires("officer")
async def import_file(request: web.Request) -> web.Response:
    """The dry run of an uploaded file: the report, and the commit button when it is clean."""
    user = request[auth.USER]
    reader = request.get(MULTIPART)
    if reader is None:
        raise BadInput("expected a file upload (multipart/form-data)", "file")
    kind = choice({"kind": await _text_field(reader, "kind")}, "kind", tuple(KINDS))
    mode = choice({"mode": await _text_field(reader, "mode")}, "mode", MODES)
    part = await _field(reader, "file")
    fmt = _format_of(part.filename)
    for old in _pending(request, user.name):
        old.unlink(missing_ok=True)  # one pending upload per user
    upload_id = f"{secrets.token_hex(16)}-{kind}-{mode}-{fmt}"
    path = request.config_dict[UPLOADS] / f"{user.name}.{upload_id}.upload"
    size = 0
    with path.open("wb") as fh:
        while chunk := await part.read_chunk(CHUNK):
            size += len(chunk)
            await asyncio.to_thread(fh.write, chunk)
    if size == 0:
        path.unlink(missing_ok=True)
        raise BadInput("the file is empty", "file")
    report = await _run(request, path, kind or "", mode or "insert", fmt, dry_run=True)
    if report.error_count:
        path.unlink(missing_ok=True)
    return _report_page(request, report, upload_id if not report.error_count else None,
                        status=422 if report.error_count else 200)


async def _run(request: web.Request, path: Path, kind: str, mode: str, fmt: str, *,
               dry_run: bool) -> ImportReport:
    return await run_import(
        request.config_dict[POOL], kind=kind, body=_read_file(path),
        fmt="ndjson" if fmt == "ndjson" else "csv", dry_run=dry_run,
        mode="upsert" if mode == "upsert" else "insert", actor=request[auth.USER].actor,
        now=request.config_dict[CLOCK]())


def _report_page(request: web.Request, report: ImportReport, upload_id: str | None, *,
                 status: int = 200) -> web.Response:
    return render(request, "import.html", {
        "kinds": tuple(KINDS), "modes": MODES, "report": report, "upload_id": upload_id},
        status=status)


@auth.requires("officer")
async def commit_import(request: web.Request) -> web.Response:
    """Commit the file this user checked last, as checked (all or nothing)."""
    user = request[auth.USER]
    data = await form(request)
    upload_id = data.get("upload", "")
    if not _UPLOAD_ID.fullmatch(upload_id):
        raise BadInput("not an upload of this console", "upload")
    _token, kind, mode, fmt = upload_id.split("-")  # what the dry run checked
    path = request.config_dict[UPLOADS] / f"{user.name}.{upload_id}.upload"
    if not path.exists():
        raise NotFound("this upload is gone (committed already, replaced by a newer upload, "
                       "or the proxy restarted); upload the file again", "upload")
    try:
        report = await _run(request, path, kind, mode, fmt, dry_run=False)
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
    return _report_page(request, report, None, status=422 if report.error_count else 200)
