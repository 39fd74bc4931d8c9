"""The chaos suite on HDFS, its pure parts: which faults a scenario draws, the schedule
of the HDFS faults, and where RESULTS.md reports the HDFS runs."""

from __future__ import annotations

import itertools

from chaos.nemesis import HDFS_FAULT_KINDS, PAUSE_LEASE_FACTOR, make_schedule
from chaos.report import render
from chaos.runner import SMOKE_HDFS, scenario_kinds, scenario_names


def test_the_hdfs_scenario_draws_the_hdfs_faults_and_a_kill() -> None:
    assert set(scenario_kinds("hdfs", 1, "hdfs")) == {*HDFS_FAULT_KINDS, "kill"}
    # with a mirror its worker is killed too: its store reader tail-reads HDFS
    assert set(scenario_kinds("hdfs", 2, "hdfs")) == {*HDFS_FAULT_KINDS, "kill", "kill-mirror"}


def test_on_hdfs_no_scenario_edits_posix_files() -> None:
    for dcs in (1, 2):
        for name in scenario_names(dcs, "hdfs"):
            kinds = scenario_kinds(name, dcs, "hdfs")
            assert kinds, name
            assert "corrupt-tail" not in kinds and "corrupt-sealed" not in kinds
    assert set(HDFS_FAULT_KINDS) <= set(scenario_kinds("mixed", 2, "hdfs"))
    assert scenario_kinds("crash", 1, "hdfs") == ("kill", "pause")


def test_the_hdfs_scenario_exists_only_on_hdfs() -> None:
    assert "hdfs" in scenario_names(1, "hdfs")
    assert "hdfs" not in scenario_names(1)
    assert "mirror" in scenario_names(2, "hdfs") and "mirror" not in scenario_names(1, "hdfs")
    assert [name for name, _ in SMOKE_HDFS] == ["hdfs"]


def test_hdfs_schedule_covers_every_kind_and_leaves_takeovers_alone() -> None:
    kinds = scenario_kinds("hdfs", 1, "hdfs")
    schedule = make_schedule(808, 45.0, kinds, 4.0, 6)
    assert schedule == make_schedule(808, 45.0, kinds, 4.0, 6)
    assert {f.kind for f in schedule} == set(kinds)
    for fault in schedule:
        if fault.kind == "kill-datanode":
            assert fault.params["datanode"] in (0, 1, 2)
        if fault.kind == "pause-lease":
            # long enough for the session to expire and another broker to take over
            assert fault.duration == PAUSE_LEASE_FACTOR * 4.0
            assert 0 <= fault.params["partition"] < 6
    for a, b in itertools.pairwise(schedule):
        assert b.at >= a.at + a.duration + 1.0
        if a.kind in ("kill", "pause-lease", "restart-namenode"):
            assert b.at >= a.at + 4.0 + 5.0


def _run(scenario: str, store: str, acked: int) -> dict[str, object]:
    return {
        "scenario": scenario,
        "seed": 1,
        "store": store,
        "datacenters": 1,
        "ok": True,
        "acked": acked,
        "faults": {"kill-datanode": 1} if store == "hdfs" else {"kill": 1},
        "counts": {},
        "unavailability": [],
    }


def test_results_report_hdfs_runs_in_their_own_section() -> None:
    text = render([_run("crash", "posix", 111), _run("hdfs", "hdfs", 222)], "cmd", 4.0, now=0)
    main, hdfs = text.split("## HDFS store")
    assert "| crash | 1 | 1 | 111 |" in main and "222" not in main
    assert "| hdfs | 1 | 1 | 222 | 1 (kill-datanode 1) |" in hdfs and "111" not in hdfs

    only_hdfs = render([_run("hdfs", "hdfs", 222)], "cmd", 4.0, now=0)
    assert "(no run on the posix store)" in only_hdfs
    assert "## HDFS store" not in render([_run("crash", "posix", 111)], "cmd", 4.0, now=0)


def test_a_slow_heal_moves_the_rest_of_the_schedule() -> None:
    from chaos.nemesis import overrun

    assert overrun(planned_end=10.0, now=14.5) == 4.5
    assert overrun(planned_end=10.0, now=9.0) == 0.0
