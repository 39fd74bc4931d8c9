"""`talos token create|revoke|list` and `talos acl add|remove|list`, and the client flags
(--tls-ca, --tls-client-cert/--tls-client-key, --token/--token-file) every command takes.

Tokens and ACLs are written to the cluster's ZooKeeper directly (as Kafka's tools did
with --zookeeper): whoever can write that ZooKeeper administers its security.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from datetime import UTC, datetime

from kazoo.client import KazooClient

from talos.clock import SYSTEM_CLOCK
from talos.coord.zk import connect
from talos.errors import InvalidArgument

from .acl import OPERATIONS, AclEntry, parse_operation
from .store import SecurityStore
from .tls import ENV_CA, ENV_CERT, ENV_KEY, ENV_TOKEN, ENV_TOKEN_FILE


def add_client_flags(parser: argparse.ArgumentParser) -> None:
    """Global flags (before the command): how every client command reaches brokers."""
    group = parser.add_argument_group("client security (also from the environment)")
    group.add_argument("--tls-ca", default=None, help=f"CA certificate (PEM) to trust; ${ENV_CA}")
    group.add_argument(
        "--tls-client-cert", default=None, help=f"client certificate for mutual TLS; ${ENV_CERT}"
    )
    group.add_argument("--tls-client-key", default=None, help=f"its private key; ${ENV_KEY}")
    group.add_argument("--token", default=None, help=f"bearer token (implies TLS); ${ENV_TOKEN}")
    group.add_argument(
        "--token-file", default=None, help=f"file holding the token; ${ENV_TOKEN_FILE}"
    )


def export_client_flags(args: argparse.Namespace, environ: MutableMapping[str, str]) -> None:
    """Given flags override the environment, for this command and every process it starts
    (bench workers, brokers' tools): clients read their credentials from there."""
    for flag, name in (
        (args.tls_ca, ENV_CA),
        (args.tls_client_cert, ENV_CERT),
        (args.tls_client_key, ENV_KEY),
    ):
        if flag is not None:
            environ[name] = flag
    if args.token is not None and args.token_file is not None:
        raise InvalidArgument("token: give --token or --token-file, not both")
    if args.token is not None:
        environ[ENV_TOKEN] = args.token
        environ.pop(ENV_TOKEN_FILE, None)
    if args.token_file is not None:
        environ[ENV_TOKEN_FILE] = args.token_file
        environ.pop(ENV_TOKEN, None)


def _zookeeper_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--zookeeper",
        default=os.environ.get("TALOS_ZOOKEEPER"),
        help="ZooKeeper host:port of the cluster ($TALOS_ZOOKEEPER)",
    )
    parser.add_argument("--cluster", default="local", help="cluster name (ZooKeeper chroot)")
    return parser


@contextmanager
def _store(args: argparse.Namespace) -> Iterator[SecurityStore]:
    if not args.zookeeper:
        raise InvalidArgument("zookeeper: pass --zookeeper HOST:PORT or set TALOS_ZOOKEEPER")
    zk: KazooClient = connect(args.zookeeper, args.cluster)
    try:
        yield SecurityStore(zk)
    finally:
        zk.stop()
        zk.close()


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def cmd_token_create(args: argparse.Namespace) -> int:
    with _store(args) as store:
        token, record = store.create_token(
            args.tenant, args.superuser, SYSTEM_CLOCK.wall_ms(), args.description or ""
        )
    if args.json:
        print(json.dumps({**record.public(), "token": token}))
    else:
        print(token)
        kind = "superuser " if record.superuser else ""
        print(
            f"token {record.token_id} for {kind}tenant {record.tenant}: shown once, only its "
            "hash is stored",
            file=sys.stderr,
        )
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    with _store(args) as store:
        store.revoke_token(args.id)
    print(f"revoked token {args.id}")
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    with _store(args) as store:
        records = store.list_tokens()
    if args.json:
        print(json.dumps([r.public() for r in records], indent=2))
        return 0
    print(f"{'id':<12}  {'tenant':<20} {'superuser':<9}  {'created':<23}  description")
    for r in records:
        print(
            f"{r.token_id:<12}  {r.tenant:<20} {'yes' if r.superuser else 'no':<9}  "
            f"{_when(r.created_ms):<23}  {r.description}"
        )
    return 0


def _entry(args: argparse.Namespace) -> AclEntry:
    return AclEntry(args.tenant, parse_operation(args.operation), args.topic)


def cmd_acl_add(args: argparse.Namespace) -> int:
    entry = _entry(args)
    with _store(args) as store:
        added = store.add_acl(entry, SYSTEM_CLOCK.wall_ms())
    state = "added" if added else "already present"
    print(f"tenant {entry.tenant}: {entry.describe()} ({state})")
    return 0


def cmd_acl_remove(args: argparse.Namespace) -> int:
    entry = _entry(args)
    with _store(args) as store:
        store.remove_acl(entry)
    print(f"tenant {entry.tenant}: removed {entry.describe()}")
    return 0


def cmd_acl_list(args: argparse.Namespace) -> int:
    with _store(args) as store:
        acls = store.list_acls()
    entries = acls.of_tenant(args.tenant) if args.tenant else acls.entries
    if args.json:
        print(
            json.dumps(
                [
                    {"tenant": e.tenant, "operation": e.operation.value, "topic": e.pattern}
                    for e in entries
                ],
                indent=2,
            )
        )
        return 0
    print(f"{'tenant':<20} {'operation':<9}  topic")
    for e in entries:
        print(f"{e.tenant:<20} {e.operation.value:<9}  {e.pattern}")
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = sub.add_parser("token", help="bearer tokens that map to tenants")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = _zookeeper_flags(token_sub.add_parser("create", help="print a new token (once)"))
    create.add_argument("--tenant", required=True)
    create.add_argument("--superuser", action="store_true", help="may do everything (an admin)")
    create.add_argument("--description", default=None)
    create.add_argument("--json", action="store_true")
    create.set_defaults(func=cmd_token_create)
    revoke = _zookeeper_flags(token_sub.add_parser("revoke", help="brokers refuse it at once"))
    revoke.add_argument("id", help="the token id (`talos token list`)")
    revoke.set_defaults(func=cmd_token_revoke)
    listing = _zookeeper_flags(token_sub.add_parser("list", help="ids and tenants, no secrets"))
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_token_list)

    acl = sub.add_parser("acl", help="topic ACLs: who may produce, consume, admin, mirror")
    acl_sub = acl.add_subparsers(dest="acl_command", required=True)
    for name, func, what in (
        ("add", cmd_acl_add, "grant"),
        ("remove", cmd_acl_remove, "withdraw"),
    ):
        p = _zookeeper_flags(acl_sub.add_parser(name, help=f"{what} TENANT OPERATION on TOPIC"))
        p.add_argument("tenant")
        p.add_argument("operation", choices=OPERATIONS)
        p.add_argument("topic", help="a topic, a prefix ending in '*' (orders.*), or '*'")
        p.set_defaults(func=func)
    acl_list = _zookeeper_flags(acl_sub.add_parser("list"))
    acl_list.add_argument("--tenant", default=None)
    acl_list.add_argument("--json", action="store_true")
    acl_list.set_defaults(func=cmd_acl_list)
