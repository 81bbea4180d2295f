"""Bulk import and export of the registry: consents, relationships, objections and subjects,
as CSV or NDJSON in the single-record API's fields. An import is all or nothing (one
transaction, staged with COPY); an export re-imports cleanly."""

from __future__ import annotations

from proxy.imports.export import export_rows
from proxy.imports.kinds import KINDS
from proxy.imports.report import MAX_LISTED_ERRORS, ImportReport, RowError
from proxy.imports.run import run_import

__all__ = ["KINDS", "MAX_LISTED_ERRORS", "ImportReport", "RowError", "export_rows",
           "run_import"]
