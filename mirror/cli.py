"""``talos mirror run``: registered on the ``mirror`` subcommand group of talos/cli.py."""

from __future__ import annotations

import argparse
import logging
import threading
from typing import Any


def add_run_parser(mirror_sub: Any) -> argparse.ArgumentParser:
    """Add ``run`` to the ``mirror`` subparsers (``mirror_sub`` is argparse's subparsers action)."""
    from .worker import READERS

    run: argparse.ArgumentParser = mirror_sub.add_parser(
        "run", help="run a mirror worker for one link until SIGTERM or Ctrl-C"
    )
    run.add_argument("--topology", required=True, help="the topology file (TOML)")
    run.add_argument("--link", required=True, help="the link to run, SOURCE:TARGET (e.g. A:B)")
    run.add_argument(
        "--worker-id",
        default=None,
        help="unique per worker of the link (default <host>-<pid>); reuse it on restart",
    )
    run.add_argument(
        "--reader",
        choices=READERS,
        default="store",
        help="store: read the source's log store directly (default); fetch: via source brokers",
    )
    run.add_argument("--read-bytes", type=int, default=None, help="bytes per source read")
    run.add_argument("--append-bytes", type=int, default=None, help="bytes per MirrorAppend")
    run.add_argument("--session-timeout", type=float, default=None, help="ZooKeeper, seconds")
    run.add_argument(
        "--stall-after", type=float, default=None, help="seconds without progress = stalled"
    )
    run.add_argument(
        "--metrics-listen", default=None, help="HOST:PORT to serve Prometheus /metrics on"
    )
    run.set_defaults(func=cmd_mirror_run, log_level_default="INFO")
    return run


#: The name the task description uses for the same hook.
add_mirror_run_parser = add_run_parser


def cmd_mirror_run(args: argparse.Namespace) -> int:
    from talos.signals import stop_on_signals
    from topology import load_topology

    from .run import make_worker
    from .worker import WorkerOptions

    topology = load_topology(args.topology)
    overrides: dict[str, Any] = {}
    for arg, field in (
        ("read_bytes", "read_bytes"),
        ("append_bytes", "append_bytes"),
        ("session_timeout", "session_timeout_s"),
        ("stall_after", "stall_after_s"),
    ):
        value = getattr(args, arg)
        if value is not None:
            overrides[field] = value
    options = WorkerOptions(**overrides).validated()
    worker = make_worker(topology, args.link, args.worker_id, reader=args.reader, options=options)
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("kazoo").setLevel(logging.WARNING)  # connection chatter
    if args.metrics_listen:
        from talos import metrics

        address = metrics.serve(args.metrics_listen, worker.metrics_collector())
        logging.getLogger(__name__).info("metrics on http://%s/metrics", address)
    stop = threading.Event()
    restore = stop_on_signals(stop)
    try:
        worker.run(stop)
    finally:
        restore()
    return 0
