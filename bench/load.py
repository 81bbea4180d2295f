"""What both load generators are given and what they report."""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    url: str  # scheme://host:port
    path: str
    authorization: str
    bodies_path: Path
    # A field appended to every body with a value of its own (the dial API's call_id: a
    # repeated one would be answered from the first decision instead of deciding).
    unique_field: str | None = None


@dataclass(frozen=True, slots=True)
class LoadResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non2xx: int  # answers with status >= 400 (the proxy's denials are expected here)
    socket_errors: int  # connect/read/write errors and timeouts: should be 0
    loadgen_cpu_seconds: float

    @property
    def non2xx_fraction(self) -> float:
        return self.non2xx / self.requests if self.requests else 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"non2xx_fraction": round(self.non2xx_fraction, 4)}


def basic_auth(user: str, password: str) -> str:
    """The Authorization header value, built once (aiohttp 3.14 deprecates BasicAuth)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (q in 0..100)."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]
