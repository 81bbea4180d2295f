"""How big each benchmark is: `full` is the issue's sizes, `tiny` finishes in seconds."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Size:
    name: str
    # Load 1: numbers the load generator draws from. Each tenth of them is one category
    # (seven allowed, one wrong-channel consent, one objection, one nothing on file), so the
    # consent table holds load_numbers * 0.8 rows: the "small" store of item 5.
    load_numbers: int
    connections: int
    warmup_seconds: float
    round_seconds: float
    rounds: int
    unloaded_seconds: float  # one connection: the gate's own latency without queueing
    engine_decisions: int
    scrub_numbers: int
    store_large: int  # consent rows for the second measurement of item 5
    latency_samples: int
    sip_calls: int  # item 6: calls per round through each Kamailio (rounds as above)
    import_rows: int  # consents in the bulk import of item 7

    @property
    def store_small(self) -> int:
        return self.load_numbers * 8 // 10


SIZES = {
    "full": Size(
        name="full", load_numbers=12_500, connections=32, warmup_seconds=5, round_seconds=15,
        rounds=3, unloaded_seconds=5, engine_decisions=300_000, scrub_numbers=1_000_000,
        store_large=10_000_000, latency_samples=2_000, sip_calls=200,
        import_rows=1_000_000,
    ),
    "tiny": Size(
        name="tiny", load_numbers=1_250, connections=32, warmup_seconds=1, round_seconds=2,
        rounds=1, unloaded_seconds=1, engine_decisions=20_000, scrub_numbers=2_000,
        store_large=10_000, latency_samples=200, sip_calls=20,
        import_rows=5_000,
    ),
}
