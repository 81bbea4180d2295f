"""Import files read as they stream in: CSV (a header row; the columns of the single-record
API, topics `;`-separated, evidence as columns prefixed `evidence.`) or NDJSON (one JSON
object of the single-record API per line). Each row comes out in the single-record API's JSON
shape, with the line it starts on, so one parser per kind judges both (proxy/records.py).
A problem with the file as a whole (not UTF-8, a header naming no field, a line over
MAX_LINE_BYTES) is BadInput; a problem with one row is that row's error."""

from __future__ import annotations

import codecs
import csv
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from proxy.errors import BadInput, ProxyError
from proxy.fields import load_json

Format = Literal["csv", "ndjson"]
MAX_LINE_BYTES = 1 << 20  # one row; a longer one is no row of a registry
BOOLEAN_COLUMNS = frozenset({"opt_out_offered", "published_for_marketing"})
_NESTED = {"evidence": None, "requested_for": ("start", "end")}


@dataclass(frozen=True, slots=True)
class Row:
    line: int
    data: dict[str, Any] | None  # the single-record API's JSON object
    error: ProxyError | None = None  # what made it no row at all (malformed JSON, ...)


class _Lines:
    """Bytes in, whole lines out (with their number), decoded as UTF-8 (a BOM is dropped)."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")
        self._rest = ""
        self.number = 0  # lines handed out so far

    def feed(self, chunk: bytes, final: bool = False) -> list[str]:
        try:
            text = self._rest + self._decoder.decode(chunk, final)
        except UnicodeDecodeError as exc:
            raise BadInput(f"the file is not UTF-8 (after line {self.number})") from exc
        cut = len(text) if final else text.rfind("\n") + 1
        self._rest = text[cut:]
        if len(self._rest) > MAX_LINE_BYTES:
            raise BadInput(f"line {self.number + 1} is longer than {MAX_LINE_BYTES} bytes")
        if not cut:
            return []
        lines = text[:cut].split("\n")
        if lines[-1] == "":
            lines.pop()
        return lines


async def read_rows(body: AsyncIterator[bytes], fmt: Format, fields: tuple[str, ...]
                    ) -> AsyncIterator[list[Row]]:
    """The file's rows, a chunk's worth at a time."""
    reader = _CsvRows(fields) if fmt == "csv" else _NdjsonRows()
    lines = _Lines()
    async for chunk in body:
        batch = reader.take(lines.feed(chunk), lines)
        if batch:
            yield batch
    batch = reader.take(lines.feed(b"", final=True), lines) + reader.finish(lines)
    if batch:
        yield batch
    if fmt == "csv" and not reader.started:
        raise BadInput("the file is empty; a CSV import starts with a header row")


class _NdjsonRows:
    started = True

    def take(self, lines: list[str], counter: _Lines) -> list[Row]:
        out = []
        for text in lines:
            counter.number += 1
            if not text.strip():
                continue
            try:
                data = load_json(text.encode())
            except BadInput as exc:
                out.append(Row(counter.number, None, exc))
                continue
            if not isinstance(data, dict):
                out.append(Row(counter.number, None, BadInput("expected a JSON object")))
                continue
            out.append(Row(counter.number, data))
        return out

    def finish(self, _counter: _Lines) -> list[Row]:
        return []


class _CsvRows:
    """CSV records may span lines (a quoted newline): lines are gathered until their quotes
    pair up, so a record is never cut at a chunk's end."""

    def __init__(self, fields: tuple[str, ...]) -> None:
        self._fields = fields
        self._header: list[tuple[str, str | None]] | None = None
        self._pending: list[str] = []
        self._pending_start = 0
        self._quotes = 0
        self.started = False

    def take(self, lines: list[str], counter: _Lines) -> list[Row]:
        records: list[tuple[int, str]] = []
        for text in lines:
            counter.number += 1
            if not self._pending:
                self._pending_start = counter.number
            self._pending.append(text)
            self._quotes += text.count('"')
            if self._quotes % 2 == 0:
                records.append((self._pending_start, "\n".join(self._pending)))
                self._pending, self._quotes = [], 0
            elif sum(len(t) for t in self._pending) > MAX_LINE_BYTES:
                raise BadInput(f"line {self._pending_start}: a quoted cell runs on for more "
                               f"than {MAX_LINE_BYTES} bytes")
        return self._rows(records)

    def finish(self, _counter: _Lines) -> list[Row]:
        if self._pending:
            raise BadInput(f"line {self._pending_start}: a quoted cell is never closed")
        return []

    def _rows(self, records: list[tuple[int, str]]) -> list[Row]:
        out = []
        for line, text in records:
            if "\x00" in text:
                out.append(Row(line, None, BadInput("contains a NUL character")))
                continue
            try:
                cells = next(csv.reader((text,)), [])
            except csv.Error as exc:
                out.append(Row(line, None, BadInput(f"not a CSV row: {exc}")))
                continue
            if not any(cells):
                continue  # a blank line
            if self._header is None:
                self._header = self._read_header(cells)
                self.started = True
                continue
            out.append(self._row(line, cells))
        return out

    def _read_header(self, cells: list[str]) -> list[tuple[str, str | None]]:
        header: list[tuple[str, str | None]] = []
        for cell in cells:
            name = cell.strip()
            top, dot, sub = name.partition(".")
            if dot and top in _NESTED and top in self._fields and sub and (
                    _NESTED[top] is None or sub in (_NESTED[top] or ())):
                header.append((top, sub))
            elif not dot and name in self._fields and name not in _NESTED:
                header.append((name, None))
            else:
                raise BadInput("not a column of this kind (see the import format in the "
                               "README)", name or None)
        if len(set(header)) != len(header):
            raise BadInput("a column appears twice in the header")
        return header

    def _row(self, line: int, cells: list[str]) -> Row:
        assert self._header is not None
        if len(cells) != len(self._header):
            return Row(line, None, BadInput(
                f"expected {len(self._header)} cells as in the header, found {len(cells)}"))
        data: dict[str, Any] = {}
        for (name, sub), cell in zip(self._header, cells, strict=True):
            if cell == "":
                continue  # an empty cell: the field is absent
            if sub is not None:
                data.setdefault(name, {})[sub] = cell
            elif name == "topics":
                data[name] = [t.strip() for t in cell.split(";") if t.strip()]
            elif name in BOOLEAN_COLUMNS:
                data[name] = {"true": True, "false": False}.get(cell.strip().lower(), cell)
            else:
                data[name] = cell
        return Row(line, data)
