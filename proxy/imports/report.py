"""What an import answers: counts, and per bad row its line, field and message (JSON or CSV)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

# Errors listed in a report; all of them are counted (`errors`).
MAX_LISTED_ERRORS = 1000


@dataclass(frozen=True, slots=True)
class RowError:
    line: int  # the file's line the row starts on (1: the header of a CSV file)
    field: str | None  # None: the row as a whole
    message: str


@dataclass(frozen=True, slots=True)
class ImportReport:
    kind: str
    fmt: str
    mode: str
    dry_run: bool
    committed: bool  # False for a dry run and for a file with errors: nothing changed
    rows: int
    inserted: int  # would be inserted, on a dry run or a file with errors
    updated: int
    skipped: int  # repeated source_id (or subject) with the same content
    errors: tuple[RowError, ...] = ()
    error_count: int = 0  # every bad row; `errors` lists the first MAX_LISTED_ERRORS

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "format": self.fmt, "mode": self.mode, "dry_run": self.dry_run,
            "committed": self.committed, "rows": self.rows, "inserted": self.inserted,
            "updated": self.updated, "skipped": self.skipped, "errors": self.error_count,
            "errors_listed": [{"line": e.line, "field": e.field, "message": e.message}
                              for e in self.errors],
        }

    def errors_csv(self) -> str:
        """line,field,message: one row per listed error."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(("line", "field", "message"))
        writer.writerows((e.line, e.field or "", e.message) for e in self.errors)
        return out.getvalue()
