"""The ``talos`` command line.

Errors go to stderr with a non-zero exit code (2 for bad input, 1 for
anything else); status commands take ``--json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from talos import aio
from talos.config import UNLIMITED, TopicConfig
from talos.errors import InvalidArgument, TalosError
from talos.signals import stop_on_signals
from talos.storage.hdfs import jvm_started

DEFAULT_DEV_DIR = "var/dev"
BOOTSTRAP_FILE = "bootstrap"


class CliError(Exception):
    """A usage problem reported as ``talos: error: ...`` with exit code 2."""


def resolve_bootstrap(explicit: str | None) -> str:
    """--bootstrap, else $TALOS_BOOTSTRAP, else the file `talos dev up` wrote."""
    if explicit:
        return explicit
    env = os.environ.get("TALOS_BOOTSTRAP")
    if env:
        return env
    path = Path(os.environ.get("TALOS_DEV_DIR", DEFAULT_DEV_DIR)) / BOOTSTRAP_FILE
    if path.exists():
        return path.read_text().strip()
    raise CliError(
        "bootstrap: no broker address; pass --bootstrap HOST:PORT, set TALOS_BOOTSTRAP, "
        f"or start a cluster with `talos dev up` (it writes {path})"
    )


# ---- broker -------------------------------------------------------------------


def cmd_broker(args: argparse.Namespace) -> int:
    from talos.broker.server import BrokerConfig, run_broker

    if not args.data_dir and not args.store:
        raise CliError("broker: pass --data-dir DIR (posix) or --store hdfs://NAMENODE:PORT/PATH")
    config = BrokerConfig(
        broker_id=args.id,
        cluster=args.cluster,
        zookeeper=args.zookeeper,
        data_dir=args.data_dir,
        listen=args.listen,
        advertised_host=args.advertised_host or "",
        workers=args.workers,
        max_queued_bytes=args.max_queued_bytes,
        session_timeout=args.session_timeout,
        connect_timeout=args.connect_timeout,
        reassign_delay_ms=args.reassign_delay_ms,
        clock_offset_file=args.clock_offset_file or "",
        producer_expire_ms=args.producer_expire_ms,
        store=args.store or "",
        metrics_listen=args.metrics_listen or "",
        traffic_interval_s=args.traffic_interval_s,
        balance_epsilon=args.balance_epsilon,
        max_moves_per_round=args.max_moves_per_round,
        tls_cert=args.tls_cert or "",
        tls_key=args.tls_key or "",
        tls_client_ca=args.tls_client_ca or "",
        auth=args.auth,
    ).validated()

    def ready(address: str) -> None:
        print(f"broker {args.id} serving on {address}", flush=True)

    aio.run(run_broker(config, ready))
    return 0


# ---- dev ----------------------------------------------------------------------


def cmd_dev_up(args: argparse.Namespace) -> int:
    from talos.testing.cluster import LocalCluster
    from talos.testing.supervisor import supervise

    data_dir = Path(args.data_dir)
    if args.secure and (args.dcs > 1 or args.store != "posix"):
        raise CliError("dev up: --secure runs one posix DC for now; drop --dcs 2 / --store hdfs")
    if args.dcs > 1:
        from talos.testing.multidc import run_dev_up

        stop_all = threading.Event()
        stop_on_signals(stop_all)
        return run_dev_up(
            data_dir,
            brokers=args.brokers,
            session_timeout=args.session_timeout,
            stop=stop_all,
            store=args.store,
        )
    stop = threading.Event()
    stop_on_signals(stop)
    dfs = None
    if args.store == "hdfs":
        from talos.testing.hdfs import MiniDfsCluster

        dfs = MiniDfsCluster(datanodes=3, data_dir=str(data_dir / "hdfs"))
        print("starting a MiniDFSCluster (1 NameNode, 3 DataNodes) ...", flush=True)
        dfs.start()
        print(f"HDFS:       {dfs.url('/talos')}")
        print(f"NameNode:   http://{dfs.http_address}/", flush=True)
    store = args.store if args.store.startswith("hdfs://") else ""
    if store:
        print(f"HDFS:       {store}", flush=True)
    cluster = LocalCluster(
        brokers=args.brokers,
        data_dir=str(data_dir),
        cluster=args.cluster,
        session_timeout=args.session_timeout,
        store=dfs.url("/talos") if dfs is not None else store,
        metrics=True,
        security=_dev_security(data_dir) if args.secure else None,
    )
    bootstrap_file = data_dir / BOOTSTRAP_FILE
    try:
        print(f"starting ZooKeeper and {args.brokers} broker(s) in {data_dir} ...", flush=True)
        cluster.start()
        bootstrap_file.write_text(cluster.bootstrap + "\n")
        print(f"ZooKeeper:  {cluster.zookeeper.address}")
        print(f"bootstrap:  {cluster.bootstrap}")
        print(f"(written to {bootstrap_file}; Ctrl-C stops everything)", flush=True)
        if cluster.security is not None:
            _print_secure_usage(cluster)
        supervise(data_dir, stop, {b.broker_id: b for b in cluster.brokers})
    finally:
        print("stopping ...", flush=True)
        cluster.stop()
        if dfs is not None:
            dfs.stop()
        bootstrap_file.unlink(missing_ok=True)
    return 0


def _dev_store(text: str) -> str:
    """``dev up --store``: posix, hdfs (a MiniDFSCluster) or an existing hdfs:// URI."""
    if text in ("posix", "hdfs"):
        return text
    if text.startswith("hdfs://"):
        from talos.storage.hdfs import parse_hdfs_uri

        try:
            parse_hdfs_uri(text, "--store")
        except InvalidArgument as exc:
            raise argparse.ArgumentTypeError(exc.message) from None
        return text
    raise argparse.ArgumentTypeError(
        f"must be posix, hdfs or hdfs://NAMENODE:PORT/PATH, got {text!r}"
    )


def _dev_security(data_dir: Path) -> Any:
    from talos.security.dev import ClusterSecurity

    return ClusterSecurity.generate(data_dir / "secure")


def _print_secure_usage(cluster: Any) -> None:
    from talos.client.connection import set_default_security

    set_default_security(cluster.admin_client)  # the supervisor's probes of restarted brokers
    pki = cluster.security.pki
    zk = cluster.zookeeper.address
    print(f"TLS:        every broker; CA {pki.ca} (a throwaway CA, for this deployment only)")
    print(f"admin:      superuser token in {cluster.admin_token_file} (shown once, hashed in ZK)")
    print("use it:")
    print(f"  export TALOS_TLS_CA={pki.ca} TALOS_TOKEN_FILE={cluster.admin_token_file}")
    print("  talos topic create orders --partitions 3")
    print("a tenant that may only produce to and consume from orders:")
    print(f"  talos token create --zookeeper {zk} --tenant shop > shop.token")
    print(f"  talos acl add --zookeeper {zk} shop produce orders")
    print(f"  talos acl add --zookeeper {zk} shop consume orders")
    print("  echo hi | talos --token-file shop.token produce orders", flush=True)


def cmd_dev_restart(args: argparse.Namespace) -> int:
    from talos.testing.supervisor import run_dev_restart

    run_dev_restart(args.data_dir, args.kind, args.name)
    return 0


# ---- topics -------------------------------------------------------------------


def _retention_bytes(text: str) -> int:
    """``--retention-bytes``: a positive integer, or ``unlimited`` / -1."""
    if text.strip().lower() == "unlimited":
        return UNLIMITED
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a positive number of bytes or 'unlimited', got {text!r}"
        ) from None


def _retention_ms(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a whole number of milliseconds, got {text!r}"
        ) from None


def _retention_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--retention-ms",
        type=_retention_ms,
        default=None,
        help="delete sealed segments whose newest record is older (default 7 days; "
        "30 for .diverged. archives); at least segment_ms",
    )
    parser.add_argument(
        "--retention-bytes",
        type=_retention_bytes,
        default=None,
        help="delete the oldest sealed segments while a partition is larger (default unlimited)",
    )


def _admin(args: argparse.Namespace) -> Any:
    from talos.client import Admin

    return Admin(resolve_bootstrap(args.bootstrap))


def cmd_topic_create(args: argparse.Namespace) -> int:
    defaults = TopicConfig()
    config = TopicConfig(
        max_message_bytes=args.max_message_bytes or defaults.max_message_bytes,
        durability=args.durability or defaults.durability,
        segment_bytes=args.segment_bytes or defaults.segment_bytes,
        segment_ms=args.segment_ms or defaults.segment_ms,
        retention_ms=defaults.retention_ms if args.retention_ms is None else args.retention_ms,
        retention_bytes=(
            defaults.retention_bytes if args.retention_bytes is None else args.retention_bytes
        ),
    ).validated()
    with _admin(args) as admin:
        admin.create_topic(args.name, args.partitions, config)
        if args.wait:
            admin.wait_until_ready(args.name)
    print(f"created topic {args.name} with {args.partitions} partition(s)")
    return 0


def cmd_topic_list(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        names = admin.list_topics()
    if args.json:
        print(json.dumps(names))
    else:
        for name in names:
            print(name)
    return 0


def cmd_topic_describe(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        description = admin.describe_topic(args.name)
    data = {
        "name": description.name,
        "config": description.config.to_dict(),
        "partitions": [
            {
                "partition": p.partition,
                "owner": p.owner_id,
                "address": p.owner_address,
                "log_start": p.log_start,
                "log_end": p.log_end,
            }
            for p in description.partitions
        ],
    }
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    config = description.config
    print(
        f"topic {description.name}: {len(description.partitions)} partition(s), "
        f"durability={config.durability}, max_message_bytes={config.max_message_bytes}, "
        f"segment_bytes={config.segment_bytes}, segment_ms={config.segment_ms}, "
        f"retention_ms={config.retention_ms}, retention_bytes="
        f"{'unlimited' if config.retention_bytes == UNLIMITED else config.retention_bytes}"
    )
    print(f"{'partition':>9}  {'owner':<8} {'address':<22} {'log start':>10} {'log end':>10}")
    for p in description.partitions:
        log_end = str(p.log_end) if p.log_end >= 0 else "-"
        log_start = str(p.log_start) if p.log_start >= 0 and p.log_end >= 0 else "-"
        print(
            f"{p.partition:>9}  {p.owner_id or '-':<8} {p.owner_address or '-':<22} "
            f"{log_start:>10} {log_end:>10}"
        )
    return 0


def cmd_topic_alter(args: argparse.Namespace) -> int:
    if args.partitions is None and args.retention_ms is None and args.retention_bytes is None:
        raise InvalidArgument("alter: give --partitions, --retention-ms or --retention-bytes")
    with _admin(args) as admin:
        admin.alter_topic(
            args.name,
            args.partitions,
            retention_ms=args.retention_ms,
            retention_bytes=args.retention_bytes,
        )
    changed = [
        f"{name}={value}"
        for name, value in (
            ("partitions", args.partitions),
            ("retention_ms", args.retention_ms),
            ("retention_bytes", args.retention_bytes),
        )
        if value is not None
    ]
    print(f"topic {args.name}: {', '.join(changed)}")
    return 0


def cmd_topic_delete(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        admin.delete_topic(args.name)
    print(f"deleted topic {args.name}")
    return 0


# ---- produce / consume --------------------------------------------------------


def cmd_produce(args: argparse.Namespace) -> int:
    from talos.client import Producer

    key = args.key.encode() if args.key is not None else None
    count = 0
    with Producer(resolve_bootstrap(args.bootstrap), linger_ms=args.linger_ms) as producer:
        futures = []
        for line in sys.stdin:
            text = line.rstrip("\n")
            line_key = key
            if args.key_separator and args.key_separator in text:
                key_text, text = text.split(args.key_separator, 1)
                line_key = key_text.encode()
            futures.append(
                producer.send(args.topic, text.encode(), key=line_key, partition=args.partition)
            )
            count += 1
        producer.flush()
        for future in futures:
            future.result()
    print(f"produced {count} message(s) to {args.topic}", file=sys.stderr)
    return 0


def cmd_consume(args: argparse.Namespace) -> int:
    import time

    from talos.client import Consumer, TopicPartition

    # Say on stderr when a position is reset (e.g. retention removed it), whatever the log level.
    resets = logging.getLogger("talos.client.consumer")
    notice = logging.StreamHandler(sys.stderr)
    notice.setFormatter(logging.Formatter("talos consume: %(message)s"))
    notice.setLevel(logging.WARNING)
    resets.addHandler(notice)
    resets.setLevel(logging.WARNING)
    resets.propagate = False
    consumer = Consumer(
        resolve_bootstrap(args.bootstrap),
        group_id=args.group,
        auto_offset_reset="earliest" if args.from_beginning else "latest",
    )
    seen = 0
    try:
        if args.group:
            consumer.subscribe([args.topic])
        else:
            partitions = consumer.router.route(args.topic).partitions
            consumer.assign([TopicPartition(args.topic, p) for p in range(partitions)])
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        while args.max_messages is None or seen < args.max_messages:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            for message in consumer.poll(timeout_s=min(remaining or 1.0, 1.0)):
                value = (message.value or b"").decode(errors="replace")
                if args.print_offsets:
                    key = (message.key or b"").decode(errors="replace")
                    print(f"p{message.partition}@{message.offset}\t{key}\t{value}", flush=True)
                else:
                    print(value, flush=True)
                seen += 1
                if args.max_messages is not None and seen >= args.max_messages:
                    break
        if args.group:
            consumer.commit()
    finally:
        consumer.close()
    return 0


# ---- parser -------------------------------------------------------------------


def _positive_int(name: str, low: int = 1) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name}: must be an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{name}: must be >= {low}, got {value}")
        return value

    return parse


def _checked(validate: Callable[[Any, str], Any], param: str, kind: type) -> Callable[[str], Any]:
    """An argparse type: convert, then validate; errors name the flag and what is allowed."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{param}: must be {'an integer' if kind is int else 'a number'}, got {text!r}"
            ) from None
        try:
            return validate(value, param)
        except InvalidArgument as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _balance_arguments(broker: argparse.ArgumentParser) -> None:
    from talos.coord.assignment import (
        DEFAULT_EPSILON,
        DEFAULT_MAX_MOVES,
        validate_epsilon,
        validate_max_moves,
    )
    from talos.coord.traffic import DEFAULT_INTERVAL_S, validate_interval

    flags: list[tuple[str, Callable[[Any, str], Any], type, object, str]] = [
        (
            "traffic-interval-s",
            validate_interval,
            float,
            DEFAULT_INTERVAL_S,
            "seconds between two traffic reports of this broker, and between two "
            "balancing rounds of the controller",
        ),
        (
            "balance-epsilon",
            validate_epsilon,
            float,
            DEFAULT_EPSILON,
            "the controller keeps every broker's bytes/s within (1+EPSILON) x the mean",
        ),
        (
            "max-moves-per-round",
            validate_max_moves,
            int,
            DEFAULT_MAX_MOVES,
            "partitions a balancing round may move, each a takeover; 0: traffic only "
            "guides where new and orphaned partitions go",
        ),
    ]
    for name, validate, kind, default, text in flags:
        broker.add_argument(
            f"--{name}",
            type=_checked(validate, name, kind),
            default=default,
            help=f"{text} (default {default})",
        )


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("talos")
    except PackageNotFoundError:
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    # No abbreviations of the global options: "--to" of a subcommand must not be read as
    # an abbreviated global "--token".
    parser = argparse.ArgumentParser(
        prog="talos", description="Talos message queue", allow_abbrev=False
    )
    parser.add_argument("--log-level", default=os.environ.get("TALOS_LOG_LEVEL", "WARNING"))
    parser.add_argument(  # drills check with it that a host runs talos
        "--version", action="version", version=f"talos {_installed_version()}"
    )
    from talos.security.cli import add_client_flags

    add_client_flags(parser)
    sub = parser.add_subparsers(dest="command", required=True)

    broker = sub.add_parser("broker", help="run one broker")
    broker.add_argument("--zookeeper", required=True, help="ZooKeeper host:port[,host:port]")
    broker.add_argument("--cluster", default="local", help="cluster name (ZooKeeper chroot)")
    broker.add_argument("--id", required=True, help="broker id, unique in the cluster")
    broker.add_argument("--listen", default="127.0.0.1:9092", help="host:port to serve gRPC on")
    broker.add_argument("--advertised-host", default=None)
    broker.add_argument("--data-dir", default="", help="posix log store root")
    broker.add_argument(
        "--store",
        default=None,
        help="log store instead of --data-dir: hdfs://NAMENODE:PORT/PATH or posix:/PATH",
    )
    broker.add_argument("--workers", type=_positive_int("workers", 0), default=0)
    broker.add_argument(
        "--max-queued-bytes",
        type=_positive_int("max-queued-bytes", 1024),
        default=256 * 1024 * 1024,
        help="bytes queued for writing on this broker before it answers THROTTLED",
    )
    broker.add_argument("--session-timeout", type=float, default=10.0)
    broker.add_argument("--connect-timeout", type=float, default=10.0)
    broker.add_argument(
        "--reassign-delay-ms", type=_positive_int("reassign-delay-ms", 0), default=0
    )
    broker.add_argument(
        "--clock-offset-file",
        default=None,
        help="file with a wall-clock offset in ms, re-read every 0.5 s (chaos clock jumps)",
    )
    broker.add_argument(
        "--producer-expire-ms",
        type=_positive_int("producer-expire-ms", 1),
        default=7 * 24 * 3600 * 1000,
        help="forget an idempotent producer idle this long on a partition (default 7 days); "
        "its retries are deduplicated until then",
    )
    broker.add_argument(
        "--metrics-listen", default=None, help="HOST:PORT to serve Prometheus /metrics on"
    )
    _balance_arguments(broker)
    broker.add_argument("--tls-cert", default=None, help="serve TLS with this certificate (PEM)")
    broker.add_argument("--tls-key", default=None, help="the certificate's private key (PEM)")
    broker.add_argument(
        "--tls-client-ca",
        default=None,
        help="mutual TLS: require client certificates signed by this CA",
    )
    broker.add_argument(
        "--auth",
        action="store_true",
        help="require a bearer token on every call and check topic ACLs (needs TLS)",
    )
    broker.set_defaults(func=cmd_broker, log_level_default="INFO")

    dev = sub.add_parser("dev", help="local deployments")
    dev_sub = dev.add_subparsers(dest="dev_command", required=True)
    up = dev_sub.add_parser("up", help="start ZooKeeper and N brokers until Ctrl-C")
    up.add_argument("--brokers", type=_positive_int("brokers"), default=3)
    up.add_argument("--data-dir", default=os.environ.get("TALOS_DEV_DIR", DEFAULT_DEV_DIR))
    up.add_argument("--cluster", default="local")
    up.add_argument(
        "--store",
        type=_dev_store,
        default="posix",
        help="posix (default); hdfs: also start a MiniDFSCluster per DC and keep the logs "
        "on it; hdfs://NAMENODE:PORT/PATH: an existing HDFS (DC X under PATH/X with --dcs 2)",
    )
    up.add_argument("--session-timeout", type=float, default=6.0)
    up.add_argument(
        "--dcs",
        type=int,
        choices=(1, 2),
        default=1,
        help="2: datacenters A and B (--brokers each) with a mirror link A->B and a topology file",
    )
    up.add_argument(
        "--secure",
        action="store_true",
        help="TLS and tokens: generate a throwaway CA, certificates and an admin token",
    )
    up.set_defaults(func=cmd_dev_up)
    restart = dev_sub.add_parser(
        "restart", help="bring back a process of the running `talos dev up` (restart if alive)"
    )
    restart.add_argument("kind", choices=("broker", "mirror"))
    restart.add_argument("name", help="broker id (b1, or A/b1 with two DCs) or mirror link (A:B)")
    restart.add_argument("--data-dir", default=os.environ.get("TALOS_DEV_DIR", DEFAULT_DEV_DIR))
    restart.set_defaults(func=cmd_dev_restart)

    def with_bootstrap(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--bootstrap", default=None, help="broker host:port[,host:port]")
        return p

    topic = sub.add_parser("topic", help="create, list, describe, alter, delete topics")
    topic_sub = topic.add_subparsers(dest="topic_command", required=True)
    create = with_bootstrap(topic_sub.add_parser("create"))
    create.add_argument("name")
    create.add_argument("--partitions", type=int, default=1)
    create.add_argument("--durability", choices=("flush", "sync"), default=None)
    create.add_argument("--max-message-bytes", type=int, default=None)
    create.add_argument("--segment-bytes", type=int, default=None)
    create.add_argument("--segment-ms", type=int, default=None)
    _retention_arguments(create)
    create.add_argument("--wait", action="store_true", help="wait until every partition is served")
    create.set_defaults(func=cmd_topic_create)
    listing = with_bootstrap(topic_sub.add_parser("list"))
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_topic_list)
    describe = with_bootstrap(topic_sub.add_parser("describe"))
    describe.add_argument("name")
    describe.add_argument("--json", action="store_true")
    describe.set_defaults(func=cmd_topic_describe)
    alter = with_bootstrap(topic_sub.add_parser("alter"))
    alter.add_argument("name")
    alter.add_argument("--partitions", type=int, default=None)
    _retention_arguments(alter)
    alter.set_defaults(func=cmd_topic_alter)
    delete = with_bootstrap(topic_sub.add_parser("delete"))
    delete.add_argument("name")
    delete.set_defaults(func=cmd_topic_delete)

    produce = with_bootstrap(sub.add_parser("produce", help="one message per stdin line"))
    produce.add_argument("topic")
    produce.add_argument("--key", default=None, help="the key of every message")
    produce.add_argument(
        "--key-separator", default=None, help="read each line as KEY<SEP>VALUE (e.g. ':')"
    )
    produce.add_argument("--partition", type=int, default=None)
    produce.add_argument("--linger-ms", type=float, default=5.0)
    produce.set_defaults(func=cmd_produce)

    consume = with_bootstrap(sub.add_parser("consume", help="print one message per line"))
    consume.add_argument("topic")
    consume.add_argument("--group", default=None)
    consume.add_argument("--from-beginning", action="store_true")
    consume.add_argument("--max-messages", type=_positive_int("max-messages"), default=None)
    consume.add_argument("--timeout", type=float, default=None, help="stop after S seconds")
    consume.add_argument("--print-offsets", action="store_true")
    consume.set_defaults(func=cmd_consume)

    __import__("talos.security.cli", fromlist=["x"]).add_parsers(sub)
    from talos.group_cli import add_group_parser

    add_group_parser(sub)
    __import__("talos.quota_cli", fromlist=["x"]).add_quota_parser(sub)

    from talos.bench.cli import add_parser as add_bench_parser

    add_bench_parser(sub)
    __import__("talos.export.cli", fromlist=["x"]).add_parser(sub)
    __import__("talos.health", fromlist=["x"]).add_parser(sub)
    __import__("talos.cluster_cli", fromlist=["x"]).add_parser(sub)

    import mirror.cli

    mirror_sub = sub.add_parser("mirror").add_subparsers(dest="mirror_command", required=True)
    mirror.cli.add_run_parser(mirror_sub)
    import mirror.status_cli

    mirror.status_cli.add_status_parser(mirror_sub)
    __import__("mirror.failover_cli", fromlist=["x"]).add_failover_parsers(mirror_sub)
    __import__("topology.drill_cli", fromlist=["x"]).add_drill_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = args.log_level
    if getattr(args, "log_level_default", None) and "--log-level" not in (argv or sys.argv):
        level = args.log_level_default
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        from talos.security.cli import export_client_flags

        export_client_flags(args, os.environ)
        result: int = args.func(args)
        return result
    except (CliError, InvalidArgument) as exc:
        print(f"talos: error: {exc}", file=sys.stderr)
        return 2
    except TalosError as exc:
        print(f"talos: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def entry() -> NoReturn:
    """The ``talos`` command: main(), then an exit that survives a JVM in the process.

    Python's finalization ends threads that still wait for the GIL with pthread_exit;
    when one of them is a JVM thread inside JPype's C++ frames, the process aborts
    ("FATAL: exception not rethrown") instead of exiting with main()'s code. A process
    that started the JVM (an HDFS store) therefore flushes its output and leaves with
    os._exit: its durable state is on HDFS and in ZooKeeper, not in atexit handlers.
    """
    code = main()
    if jvm_started():
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
