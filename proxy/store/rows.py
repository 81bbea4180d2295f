"""Helpers the store's modules share: rows as the JSON the admin API answers with."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import asyncpg


def jsonable(row: asyncpg.Record, drop: Sequence[str] = ()) -> dict[str, Any]:
    """A row as a JSON object, instants in ISO 8601, without the columns in `drop`."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key in drop:
            continue
        out[key] = value.isoformat() if isinstance(value, dt.datetime) else value
    return out


def decision_json(row: asyncpg.Record) -> dict[str, Any]:
    """A decision row as the admin API answers it: never the subject's hash. The client is
    named by `client_id`, and as `account_sid` too, the name the admin API answered with
    before the column was renamed (sql/014)."""
    out = jsonable(row, drop=("subject_hash",))
    if "client_id" in out:
        out["account_sid"] = out["client_id"]
    return out
