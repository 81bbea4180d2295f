"""The consent-proxy benchmark suite: `make bench` (or `python -m bench.run`).

Benchmarks are not tests: nothing here asserts timings. `tests/test_bench_smoke.py` only checks
that a tiny run completes and writes its results.
"""
