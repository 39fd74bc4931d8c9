"""Where everything lives in ZooKeeper, relative to the cluster chroot ``/talos/<cluster>``.

One place for the layout, so no module builds paths by hand and names that
become path components are checked before they reach ZooKeeper.
"""

from __future__ import annotations

import re

from talos.errors import InvalidArgument

ROOT = "/talos"
BROKERS = "/brokers"
CONTROLLER = "/controller"
ASSIGNMENT = "/assignment"
TOPICS = "/topics"
GROUPS = "/groups"
PRODUCER_IDS = "/producer_ids"
#: Each broker's last traffic report, an ephemeral znode per broker (coord/traffic.py).
TRAFFIC = "/traffic"

#: Created by :func:`talos.coord.zk.connect` so recipes can rely on them.
BASE_PATHS = (BROKERS, TOPICS, GROUPS)

_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def validate_name(name: object, param: str) -> str:
    """A znode-safe identifier: 1 to 249 letters, digits, '.', '_' or '-', not '.' or '..'."""
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
        raise InvalidArgument(
            f"{param}: {name!r} must be 1 to 249 letters, digits, '.', '_' or '-' "
            "(and not '.' or '..')"
        )
    return name


def chroot(cluster: str) -> str:
    return f"{ROOT}/{validate_name(cluster, 'cluster')}"


def broker(broker_id: str) -> str:
    return f"{BROKERS}/{broker_id}"


def traffic(broker_id: str) -> str:
    return f"{TRAFFIC}/{broker_id}"


def topic(name: str) -> str:
    return f"{TOPICS}/{name}"


def incarnations(topic_name: str) -> str:
    return f"{TOPICS}/{topic_name}/incarnations"


def incarnation(topic_name: str, incarnation_id: str) -> str:
    """An empty znode named by the topic's incarnation: every partition-state
    compare-and-set checks it in the same transaction, so a write meant for a
    deleted topic fails even when a recreated znode reached the same version."""
    return f"{incarnations(topic_name)}/{incarnation_id}"


def partitions(topic_name: str) -> str:
    return f"{TOPICS}/{topic_name}/partitions"


def partition(topic_name: str, partition_id: int) -> str:
    return f"{TOPICS}/{topic_name}/partitions/{partition_id}"


def partition_chunk(topic_name: str, partition_id: int, chunk: str) -> str:
    """An immutable chunk of a partition's older sealed segments (issue 12 §3): a child
    of the partition-state znode, which lists its chunks."""
    return f"{partition(topic_name, partition_id)}/{chunk}"


def group(name: str) -> str:
    return f"{GROUPS}/{name}"


def group_offsets_root(name: str) -> str:
    return f"{GROUPS}/{name}/offsets"


def group_members(name: str) -> str:
    return f"{GROUPS}/{name}/members"


def group_generation(name: str) -> str:
    return f"{GROUPS}/{name}/generation"


def group_offsets(name: str, topic_name: str) -> str:
    return f"{GROUPS}/{name}/offsets/{topic_name}"


def group_offset(name: str, topic_name: str, partition_id: int) -> str:
    return f"{GROUPS}/{name}/offsets/{topic_name}/{partition_id}"


def partition_key(topic_name: str, partition_id: int) -> str:
    """The ``"<topic>/<partition>"`` key used in the assignment JSON."""
    return f"{topic_name}/{partition_id}"


def parse_partition_key(key: str) -> tuple[str, int]:
    topic_name, sep, number = key.rpartition("/")
    if not sep or not topic_name or not number.isdigit():
        raise ValueError(f"bad partition key {key!r}")
    return topic_name, int(number)
