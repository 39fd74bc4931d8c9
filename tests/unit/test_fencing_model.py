"""The exhaustive fencing model: the protocol of DESIGN.md §4 holds, and breaking it is caught."""

from __future__ import annotations

import pytest

from talos.errors import InvalidArgument
from talos.testing.fencing_model import ExploreResult, ModelConfig, Violation, explore


@pytest.fixture(scope="module")
def default_run() -> ExploreResult:
    return explore(ModelConfig())


def _describe(result: ExploreResult) -> str:
    return "\n\n".join(str(v) for v in result.violations[:3])


def _index(trace: tuple[str, ...], text: str) -> int:
    for i, step in enumerate(trace):
        if text in step:
            return i
    raise AssertionError(f"no step containing {text!r} in trace:\n" + "\n".join(trace))


# -- the protocol as designed -------------------------------------------------


def test_protocol_holds_in_every_interleaving(default_run: ExploreResult) -> None:
    result = default_run
    assert result.complete
    assert result.violation_count == 0, _describe(result)
    assert result.ok
    # Measured 121,645 states / 354 terminal states; a big drop means the model lost behaviour.
    assert result.states > 100_000
    assert result.transitions > 3 * result.states
    assert result.terminal_states > 300
    assert result.acks > 800


def test_interesting_races_are_covered(default_run: ExploreResult) -> None:
    seen = default_run.outcomes
    expected = [
        "A:finished:2",  # zombie acked everything before (or despite) the takeover
        "A:refused:0",  # refused its first batch: marker seen at the first check
        "A:refused:1",  # acked one batch, then refused the next
        "A:acked-after-marker",  # check passed, marker created, then ack: must be kept
        "A:refused-batch-kept",  # flushed before the scan: inside the sealed end
        "A:refused-batch-dropped",  # flushed after the scan: past the sealed end
        "A:roll_fenced:1",  # roll CAS failed after a takeover
        "A:torn:0",
        "A:torn:1",
        "B:not_owner:0",  # C's CAS landed between B's CAS and B's registration
        "B:refused:1",  # B as C's zombie
        "B:acked-after-marker",
        "B:refused-batch-dropped",
        "B:roll_fenced:1",
        "C:finished:2",
        "C:torn:1",
    ]
    missing = [key for key in expected if seen.get(key, 0) == 0]
    assert not missing, f"never reached: {missing}; outcomes: {sorted(seen)}"


def test_protocol_holds_with_batches_sharing_one_segment() -> None:
    # No rolls: a zombie's second batch lands in the same segment the taker scans.
    result = explore(ModelConfig(roll_after=None))
    assert result.violation_count == 0, _describe(result)
    assert result.states > 100_000  # measured 153,444
    assert result.outcomes.get("A:refused-batch-dropped", 0) > 0
    assert result.outcomes.get("B:refused-batch-dropped", 0) > 0


@pytest.mark.parametrize(
    "config",
    [
        ModelConfig(takeovers=1, batches_per_broker=3),
        ModelConfig(takeovers=1, batches_per_broker=3, roll_after=2),
        ModelConfig(takeovers=1, batches_per_broker=3, roll_after=None),
        ModelConfig(takeovers=1, readers=2),
        ModelConfig(takeovers=0, batches_per_broker=3),
        ModelConfig(batches_per_broker=1, roll_after=None),
    ],
    ids=["3b-roll1", "3b-roll2", "3b-noroll", "2readers", "no-takeover", "1b"],
)
def test_protocol_holds_under_other_bounds(config: ModelConfig) -> None:
    result = explore(config)
    assert result.complete
    assert result.violation_count == 0, _describe(result)
    assert result.terminal_states > 0
    assert result.acks > 0


def test_without_takeover_every_batch_is_acked() -> None:
    result = explore(ModelConfig(takeovers=0, torn_writes=False, roll_after=None))
    assert result.outcomes == {"A:finished:2": result.terminal_states}
    assert result.acks == 2 * result.terminal_states


# -- mutations: each breaks one rule, the checker must fail --------------------

# Each run stops after 20 violations; the search is breadth-first, so the
# traces are the shortest ones.
MUTATIONS = {
    "a-check-before-write": (
        ModelConfig(mutate_check_before_write=True, stop_after_violations=20),
        {"1-acked-kept", "4-fenced-ack"},
    ),
    "b-scan-before-marker": (
        ModelConfig(mutate_scan_before_marker=True, stop_after_violations=20),
        {"1-acked-kept", "4-fenced-ack", "3-readers"},
    ),
    "c-rescan-sealed": (
        ModelConfig(mutate_rescan_sealed=True, stop_after_violations=20),
        {"2-dense", "3-readers"},
    ),
    "d-reader-ignores-marker": (
        ModelConfig(mutate_reader_ignores_marker=True, stop_after_violations=20),
        {"3-readers"},
    ),
    "e-skip-epoch-cas": (
        ModelConfig(mutate_skip_epoch_cas=True, stop_after_violations=20),
        {"1-acked-kept", "4-fenced-ack", "3-readers", "2-dense"},
    ),
    "f-scan-keeps-torn": (
        ModelConfig(mutate_scan_keeps_torn=True, stop_after_violations=20),
        {"2-dense", "3-readers"},
    ),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_mutation_is_caught_with_a_trace(name: str) -> None:
    config, invariants = MUTATIONS[name]
    result = explore(config)
    assert not result.ok
    assert result.violation_count >= 1
    assert result.violations
    kinds = {v.invariant for v in result.violations}
    assert kinds & invariants, kinds
    first = result.violations[0]
    assert first.trace and first.message
    rendered = str(first)
    assert first.invariant in rendered and first.trace[-1] in rendered


def _first(config: ModelConfig) -> Violation:
    result = explore(config)
    assert result.violations, "mutation not caught"
    return result.violations[0]


def test_a_check_before_write_trace_shows_the_race() -> None:
    v = _first(ModelConfig(mutate_check_before_write=True, stop_after_violations=1))
    assert v.invariant == "4-fenced-ack"
    check = _index(v.trace, "A: check A0.fenced: absent")
    scan = _index(v.trace, "B: scan A0 [] -> end 0")
    flush = _index(v.trace, "A: flush a1")
    ack = _index(v.trace, "A: ack a1 at offset 0")
    assert check < scan < flush < ack


def test_b_scan_before_marker_trace_shows_the_race() -> None:
    v = _first(ModelConfig(mutate_scan_before_marker=True, stop_after_violations=1))
    assert v.invariant in {"4-fenced-ack", "1-acked-kept"}
    scan = _index(v.trace, "B: scan A0")
    check = _index(v.trace, "A: check A0.fenced: absent")
    mark = _index(v.trace, "B: marker A0.fenced created")
    assert scan < check < mark


def test_c_rescan_sealed_breaks_only_with_a_second_takeover() -> None:
    assert explore(ModelConfig(takeovers=1, mutate_rescan_sealed=True)).ok
    v = _first(ModelConfig(mutate_rescan_sealed=True, stop_after_violations=1))
    seals = [step for step in v.trace if "CAS sealed end of A0" in step]
    assert len(seals) == 2, v  # the same segment sealed twice with different ends
    assert _index(v.trace, "C: scan A0") > _index(v.trace, "B: scan A0")


def test_d_reader_ignoring_marker_commits_a_dropped_batch() -> None:
    v = _first(ModelConfig(mutate_reader_ignores_marker=True, stop_after_violations=1))
    assert v.invariant == "3-readers"
    assert _index(v.trace, "(no marker check)") > _index(v.trace, "marker A0.fenced created")


def test_e_skipping_the_epoch_cas_loses_acknowledged_data() -> None:
    # Without readers only the writers' invariants can fail: an acked batch is lost.
    result = explore(ModelConfig(mutate_skip_epoch_cas=True, readers=0))
    lost = [v for v in result.violations if v.invariant == "1-acked-kept"]
    assert lost, _describe(result)
    for v in lost:
        assert any("BLIND write" in step for step in v.trace)
        assert any(": ack " in step for step in v.trace)
    assert explore(ModelConfig(readers=0)).ok


def test_f_torn_writes_are_what_catches_a_scan_that_keeps_them() -> None:
    assert explore(ModelConfig(mutate_scan_keeps_torn=True, torn_writes=False, takeovers=1)).ok
    v = _first(ModelConfig(mutate_scan_keeps_torn=True, stop_after_violations=1))
    assert v.invariant == "2-dense"
    assert _index(v.trace, "TORN") < _index(v.trace, "scan A0")


def test_stop_after_violations_stops_early() -> None:
    small = {"mutate_check_before_write": True, "takeovers": 1}
    full = explore(ModelConfig(**small, max_violations=5))  # type: ignore[arg-type]
    assert full.complete and full.violation_count > 5 and len(full.violations) == 5
    early = explore(ModelConfig(**small, stop_after_violations=3))  # type: ignore[arg-type]
    assert not early.complete
    assert early.violation_count == 3
    assert early.states < full.states


# -- input checks ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"batches_per_broker": 0}, "batches_per_broker"),
        ({"batches_per_broker": 5}, "batches_per_broker"),
        ({"takeovers": 3}, "takeovers"),
        ({"roll_after": 2}, "roll_after"),
        ({"roll_after": 0}, "roll_after"),
        ({"rolling_brokers": ("A", "Z")}, "rolling_brokers"),
        ({"readers": -1}, "readers"),
        ({"max_violations": -1}, "max_violations"),
        ({"stop_after_violations": 0}, "stop_after_violations"),
    ],
)
def test_bad_config_is_rejected(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(InvalidArgument, match=name):
        ModelConfig(**kwargs)  # type: ignore[arg-type]
