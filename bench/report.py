"""The results of a run: one plain-text table, latest.json and latest.png."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The targets. "Not meaningfully" for item 5 is made concrete as: the median decision
# at 10,000,000 rows takes at most 1.5 times as long as at 10,000.
THROUGHPUT_RATIO_MIN = 0.5
ADDED_P50_MAX_MS = 2.0
ADDED_P99_MAX_MS = 10.0
ENGINE_MIN = 50_000
SCRUB_RATIO_MIN = 0.25
SCRUB_MIN = 100_000
PEAK_RSS_MAX_MB = 150.0
STORE_GROWTH_MAX = 1.5
# 1,000,000 consents imported within 2 minutes.
IMPORT_MIN = 1_000_000 / 120
# CPU of processes outside the bench (and the kernel's own) above which a run is flagged.
OTHER_CPU_WARN = 20.0
# Steal time (percent of all cores' time the hypervisor took) above which a run is flagged:
# on 2026-12-02 it was 34-35 % under load and 2 % idle.
STEAL_WARN = 5.0

Results = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Row:
    metric: str
    value: str
    target: str = ""
    passed: bool | None = None  # None: informative, no target

    @property
    def verdict(self) -> str:
        return "" if self.passed is None else ("pass" if self.passed else "MISS")


def _n(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def _ms(value: float) -> str:
    return f"{value:,.2f} ms"


def _gate_rows(g: Results) -> list[Row]:
    bare, proxy, idle = g["bare"], g["proxy"], g["unloaded"]
    return [
        Row("1 gate: bare forwarder, throughput", f"{_n(bare['rps'])} req/s"),
        Row("1 gate: consent-proxy, throughput", f"{_n(proxy['rps'])} req/s"),
        Row("1 gate: throughput proxy / bare", _n(g["throughput_ratio"], 2),
            f">= {THROUGHPUT_RATIO_MIN}", g["throughput_ratio"] >= THROUGHPUT_RATIO_MIN),
        Row("1 gate: bare p50 / p99", f"{_ms(bare['p50_ms'])} / {_ms(bare['p99_ms'])}"),
        Row("1 gate: proxy p50 / p99", f"{_ms(proxy['p50_ms'])} / {_ms(proxy['p99_ms'])}"),
        Row("1 gate: added p50", _ms(g["added_p50_ms"]), f"<= {ADDED_P50_MAX_MS:g} ms",
            g["added_p50_ms"] <= ADDED_P50_MAX_MS),
        Row("1 gate: added p99", _ms(g["added_p99_ms"]), f"<= {ADDED_P99_MAX_MS:g} ms",
            g["added_p99_ms"] <= ADDED_P99_MAX_MS),
        Row("1 gate: added p50 / p99 at 1 connection",
            f"{_ms(idle['added_p50_ms'])} / {_ms(idle['added_p99_ms'])}"),
        *([Row("1 gate: PostgreSQL one-row commit p50 / p99 / max",
               f"{_ms(c['p50_ms'])} / {_ms(c['p99_ms'])} / {_ms(c['max_ms'])}")]
          if (c := g.get("postgres_commit")) else []),
    ]


def _engine_rows(e: Results) -> list[Row]:
    return [Row("2 engine: decisions/s, one core", _n(e["decisions_per_s"]),
                f">= {_n(ENGINE_MIN)}", e["decisions_per_s"] >= ENGINE_MIN)]


def _scrub_rows(s: Results) -> list[Row]:
    n = _n(s["numbers"])
    return [
        Row(f"3 scrub: numbers/s ({n} numbers)", _n(s["numbers_per_s"]), f">= {_n(SCRUB_MIN)}",
            s["numbers_per_s"] >= SCRUB_MIN),
        Row("3 scrub: raw COPY of the same file, rows/s", _n(s["copy_rows_per_s"])),
        Row("3 scrub: scrub / COPY", _n(s["ratio"], 3), f">= {SCRUB_RATIO_MIN}",
            s["ratio"] >= SCRUB_RATIO_MIN),
    ]


def _memory_rows(m: Results) -> list[Row]:
    return [Row("4 memory: proxy peak RSS under load 1", f"{m['peak_rss_mb']:.1f} MiB",
                f"<= {PEAK_RSS_MAX_MB:g} MiB", m["peak_rss_mb"] <= PEAK_RSS_MAX_MB)]


def _store_rows(s: Results) -> list[Row]:
    small, large = s["small"], s["large"]
    return [
        Row(f"5 store: decision p50 / p99, {_n(small['consent_rows'])} consents",
            f"{_ms(small['p50_ms'])} / {_ms(small['p99_ms'])}"),
        Row(f"5 store: decision p50 / p99, {_n(large['consent_rows'])} consents",
            f"{_ms(large['p50_ms'])} / {_ms(large['p99_ms'])}"),
        Row("5 store: p50 large / small", _n(s["p50_ratio"], 2), f"<= {STORE_GROWTH_MAX}",
            s["p50_ratio"] <= STORE_GROWTH_MAX),
        Row("5 store: p50 / p99, cold rows of the large store",
            f"{_ms(s['large_cold']['p50_ms'])} / {_ms(s['large_cold']['p99_ms'])}"),
        Row("5 store: consent/subject lookups at large size use indexes",
            "yes" if s["index_scans_only"] else "no (see explain)", "yes",
            bool(s["index_scans_only"])),
    ]


def _import_rows(i: Results) -> list[Row]:
    return [
        Row(f"6 import: consents/s ({_n(i['rows'])} rows, {i['seconds']:,.1f} s)",
            _n(i["rows_per_s"]), f">= {_n(IMPORT_MIN)}", i["rows_per_s"] >= IMPORT_MIN),
        Row("6 import: plain COPY of the same file, rows/s", _n(i["copy_rows_per_s"])),
        Row("6 import: import / COPY", _n(i["ratio"], 3)),
        Row("6 import: peak RSS of the importing process", f"{i['peak_rss_mb']:.1f} MiB"),
    ]


SECTIONS: dict[str, Callable[[Results], list[Row]]] = {
    "gate_overhead": _gate_rows, "engine": _engine_rows, "scrub": _scrub_rows,
    "memory": _memory_rows, "store_size": _store_rows, "registry_import": _import_rows,
}


def rows(results: Results) -> list[Row]:
    out: list[Row] = []
    for key, build in SECTIONS.items():
        section = results.get(key) or {}
        if key == "registry_import" and not section:
            continue  # results of a run from before item 6 existed
        if section.get("skipped"):
            out.append(Row(f"{key}: skipped", section.get("reason", "")))
        else:
            out.extend(build(section))
    return out


def _notes(results: Results) -> list[str]:
    meta, notes = results["meta"], []
    g = results.get("gate_overhead") or {}
    if not g.get("skipped"):
        gen = g["loadgen"]
        if gen["kind"] == "wrk":
            notes.append(f"load 1: {gen['version']}, -t{gen['threads']} -c{gen['connections']}, "
                         f"{gen['rounds']} rounds of {gen['round_seconds']:g} s per target, "
                         f"alternating, after {gen['warmup_seconds']:g} s warm-up each; medians")
        else:
            why = f" ({gen['fallback_reason']})" if gen.get("fallback_reason") else ""
            notes.append(f"load 1: Python load generator{why}, {gen['connections']} "
                         f"connections, {gen['rounds']} x {gen['round_seconds']:g} s per "
                         "target; it competes with the servers for CPU, so numbers are low")
        notes.append(f"load 1 answers >= 400: proxy {100 * g['proxy']['non2xx_fraction']:.1f} "
                     f"% (its denials, expected ~30 %), bare "
                     f"{100 * g['bare']['non2xx_fraction']:.1f} % (it forwards everything); "
                     "throughput compares all answers")
        cpu = g.get("cpu_median") or {}
        if cpu:
            notes.append("CPU in % of one core, median round: " + "; ".join(
                f"against {target}: " + ", ".join(
                    f"{k} {v:g}" for k, v in shares.items() if k not in ("machine", "steal"))
                + f" (machine: {shares['machine']:g} % of all cores busy"
                + (f", {shares['steal']:g} % stolen" if "steal" in shares else "") + ")"
                for target, shares in cpu.items()))

    s = results.get("scrub") or {}
    if not s.get("skipped"):
        cpu = s["scrub"]["cpu_percent_of_one_core"]
        notes.append(f"scrub CPU in % of one core: proxy {cpu['proxy']:g}, its "
                     f"workers {cpu.get('proxy workers', 0):g}, postgres "
                     f"{cpu['postgres']:g}, upload client {cpu['client']:g}; the file was "
                     f"{s['file_bytes'] / 1e6:.1f} MB, rows counted {s['scrub']['rows']:,}")
    st = results.get("store_size") or {}
    if st.get("round_p50_ratios"):
        notes.append(f"store: {st['method']}; p50 large / small in each round: "
                     + ", ".join(f"{r:g}" for r in st["round_p50_ratios"]))
    disturbed = _disturbed(results)
    if disturbed:
        notes.append("WARNING: processes outside the bench used CPU (other jobs on the "
                     "machine?), in % of a core: " + ", ".join(
                         f"{where} {value:g}" for where, value in disturbed.items())
                     + "; those numbers are disturbed, run again on a quiet machine")
    stolen = _stolen(results)
    if stolen:
        notes.append("WARNING: the hypervisor kept this VM's cores from it (steal time), in "
                     "% of all cores' time: " + ", ".join(
                         f"{where} {value:g}" for where, value in stolen.items())
                     + "; the VM waited for physical CPUs, so absolute numbers are low and "
                     "ratios noisy: run again when the host is quieter")
    notes.append(f"proxy log: LOG_LEVEL=info, written to {meta['proxy_log']}")
    notes.append("CPU speed check (2 M-step Python loop, best of 3): "
                 f"{meta['cpu_speed_ms_start']:g} ms at start, {meta['cpu_speed_ms_end']:g} ms "
                 "at end; this VM's speed drifts, so compare runs by their ratios")
    notes.append(f"machine: {meta['nproc']} cores ({meta['cpu_model']}), "
                 f"PostgreSQL {meta['postgres_version']} ({meta['database_server']}), "
                 f"Python {meta['python']}")
    return notes


def _cpu_key(results: Results, key: str) -> dict[str, float]:
    """One CPU share (`other`, `steal`) of every measurement that recorded it."""
    found: dict[str, float] = {}
    gate = results.get("gate_overhead") or {}
    for target, shares in (gate.get("cpu_median") or {}).items():
        if key in shares:
            found[f"load 1 against {target}"] = shares[key]
    scrub = (results.get("scrub") or {}).get("scrub") or {}
    if key in scrub.get("cpu_percent_of_one_core", {}):
        found["scrub"] = scrub["cpu_percent_of_one_core"][key]
    store = results.get("store_size") or {}
    for size in ("small", "large", "large_cold"):
        shares = (store.get(size) or {}).get("cpu_percent_of_one_core", {})
        if key in shares:
            found[f"store {size}"] = shares[key]
    return found


def _disturbed(results: Results) -> dict[str, float]:
    return {k: v for k, v in _cpu_key(results, "other").items() if v > OTHER_CPU_WARN}


def _stolen(results: Results) -> dict[str, float]:
    return {k: v for k, v in _cpu_key(results, "steal").items() if v > STEAL_WARN}


def table(results: Results) -> str:
    meta = results["meta"]
    lines = [f"consent-proxy benchmark, size {meta['size']}, {meta['date']}, "
             f"{meta['elapsed_seconds']:.0f} s"]
    found = rows(results)
    widths = [max(len(h), *(len(getattr(r, f)) for r in found)) for h, f in
              (("metric", "metric"), ("value", "value"), ("target", "target"))]
    header = ("metric", "value", "target", "result")
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, [*widths, 6], strict=True)))
    lines.append("  ".join("-" * w for w in [*widths, 6]))
    for r in found:
        lines.append("  ".join(text.ljust(w) for text, w in zip(
            (r.metric, r.value, r.target, r.verdict), [*widths, 6], strict=True)).rstrip())
    lines.append("")
    lines.extend(f"- {note}" for note in _notes(results))
    return "\n".join(lines)


def targets(results: Results) -> list[dict[str, Any]]:
    return [{"metric": r.metric, "value": r.value, "target": r.target, "pass": r.passed}
            for r in rows(results) if r.passed is not None]


def write_json(results: Results, path: Path) -> None:
    data = dict(results) | {"targets": targets(results)}
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", "utf-8")


# --- the chart -----------------------------------------------------------------------------

def _label(value: float) -> str:
    return f"{value:,.3g}" if value < 100 else f"{value:,.0f}"


def _bars(ax: Any, labels: list[str], values: list[float], title: str, unit: str,
          targets: Sequence[tuple[float, str]] = (), colors: list[str] | None = None,
          log: bool = False) -> None:
    bars = ax.bar(labels, values, color=colors or ["#8c8c8c", "#2b6cb0"][: len(values)])
    if log:  # a bar 100 times lower than its neighbour would vanish on a linear axis
        ax.set_yscale("log")
    for bar, value in zip(bars, values, strict=True):
        ax.annotate(_label(value), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    for value, name in targets:
        ax.axhline(value, color="#c53030", linestyle="--", linewidth=1)
        ax.annotate(f"{name} {_label(value)}", (0.98, value),
                    xycoords=("axes fraction", "data"), ha="right", va="bottom", fontsize=7,
                    color="#c53030", bbox={"facecolor": "white", "edgecolor": "none",
                                           "alpha": 0.7, "pad": 1})
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(unit, fontsize=8)
    ax.tick_params(labelsize=7)


def _skipped(ax: Any, title: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.text(0.5, 0.5, "skipped", ha="center", va="center")
    ax.set_axis_off()


def _gate_charts(axes: Any, g: Results) -> None:
    bare, proxy = g["bare"], g["proxy"]
    _bars(axes[0], ["bare", "consent-proxy"], [bare["rps"], proxy["rps"]],
          "1 throughput (32 connections)", "requests/s",
          [(THROUGHPUT_RATIO_MIN * bare["rps"], f"target {THROUGHPUT_RATIO_MIN:g} x bare")])
    labels = ["bare p50", "proxy p50", "bare p99", "proxy p99"]
    values = [bare["p50_ms"], proxy["p50_ms"], bare["p99_ms"], proxy["p99_ms"]]
    _bars(axes[1], labels, values, "1 latency (32 connections)", "ms",
          colors=["#8c8c8c", "#2b6cb0"] * 2)


def chart(results: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    top, bottom = axes[0], axes[1]
    sections = {k: results.get(k) or {"skipped": True} for k in SECTIONS}
    if sections["gate_overhead"].get("skipped"):
        _skipped(top[0], "1 throughput")
        _skipped(top[1], "1 latency")
    else:
        _gate_charts(top, sections["gate_overhead"])
    e = sections["engine"]
    if e.get("skipped"):
        _skipped(top[2], "2 engine")
    else:
        _bars(top[2], ["engine"], [e["decisions_per_s"]], "2 engine, one core", "decisions/s",
              [(ENGINE_MIN, "target")], ["#2b6cb0"])
    s = sections["scrub"]
    if s.get("skipped"):
        _skipped(bottom[0], "3 scrub")
    else:
        _bars(bottom[0], ["raw COPY", "scrub"], [s["copy_rows_per_s"], s["numbers_per_s"]],
              f"3 scrub of {s['numbers']:,} numbers (log scale)", "numbers/s",
              [(SCRUB_MIN, "target"),
               (SCRUB_RATIO_MIN * s["copy_rows_per_s"], f"target {SCRUB_RATIO_MIN:g} x COPY")],
              log=True)
    m = sections["memory"]
    if m.get("skipped"):
        _skipped(bottom[1], "4 memory")
    else:
        _bars(bottom[1], ["proxy peak RSS"], [m["peak_rss_mb"]], "4 memory under load 1", "MiB",
              [(PEAK_RSS_MAX_MB, "target")], ["#2b6cb0"])
    st = sections["store_size"]
    if st.get("skipped"):
        _skipped(bottom[2], "5 store size")
    else:
        small, large = st["small"], st["large"]
        _bars(bottom[2], [f"p50 {_short(small['consent_rows'])}",
                          f"p50 {_short(large['consent_rows'])}",
                          f"p99 {_short(small['consent_rows'])}",
                          f"p99 {_short(large['consent_rows'])}"],
              [small["p50_ms"], large["p50_ms"], small["p99_ms"], large["p99_ms"]],
              "5 decision latency by consent rows", "ms", colors=["#8c8c8c", "#2b6cb0"] * 2)
    meta = results["meta"]
    fig.suptitle(f"consent-proxy bench ({meta['size']}), {meta['date']}, {meta['nproc']} cores",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _short(rows: float) -> str:
    if rows >= 1_000_000:
        return f"{rows / 1e6:g}M"
    if rows >= 1_000:
        return f"{rows / 1e3:g}k"
    return str(int(rows))

