"""``talos mirror resync``: replace a diverged mirror copy with a fresh copy of the source.

The worker stops a partition as ``diverged`` when the target's copy is no
longer the source's history (the source topic was recreated, or cut back
below the target's end). Resync, per partition of the target topic: fence
the link (next mirror epoch, phase RESYNCING: no append lands), take the
partition over like a broker does, produce its whole copy into
``<topic>.diverged.<stamp>`` in the target DC, then cut the partition back
to empty at the source's log start (group offsets past it move back in the
same transaction) and release it. The link then copies the source again
from its log start, keeping offsets. ``--dry-run`` reports the same plan
and changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from kazoo.client import KazooClient

from talos.coord.partition_state import PartitionStateStore
from talos.coord.topics import TopicStore
from talos.errors import InvalidArgument, TalosError, UnknownTopic
from topology import Topology

from ..state import begin_resync, finish_resync, lifted
from .common import BrokerReader, StoreLogReader, close_zk, local_store, open_zk
from .plan import (
    PartitionResync,
    ResyncReport,
    archive_topic_name,
    clamped_to,
    failback_stamp,
    resync_cut,
    resync_refusal,
)
from .surgery import archive_suffix, ensure_archive, group_offsets, nudge_owner, take_over, truncate


@dataclass
class ResyncOptions:
    dry_run: bool = False
    timeout_s: float = 10.0
    #: how long to wait for the target's assigned broker to serve the emptied partition
    serve_timeout_s: float = 30.0


def resync(
    topology: Topology,
    link_spec: str,
    topic: str,
    options: ResyncOptions | None = None,
    now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
) -> ResyncReport:
    """Archive the target copy of the source topic ``topic`` and copy it again from the
    source's log start. Refuses, changing nothing: an unknown link, a topic the link does
    not copy, a target that is not this link's mirror, an unreadable target store."""
    options = options or ResyncOptions()
    link = topology.link(link_spec)
    if not link.selects(topic):
        raise InvalidArgument(f"topic: link {link.name} does not copy {topic!r}")
    a_dc, b_dc = topology.dc(link.source), topology.dc(link.target)
    target_topic = link.target_topic(topic)
    store_b = local_store(b_dc)
    if store_b is None:
        raise InvalidArgument(
            f"link: {b_dc.name}'s log store {b_dc.store.uri} is not readable on this host "
            "(resync archives the target's segments and must read them)"
        )
    zk_b = open_zk(b_dc, options.timeout_s)
    zk_a: KazooClient | None = None
    readers: list[BrokerReader | StoreLogReader] = []
    try:
        topics_b = TopicStore(zk_b)
        try:
            meta_b = topics_b.get(target_topic)
        except UnknownTopic:
            raise InvalidArgument(
                f"topic: {b_dc.name} has no topic {target_topic!r} to resync"
            ) from None
        refusal = resync_refusal(link, topic, meta_b.mirror)
        if refusal is not None or meta_b.mirror is None:
            raise InvalidArgument(f"topic: {refusal}")
        try:
            zk_a = open_zk(a_dc, options.timeout_s)
        except TalosError as exc:
            raise InvalidArgument(
                f"link: cannot resync while {a_dc.name} is unreachable: {exc}"
            ) from None
        states_a, states_b = PartitionStateStore(zk_a), PartitionStateStore(zk_b)
        b_brokers = BrokerReader(b_dc.bootstrap, options.timeout_s)
        readers.append(b_brokers)
        report = ResyncReport(
            link.name,
            topic,
            target_topic,
            options.dry_run,
            archive_topic_name(target_topic, failback_stamp(now_ms())),
        )
        # Planned the same way for the dry run and the real run.
        try:
            incarnation = TopicStore(zk_a).get(topic).incarnation or None
        except UnknownTopic:
            raise InvalidArgument(f"topic: {a_dc.name} has no topic {topic!r}") from None
        starts = [states_a.get(topic, p).log_start for p in range(meta_b.partitions)]
        if options.dry_run:
            for p in range(meta_b.partitions):
                state = states_b.get(topic=target_topic, partition=p)
                end = b_brokers.log_end(target_topic, p)
                groups = clamped_to(group_offsets(zk_b, target_topic, p), starts[p])
                report.partitions.append(
                    PartitionResync(p, state.log_start, end, starts[p], groups_clamped=groups)
                )
            return report

        fenced = topics_b.update_mirror(target_topic, lifted(begin_resync)).mirror
        if fenced is None:
            raise InvalidArgument(f"topic: {target_topic!r} stopped being a mirror meanwhile")
        b_store = StoreLogReader(zk_b, store_b, b_dc.cluster)
        readers.append(b_store)
        archive_ready = False
        for p in range(meta_b.partitions):
            state = take_over(states_b, store_b, b_dc.cluster, target_topic, p)
            cut = resync_cut(state, starts[p])
            groups = clamped_to(group_offsets(zk_b, target_topic, p), cut.log_start)
            outcome = PartitionResync(
                p, state.log_start, state.sealed_end, cut.log_start, groups_clamped=groups
            )
            if outcome.replaced:
                if not archive_ready:
                    ensure_archive(
                        zk_b, b_dc, meta_b, report.archive_topic, options.timeout_s, now_ms
                    )
                    archive_ready = True
                outcome.archived = archive_suffix(
                    b_dc,
                    b_store,
                    state,
                    target_topic,
                    p,
                    state.log_start,
                    report.archive_topic,
                    options.timeout_s,
                )
            truncate(zk_b, target_topic, p, cut, state, groups)
            outcome.served_at = nudge_owner(
                b_dc,
                target_topic,
                p,
                cut.log_start,
                state.epoch,
                fenced.epoch,
                link.name,
                options.timeout_s,
                options.serve_timeout_s,
            )
            if outcome.served_at is None:
                outcome.note = "the assigned broker has not served the partition again yet"
            report.partitions.append(outcome)
        topics_b.update_mirror(target_topic, lifted(lambda m: finish_resync(m, incarnation)))
        return report
    finally:
        for reader in readers:
            reader.close()
        close_zk(zk_a)
        close_zk(zk_b)
