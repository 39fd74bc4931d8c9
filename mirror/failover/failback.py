"""``talos mirror failback``: archive the old primary's divergence, truncate, reverse."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kazoo.client import KazooClient

from talos.client.connection import Connections
from talos.coord.partition_state import PartitionState, PartitionStateStore
from talos.coord.topics import TopicMeta, TopicStore
from talos.errors import (
    CoordinationError,
    Fenced,
    InvalidArgument,
    TalosError,
    UnknownTopic,
)
from talos.proto import talos_pb2 as pb
from talos.storage.store import LogStore
from topology import Datacenter, Link, Topology

from ..paths import failback_path, promotion_path
from ..state import Phase, finish_failback, pending_reverse
from .common import (
    FallbackReader,
    LogReader,
    StoreLogReader,
    close_zk,
    first_batch,
    local_store,
    mirror_pairs,
    open_zk,
    read_json,
    target_reader,
    write_control,
    write_json,
)
from .plan import (
    Divergence,
    FailbackReport,
    PartitionFailback,
    archive_topic_name,
    clamped_offsets,
    failback_refusal,
    failback_stamp,
    find_divergence,
    truncated_state,
)
from .surgery import (
    archive_suffix,
    ensure_archive,
    group_offsets,
    nudge_owner,
    take_over,
    truncate,
)

# ==== failback =================================================================================

log = logging.getLogger(__name__)


@dataclass
class FailbackOptions:
    dry_run: bool = False
    start_reverse: bool = False
    timeout_s: float = 10.0
    #: how long to wait for A's assigned broker to serve the truncated partition
    serve_timeout_s: float = 30.0
    takeover_attempts: int = 5


def failback(
    topology: Topology,
    link_spec: str,
    options: FailbackOptions | None = None,
    now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
) -> FailbackReport:
    """Fail the promoted link ``A:B`` back: archive A's divergence, truncate, reverse.

    Refuses, changing nothing: an unknown link, a link never promoted, an
    unreachable A (ZooKeeper, brokers or store), a missing reverse link.
    """
    options = options or FailbackOptions()
    link = topology.link(link_spec)
    a_dc, b_dc = topology.dc(link.source), topology.dc(link.target)
    reverse = next(
        (x for x in topology.links if x.source == link.target and x.target == link.source), None
    )
    reverse_name = f"{link.target}:{link.source}"
    zk_b = open_zk(b_dc, options.timeout_s)
    zk_a: KazooClient | None = None
    b_reader: FallbackReader | None = None
    a_reader: StoreLogReader | None = None
    try:
        promotion = read_json(zk_b, promotion_path(link.name))
        topics_b = TopicStore(zk_b)
        recorded = (promotion or {}).get("topics") or {}
        pairs = [
            (t.source_topic, t.name)
            for t in sorted(mirror_pairs(topics_b, link), key=lambda t: t.name)
            if t.mirror.promoted and t.name in recorded
        ]
        if promotion is not None and not pairs and not promotion.get("failed_back_ms"):
            promotion = None
        refusal = failback_refusal(link=link, promotion=promotion, reverse=reverse, pairs=pairs)
        if refusal is not None:
            raise InvalidArgument(f"link: {refusal}")
        if promotion is None or reverse is None:  # failback_refusal said why already
            raise InvalidArgument(f"link: {link.name} cannot be failed back")
        zk_a, store_a = _reach_source(a_dc, options.timeout_s)
        stamp = str(
            (read_json(zk_a, failback_path(link.name)) or {}).get("stamp")
            or failback_stamp(now_ms())
        )
        report = FailbackReport(link.name, reverse_name, options.dry_run, stamp)
        b_reader = target_reader(b_dc, zk_b, options.timeout_s)
        a_reader = StoreLogReader(zk_a, store_a, a_dc.cluster)
        topics_a = TopicStore(zk_a)
        if not options.dry_run:
            write_json(
                zk_a,
                failback_path(link.name),
                {"stamp": stamp, "started_ms": now_ms(), "done_ms": None},
            )
        for a_topic, b_topic in pairs:
            try:
                a_meta = topics_a.get(a_topic)
            except UnknownTopic:
                report.skipped.append(f"{a_topic}: does not exist in {link.source}")
                continue
            if (
                a_meta.mirror is not None
                and a_meta.mirror.link == reverse_name
                and a_meta.mirror.phase is Phase.MIRRORING
            ):
                report.skipped.append(f"{a_topic}: already a mirror of {reverse_name}")
                continue
            starts = [int(x) for x in promotion["topics"][b_topic].get("target_ends", [])]
            _failback_topic(
                report,
                options,
                link,
                reverse_name,
                zk_a,
                a_dc,
                a_reader,
                b_reader,
                a_meta,
                b_topic,
                starts,
                now_ms,
            )
        if not options.dry_run:
            write_control(zk_a, reverse_name, "running", "failback", now_ms())
            record = dict(promotion)
            record["failed_back_ms"] = now_ms()
            write_json(zk_b, promotion_path(link.name), record)
            done = read_json(zk_a, failback_path(link.name)) or {}
            done.update({"done_ms": now_ms(), "report": report.to_dict()})
            write_json(zk_a, failback_path(link.name), done)
        report.reverse = _reverse_link(topology, reverse_name, options)
        return report
    finally:
        if b_reader is not None:
            b_reader.close()
        if a_reader is not None:
            a_reader.close()
        close_zk(zk_a)
        close_zk(zk_b)


def _reach_source(dc: Datacenter, timeout: float) -> tuple[KazooClient, LogStore]:
    """A's ZooKeeper, brokers and store must all answer; otherwise refuse."""
    store = local_store(dc)
    if store is None:
        raise InvalidArgument(
            f"link: cannot fail back while {dc.name}'s log store {dc.store.uri} is not readable "
            "on this host (failback truncates A's partitions and must read their segments)"
        )
    try:
        zk = open_zk(dc, timeout)
    except TalosError as exc:
        raise InvalidArgument(
            f"link: cannot fail back while {dc.name} is unreachable: {exc}"
        ) from None
    connections = Connections(dc.bootstrap, request_timeout=timeout, security=dc.client_security())
    try:
        connections.call_any("Metadata", pb.MetadataRequest(topics=[]), timeout=timeout)
    except TalosError as exc:
        close_zk(zk)
        raise InvalidArgument(
            f"link: cannot fail back while {dc.name}'s brokers are unreachable: {exc}"
        ) from None
    finally:
        connections.close()
    return zk, store


def _failback_topic(
    report: FailbackReport,
    options: FailbackOptions,
    link: Link,
    reverse_name: str,
    zk_a: KazooClient,
    a_dc: Datacenter,
    a_reader: StoreLogReader,
    b_reader: LogReader,
    a_meta: TopicMeta,
    b_topic: str,
    starts: Sequence[int],
    now_ms: Callable[[], int],
) -> None:
    topic = a_meta.name
    topics_a = TopicStore(zk_a)
    archive = archive_topic_name(topic, report.stamp)
    pending = pending_reverse(a_meta.mirror, reverse_name, link.target, b_topic)
    if not options.dry_run and a_meta.mirror != pending:
        topics_a.set_mirror(topic, pending)  # producers are refused from here on
    archive_ready = False
    for p in range(a_meta.partitions):
        promoted_end = starts[p] if p < len(starts) else 0
        if options.dry_run:
            divergence = _divergence(
                a_reader, b_reader, topic, b_topic, p, promoted_end, link.source, None
            )
            outcome = PartitionFailback.planned(
                topic, p, divergence, clamped_offsets(group_offsets(zk_a, topic, p), divergence)
            )
            report.partitions.append(outcome)
            if divergence.diverged_messages:
                report.archive_topics[topic] = archive
            continue
        outcome = _failback_partition(
            options,
            link,
            zk_a,
            a_dc,
            a_reader,
            b_reader,
            a_meta,
            b_topic,
            p,
            promoted_end,
            archive,
            archive_ready,
            pending.epoch,
            now_ms,
        )
        archive_ready = archive_ready or outcome.archived > 0 or outcome.diverged > 0
        if outcome.diverged:
            report.archive_topics[topic] = archive
        report.partitions.append(outcome)
    if not options.dry_run:
        topics_a.set_mirror(topic, finish_failback(pending))


def _divergence(
    a_reader: StoreLogReader,
    b_reader: LogReader,
    topic: str,
    b_topic: str,
    partition: int,
    promoted_end: int,
    source_cluster: str,
    state: PartitionState | None,
) -> Divergence:
    """Compare from the batch before the promotion point; from the log start if that differs."""
    a_end = a_reader.log_end(topic, partition) if state is None else state.sealed_end
    b_end = b_reader.log_end(b_topic, partition)
    start = 0
    if promoted_end > 0:
        before = first_batch(b_reader, b_topic, partition, promoted_end - 1)
        start = before.header.base_offset if before is not None else 0
    start = min(start, a_end, b_end)
    while True:
        divergence = find_divergence(
            a_reader.batches(topic, partition, start, state),
            b_reader.batches(b_topic, partition, start),
            source_cluster=source_cluster,
            start=start,
            a_end=a_end,
            b_end=b_end,
        )
        floor = state.log_start if state is not None else 0
        if divergence.certain or start <= floor:
            return divergence
        start = floor


def _failback_partition(
    options: FailbackOptions,
    link: Link,
    zk_a: KazooClient,
    a_dc: Datacenter,
    a_reader: StoreLogReader,
    b_reader: LogReader,
    a_meta: TopicMeta,
    b_topic: str,
    partition: int,
    promoted_end: int,
    archive: str,
    archive_ready: bool,
    mirror_epoch: int,
    now_ms: Callable[[], int],
) -> PartitionFailback:
    topic = a_meta.name
    states = PartitionStateStore(zk_a)
    for _attempt in range(options.takeover_attempts):
        state = take_over(states, a_reader.store, a_dc.cluster, topic, partition)
        divergence = _divergence(
            a_reader, b_reader, topic, b_topic, partition, promoted_end, link.source, state
        )
        groups = clamped_offsets(group_offsets(zk_a, topic, partition), divergence)
        outcome = PartitionFailback.planned(topic, partition, divergence, groups)
        if divergence.diverged_messages:
            if not archive_ready:
                ensure_archive(zk_a, a_dc, a_meta, archive, options.timeout_s, now_ms)
                archive_ready = True
            outcome.archived = archive_suffix(
                a_dc,
                a_reader,
                state,
                topic,
                partition,
                divergence.common,
                archive,
                options.timeout_s,
            )
        try:
            # One transaction: the cut and every group offset past it move together.
            truncate(zk_a, topic, partition, truncated_state(state, divergence), state, groups)
        except Fenced:
            log.info("%s/%d moved while failing back; taking it over again", topic, partition)
            continue
        outcome.truncated = divergence.common < divergence.a_end
        outcome.served_at = nudge_owner(
            a_dc,
            topic,
            partition,
            divergence.common,
            state.epoch,
            mirror_epoch,
            f"{link.target}:{link.source}",
            options.timeout_s,
            options.serve_timeout_s,
        )
        if outcome.served_at is None:
            outcome.note = (
                "the assigned broker has not served the partition again yet; it takes it over "
                "at its next write"
            )
        return outcome
    raise CoordinationError(
        f"{topic}/{partition}: moved by someone else {options.takeover_attempts} times while "
        "failing back; stop A's brokers' churn and rerun (it resumes where it stopped)"
    )


def reverse_command(topology: Topology, reverse_name: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "talos",
        "mirror",
        "run",
        "--topology",
        str(Path(topology.path).resolve()),
        "--link",
        reverse_name,
    ]


def _reverse_link(topology: Topology, reverse_name: str, options: FailbackOptions) -> str:
    command = reverse_command(topology, reverse_name)
    shown = " ".join(["talos", *command[3:]])
    if options.dry_run or not options.start_reverse:
        return f"start the reverse link with: {shown}"
    log_path = Path(topology.path).resolve().parent / f"mirror-{reverse_name.replace(':', '-')}.log"
    with open(log_path, "ab") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return f"started the reverse link {reverse_name} (pid {process.pid}, log {log_path})"
