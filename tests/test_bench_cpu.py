"""bench/'s CPU accounting: what the kernel reports is split into work, steal and idle, so a
run on a VM whose host was busy says so instead of blaming processes that do not exist."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from bench import report, services
from tests.conftest import REPO

# user nice system idle iowait irq softirq steal guest guest_nice
STAT = "cpu  1000 0 500 8000 100 0 50 350 0 0\ncpu0 1 2 3\n"
# 10 s later on 2 cores, 2,000 jiffies: 1,350 of work, 450 stolen, 200 idle.
LATER = "cpu  2000 0 800 8200 100 0 100 800 0 0\ncpu0 1 2 3\n"


def _snapshot(stat: str, at: float, used: tuple[float, float]) -> services.CpuSnapshot:
    processes = {"proxy": used[0], "upstream": used[1]}
    return services.CpuSnapshot(at, processes, {}, services.machine_cpu(stat))


def test_steal_is_neither_work_nor_idle() -> None:
    cpu = services.machine_cpu(STAT)
    assert (cpu.busy, cpu.steal, cpu.total) == (1550.0, 350.0, 10000.0)


def test_a_round_reports_steal_apart_from_what_other_processes_used(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bench.services.os.cpu_count", lambda: 2)
    # The proxy and the upstream used 8.5 s and 5 s of the 13.5 s of work: nothing else ran.
    share = services.add_other(services.cpu_share(_snapshot(STAT, 0.0, (0.0, 0.0)),
                                                  _snapshot(LATER, 10.0, (8.5, 5.0))))
    assert share["machine"] == 67.5  # of all cores' time
    assert share["steal"] == 22.5
    assert (share["proxy"], share["upstream"]) == (85.0, 50.0)
    # Counted as busy, the stolen time would come out as 45 % of a core of "other" CPU.
    assert share["other"] == 0.0


def _latest() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((REPO / "bench" / "results" / "latest.json").read_text())
    return data


def test_the_table_warns_when_the_host_took_the_cores() -> None:
    results = copy.deepcopy(_latest())
    for shares in results["gate_overhead"]["cpu_median"].values():
        shares["steal"] = 34.5
    table = report.table(results)
    assert "WARNING: the hypervisor kept this VM's cores from it" in table
    assert "load 1 against proxy 34.5" in table
    assert "34.5 % stolen" in table


def test_no_steal_warning_on_a_quiet_host() -> None:
    results = copy.deepcopy(_latest())
    for shares in results["gate_overhead"]["cpu_median"].values():
        shares["steal"] = 1.0
    assert "hypervisor" not in report.table(results)


def test_rounds_are_summed_up_by_the_median_of_each_share() -> None:
    rounds = [{"server": 90.0, "steal": 1.0}, {"server": 70.0, "steal": 30.0},
              {"server": 80.0, "steal": 2.0}]
    assert services.median_shares(rounds) == {"server": 80.0, "steal": 2.0}
    assert services.median_shares(rounds, ("steal",)) == {"steal": 2.0}
