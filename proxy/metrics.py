"""Prometheus metrics, one registry per application (no process-wide globals)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any, Generic, TypeVar

import asyncpg
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from proxy.batch import Batcher, BatchSizes
from proxy.optout_spool import OptOutSpool

M = TypeVar("M", Counter, Histogram)


class Labelled(Generic[M]):
    """A labelled metric whose children are looked up once: `labels()` takes a lock and
    validates its arguments, on the hot path three times a request."""

    def __init__(self, metric: M) -> None:
        self.metric: M = metric
        self._children: dict[tuple[str, ...], M] = {}

    def labels(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child


_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Labelled(Counter(
            "consent_proxy_decisions",
            "Gate decisions by way in (front), channel, verdict and reason code.",
            ["front", "channel", "decision", "reason"], registry=self.registry))
        self.upstream_responses = Labelled(Counter(
            "consent_proxy_upstream_responses",
            "Upstream answers by front and HTTP status ('unreachable' / 'timeout' when there "
            "was none).", ["front", "status"], registry=self.registry))
        self.request_latency = Labelled(Histogram(
            "consent_proxy_request_seconds", "Time to answer a request, by route and method.",
            ["route", "method"], buckets=_LATENCY_BUCKETS, registry=self.registry))
        self.upstream_latency = Labelled(Histogram(
            "consent_proxy_upstream_seconds", "Time the upstream took to answer, by front.",
            ["front"], buckets=_LATENCY_BUCKETS, registry=self.registry))
        self.pool_in_use = Gauge(
            "consent_proxy_db_pool_in_use", "Database connections currently checked out.",
            registry=self.registry)
        self.pool_size = Gauge(
            "consent_proxy_db_pool_size", "Database connections open in the pool.",
            registry=self.registry)
        self.fastagi_sessions = Labelled(Counter(
            "consent_proxy_fastagi_sessions",
            "FastAGI sessions by how they ended ('answered', or why they were dropped).",
            ["end"], registry=self.registry))
        self.optout_spool_entries = Gauge(
            "consent_proxy_optout_spool_entries",
            "STOP replies spooled during a database outage and not yet applied.",
            registry=self.registry)

    def watch_pool(self, pool: asyncpg.Pool) -> None:
        self.pool_in_use.set_function(lambda: pool.get_size() - pool.get_idle_size())
        self.pool_size.set_function(pool.get_size)

    def watch_spool(self, spool: OptOutSpool) -> None:
        self.optout_spool_entries.set_function(lambda: spool.entries)

    def watch_batchers(self, *batchers: Batcher[Any]) -> None:
        self.registry.register(_BatchCollector(batchers))

    def render(self) -> web.Response:
        response = web.Response(body=generate_latest(self.registry))
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        response.charset = "utf-8"
        return response


class _BatchCollector(Collector):
    """consent_proxy_batch_items{batcher}: items per round trip of the group fetch (lookups)
    and the group commit (decision and outcome rows), read from the batchers' own counts at
    scrape time. _sum / _count is how many requests share one query or one commit."""

    def __init__(self, batchers: Sequence[Batcher[Any]]) -> None:
        self._batchers = batchers

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            "consent_proxy_batch_items",
            "Items per round trip of a batcher (group-fetch: lookups; group-commit: decision "
            "and outcome rows).", labels=["batcher"])
        for batcher in self._batchers:
            sizes = batcher.sizes
            cumulative = list(itertools.accumulate(sizes.buckets))
            bounds = [*(str(float(b)) for b in BatchSizes.BOUNDS), "+Inf"]
            family.add_metric([batcher.name], list(zip(bounds, cumulative, strict=True)),
                              sum_value=sizes.items)
        yield family
