"""Failover of a mirror link A->B: promote B, later fail back the old primary A.

- :mod:`.plan`: the decisions, free of I/O (recovery point, promotion epochs,
  divergence, truncation, group offsets to clamp, refusals). The dry runs
  plan with exactly these.
- :mod:`.promote`: fence the link (next mirror epoch: the old link's appends
  are refused), read the recovery point per partition, open the target for
  producers, make the old primary's topics read-only when it answers.
- :mod:`.failback`: per partition, take A's partition over the way a broker
  does, find where A's log stops matching B's copy, archive A's suffix into
  ``<topic>.diverged.<stamp>``, cut A back to the common point (group offsets
  past it move back in the same transaction) and make A a mirror of B:A.
- :mod:`.resync`: replace a diverged mirror copy with a fresh copy of the source.
- :mod:`.surgery`: the partition operations failback and resync share.
- :mod:`.report`: text and JSON output.
"""

from __future__ import annotations

from .common import (
    BrokerReader,
    FallbackReader,
    LogReader,
    MirrorTopic,
    close_zk,
    local_store,
    mirror_pairs,
    open_zk,
    read_progress,
    write_control,
)
from .failback import FailbackOptions, failback, reverse_command
from .plan import (
    Divergence,
    FailbackReport,
    PartitionFailback,
    PartitionRecovery,
    Progress,
    PromotionPlan,
    RecoveryReport,
    SourceView,
    StoredBatch,
    archive_topic_name,
    clamped_offsets,
    clamped_to,
    failback_refusal,
    failback_stamp,
    find_divergence,
    is_copy_of,
    plan_promotion,
    recovery_point,
    resync_cut,
    resync_refusal,
    source_demotion,
    truncated_state,
)
from .promote import PromoteOptions, promote
from .report import format_failback, format_recovery, format_resync, report_json
from .resync import ResyncOptions, resync

__all__ = [
    "BrokerReader",
    "Divergence",
    "FailbackOptions",
    "FailbackReport",
    "FallbackReader",
    "LogReader",
    "MirrorTopic",
    "PartitionFailback",
    "PartitionRecovery",
    "Progress",
    "PromoteOptions",
    "PromotionPlan",
    "RecoveryReport",
    "ResyncOptions",
    "SourceView",
    "StoredBatch",
    "archive_topic_name",
    "clamped_offsets",
    "clamped_to",
    "close_zk",
    "failback",
    "failback_refusal",
    "failback_stamp",
    "find_divergence",
    "format_failback",
    "format_recovery",
    "format_resync",
    "is_copy_of",
    "local_store",
    "mirror_pairs",
    "open_zk",
    "plan_promotion",
    "promote",
    "read_progress",
    "recovery_point",
    "report_json",
    "resync",
    "resync_cut",
    "resync_refusal",
    "reverse_command",
    "source_demotion",
    "truncated_state",
    "write_control",
]
