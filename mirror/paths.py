"""Where a link keeps its state in the TARGET cluster's ZooKeeper (one layout for all).

The link name "A:B" is kept verbatim (':' is legal in znode names).
"""

from __future__ import annotations

MIRROR_ROOT = "/mirror"


def link_path(link: str) -> str:
    return f"{MIRROR_ROOT}/{link}"


def workers_path(link: str) -> str:
    return f"{link_path(link)}/workers"


def worker_path(link: str, worker_id: str) -> str:
    return f"{workers_path(link)}/{worker_id}"


def progress_root(link: str) -> str:
    return f"{link_path(link)}/progress"


def progress_path(link: str, target_topic: str, partition: int) -> str:
    return f"{progress_root(link)}/{target_topic}/{partition}"


def heartbeat_path(link: str) -> str:
    return f"{link_path(link)}/heartbeat"


def offset_sync_path(link: str) -> str:
    return f"{link_path(link)}/offset_sync"


def control_path(link: str) -> str:
    """``{"state": "stopped"|"running", ...}``: ``mirror promote`` stops a link here."""
    return f"{link_path(link)}/control"


def promotion_path(link: str) -> str:
    return f"{link_path(link)}/promotion"


def failback_path(link: str) -> str:
    """In the SOURCE's ZooKeeper (A): the failback's own progress, for reruns."""
    return f"{link_path(link)}/failback"
