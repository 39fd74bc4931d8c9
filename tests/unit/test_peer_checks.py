"""The plain checks behind the Kafka/MM2 comparisons: what counts as missing, duplicated,
offsets kept, redelivered, skipped."""

from __future__ import annotations

from talos.bench.mirror_faults import check_copy, check_failover, keyed_value
from talos.testing.kafka import broker_properties, cluster_id, mm2_properties, properties

A, B, C, D = b"a", b"b", b"c", b"d"


def test_an_identical_copy_keeps_offsets_and_loses_nothing() -> None:
    check = check_copy({0: [A, B], 1: [C]}, {0: [A, B], 1: [C]})
    assert (check.missing, check.duplicated, check.offsets_kept) == (0, 0, True)
    assert check.source == check.target == 3
    assert check.first_offset_mismatch == ""


def test_a_redelivered_batch_is_a_duplicate_and_shifts_every_later_offset() -> None:
    check = check_copy({0: [A, B, C]}, {0: [A, B, B, C]})
    assert (check.missing, check.duplicated, check.offsets_kept) == (0, 1, False)
    assert check.first_offset_mismatch == "0/2"


def test_a_lost_message_is_missing_and_a_short_partition_breaks_offsets() -> None:
    check = check_copy({0: [A, B], 1: [C, D]}, {0: [A, B], 1: [C]})
    assert (check.missing, check.duplicated, check.offsets_kept) == (1, 0, False)
    assert check.first_offset_mismatch == "1/1"


def test_failover_counts_what_is_read_twice_and_what_nobody_reads() -> None:
    every = {A, B, C, D}
    got = check_failover(every, read_in_a={A, B}, read_in_b=[B, D])
    assert (got.redelivered, got.skipped) == (1, 1)  # B twice; C never
    assert (got.read_in_a, got.read_in_b) == (2, 2)


def test_keyed_values_are_100_bytes_and_distinct() -> None:
    assert len(keyed_value(7)) == 100
    assert keyed_value(7) != keyed_value(8)


def test_generated_kafka_configs_name_one_combined_node_and_a_one_way_link() -> None:
    broker = broker_properties("127.0.0.1", 9092, 9093, "/d")
    assert broker["process.roles"] == "broker,controller"
    assert broker["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert "log.flush.interval.messages" not in broker  # Kafka's default flush policy
    mm2 = mm2_properties("a:1", "b:2", "t")
    assert (mm2["A->B.enabled"], mm2["B->A.enabled"], mm2["A->B.topics"]) == ("true", "false", "t")
    assert properties({"k": 1, "j": "v"}) == "k=1\nj=v\n"
    assert len(cluster_id()) == 22


def test_a_cluster_id_never_starts_with_a_dash_that_kafka_storage_reads_as_an_option() -> None:
    draws = iter([b"\xf8" + bytes(15), bytes(16)])  # the first encodes as "-A...": drawn again
    assert cluster_id(lambda: next(draws)) == "AAAAAAAAAAAAAAAAAAAAAA"


def test_chaos_results_keep_the_mirror_comparison_section_when_rewritten() -> None:
    from chaos.report import KEPT_MARKER, with_kept_section

    old = f"# Chaos results\nold table\n\n{KEPT_MARKER}\n## MM2\nrow\n"
    assert with_kept_section("# Chaos results\nnew table\n", old) == (
        f"# Chaos results\nnew table\n\n{KEPT_MARKER}\n## MM2\nrow\n"
    )
    assert with_kept_section("new\n", "no marker\n") == "new\n"


def test_fault_parts_are_named_explicitly_and_against_is_checked() -> None:
    import pytest

    from talos.bench.mirror import PARTS, MirrorBenchConfig, parse_only
    from talos.errors import InvalidArgument

    assert parse_only("stall,kill,lag") == ("lag", "kill", "stall")
    assert parse_only(None) == PARTS  # plain `talos bench mirror` runs no fault part
    with pytest.raises(InvalidArgument, match="against"):
        MirrorBenchConfig(against="pulsar").validated()


def test_the_side_by_side_table_shows_both_systems_and_yes_no() -> None:
    from talos.bench.mirror import format_against

    report = {
        "throughput": {"copy_msgs_per_s": 1000},
        "mm2": {"throughput": {"copy_msgs_per_s": 10}},
        "faults": {
            "talos": {"kill": {"duplicated": 0, "offsets_kept": True}},
            "mm2": {"kill": {"duplicated": 7, "offsets_kept": False}},
        },
    }
    text = format_against(report)
    assert "Talos mirror" in text and "MirrorMaker 2" in text
    row = next(line for line in text.splitlines() if line.startswith("kill offsets_kept"))
    assert row.split()[-2:] == ["yes", "no"]
    row = next(line for line in text.splitlines() if line.startswith("throughput copy_msgs"))
    assert row.split()[-2:] == ["1,000", "10"]
