"""TLS, tokens and ACLs end to end: real ZooKeeper, real broker processes, real gRPC over TLS.

Every refusal is checked for its error class (a wire code), its message (it names what is
wrong) and for storing nothing.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from talos.cli import main
from talos.client import Admin, Consumer, Producer, TopicPartition
from talos.coord.zk import connect
from talos.errors import NotAuthorized, TalosError, TlsError, Unauthenticated
from talos.security.acl import AclEntry, Operation
from talos.security.dev import ClusterSecurity
from talos.security.pki import generate
from talos.security.store import SecurityStore
from talos.security.tls import (
    ENV_CA,
    ENV_CERT,
    ENV_KEY,
    ENV_TOKEN,
    ENV_TOKEN_FILE,
    ClientSecurity,
)
from talos.testing.cluster import LocalCluster
from talos.testing.zookeeper import ZooKeeperServer

ROOT = Path(__file__).resolve().parents[2]


def secure_cluster(base: Path, zk: ZooKeeperServer, mtls: bool = False) -> LocalCluster:
    cluster = LocalCluster(
        brokers=1,
        data_dir=str(base / "cluster"),
        cluster=f"sec-{uuid.uuid4().hex[:8]}",
        session_timeout=3.0,
        zookeeper=zk,
        security=ClusterSecurity.generate(base / "pki", mtls=mtls),
    )
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="module")
def secure(
    tmp_path_factory: pytest.TempPathFactory, zk_server: ZooKeeperServer
) -> Iterator[LocalCluster]:
    cluster = secure_cluster(tmp_path_factory.mktemp("secure"), zk_server)
    try:
        with Admin(cluster.bootstrap, security=cluster.admin_client) as admin:
            admin.create_topic("orders", 1)
            admin.wait_until_ready("orders")
        yield cluster
    finally:
        cluster.stop()


def store_of(cluster: LocalCluster) -> SecurityStore:
    return SecurityStore(connect(cluster.zookeeper.address, cluster.cluster))


def tenant_token(cluster: LocalCluster, tenant: str, *grants: tuple[Operation, str]) -> str:
    store = store_of(cluster)
    try:
        token, _ = store.create_token(tenant, False, 0)
        for operation, topic in grants:
            store.add_acl(AclEntry(tenant, operation, topic), 0)
    finally:
        store.zk.stop()
        store.zk.close()
    return token


def log_end(cluster: LocalCluster, topic: str) -> int:
    with Admin(cluster.bootstrap, security=cluster.admin_client) as admin:
        return admin.describe_topic(topic).partitions[0].log_end


def produce(cluster: LocalCluster, security: ClientSecurity, value: bytes) -> int:
    with Producer(cluster.bootstrap, security=security, delivery_timeout_s=10) as producer:
        return producer.send("orders", value, partition=0).result(timeout=15).offset


def refused(
    cluster: LocalCluster, security: ClientSecurity, error: type[TalosError], match: str
) -> None:
    """Producing with ``security`` fails with ``error`` saying ``match``; nothing is stored."""
    before = log_end(cluster, "orders")
    with pytest.raises(error, match=match):
        produce(cluster, security, b"must not be stored")
    assert log_end(cluster, "orders") == before


def test_a_tenant_with_acls_produces_and_consumes_over_tls(secure: LocalCluster) -> None:
    assert secure.security is not None
    token = tenant_token(
        secure, "shop", (Operation.PRODUCE, "orders"), (Operation.CONSUME, "orders")
    )
    shop = secure.security.client(token)
    offset = produce(secure, shop, b"hello")
    consumer = Consumer(secure.bootstrap, security=shop, auto_offset_reset="earliest")
    try:
        consumer.assign([TopicPartition("orders", 0)])
        consumer.seek(TopicPartition("orders", 0), offset)
        deadline = time.monotonic() + 15
        values: list[bytes | None] = []
        while not values and time.monotonic() < deadline:
            values = [m.value for m in consumer.poll(timeout_s=1.0)]
        assert values[:1] == [b"hello"]
    finally:
        consumer.close()


def test_no_token_is_refused(secure: LocalCluster) -> None:
    assert secure.security is not None
    refused(secure, secure.security.client(""), Unauthenticated, "no token: this broker requires")


def test_a_wrong_or_unknown_token_is_refused(secure: LocalCluster) -> None:
    assert secure.security is not None
    token = tenant_token(secure, "shop2", (Operation.PRODUCE, "orders"))
    forged = token[:-6] + ("AAAAAA" if not token.endswith("AAAAAA") else "BBBBBB")
    token_id = token.split("_")[1]
    refused(secure, secure.security.client(forged), Unauthenticated, f"{token_id}: wrong secret")
    unknown = "talos_000000000000_" + "x" * 43
    refused(secure, secure.security.client(unknown), Unauthenticated, "unknown or revoked")


def test_a_token_of_another_tenant_is_refused(secure: LocalCluster) -> None:
    assert secure.security is not None
    token = tenant_token(secure, "billing", (Operation.CONSUME, "orders"))
    refused(
        secure,
        secure.security.client(token),
        NotAuthorized,
        "tenant 'billing' may not produce topic 'orders'",
    )
    with (
        Admin(secure.bootstrap, security=secure.security.client(token)) as admin,
        pytest.raises(NotAuthorized, match="may not admin topic 'other'"),
    ):
        admin.create_topic("other", 1)
    with Admin(secure.bootstrap, security=secure.admin_client) as admin:
        assert "other" not in admin.list_topics()


def test_a_plaintext_client_against_a_tls_broker_is_told_to_use_tls(secure: LocalCluster) -> None:
    with (
        Admin(secure.bootstrap, security=ClientSecurity()) as admin,
        pytest.raises(TlsError, match="requires TLS and this client connects in plaintext"),
    ):
        admin.list_topics()


def test_a_broker_certificate_from_an_untrusted_ca_is_refused(
    secure: LocalCluster, tmp_path: Path
) -> None:
    stranger = generate(tmp_path / "other-ca", ca_name="Someone else")
    with (
        Admin(secure.bootstrap, security=ClientSecurity(ca=stranger.ca, token="t")) as admin,
        pytest.raises(TlsError, match=r"not trusted by .*other-ca/ca\.pem"),
    ):
        admin.list_topics()


def test_a_revoked_token_is_refused_soon_after(secure: LocalCluster) -> None:
    assert secure.security is not None
    token = tenant_token(secure, "temp", (Operation.PRODUCE, "orders"))
    produce(secure, secure.security.client(token), b"before revoke")
    store = store_of(secure)
    try:
        store.revoke_token(token.split("_")[1])
    finally:
        store.zk.stop()
        store.zk.close()
    deadline = time.monotonic() + 10
    while True:  # the broker's watch drops it; the next call is refused
        try:
            with Admin(secure.bootstrap, security=secure.security.client(token)) as admin:
                admin.list_topics()
        except Unauthenticated as exc:
            assert "unknown or revoked" in str(exc)
            break
        assert time.monotonic() < deadline, "the revoked token still works"
        time.sleep(0.2)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_token_and_acl_commands(
    secure: LocalCluster, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert secure.security is not None
    for name in (ENV_CA, ENV_CERT, ENV_KEY, ENV_TOKEN, ENV_TOKEN_FILE):
        monkeypatch.setenv(name, "")  # main() exports the client flags; undone after the test
        monkeypatch.delenv(name)
    zk = ["--zookeeper", secure.zookeeper.address, "--cluster", secure.cluster]
    code, out, err = run_cli(["token", "create", *zk, "--tenant", "cli", "--json"], capsys)
    assert code == 0, err
    created = json.loads(out)
    token = created["token"]
    code, out, _ = run_cli(["token", "list", *zk, "--json"], capsys)
    listed = {t["id"]: t for t in json.loads(out)}
    assert listed[created["id"]]["tenant"] == "cli"
    assert token not in out and "sha256" not in out  # neither the token nor its hash

    client = ["--tls-ca", secure.security.pki.ca, "--token", token]
    monkeypatch.setattr(sys, "stdin", io.StringIO("one\n"))
    code, _, err = run_cli([*client, "produce", "orders", "--bootstrap", secure.bootstrap], capsys)
    assert code == 1 and "NotAuthorized" in err and "talos acl add cli produce orders" in err

    assert run_cli(["acl", "add", *zk, "cli", "produce", "orders"], capsys)[0] == 0
    code, out, _ = run_cli(["acl", "list", *zk, "--tenant", "cli", "--json"], capsys)
    assert json.loads(out) == [{"tenant": "cli", "operation": "produce", "topic": "orders"}]
    before = log_end(secure, "orders")
    monkeypatch.setattr(sys, "stdin", io.StringIO("one\n"))
    deadline = time.monotonic() + 10
    while True:  # the broker's ACL watch sees the new entry
        code, _, err = run_cli(
            [*client, "produce", "orders", "--bootstrap", secure.bootstrap], capsys
        )
        if code == 0 or time.monotonic() > deadline:
            break
        monkeypatch.setattr(sys, "stdin", io.StringIO("one\n"))
        time.sleep(0.2)
    assert code == 0, err
    assert log_end(secure, "orders") == before + 1

    assert run_cli(["acl", "remove", *zk, "cli", "produce", "orders"], capsys)[0] == 0
    code, _, err = run_cli(["acl", "remove", *zk, "cli", "produce", "orders"], capsys)
    assert code == 2 and "tenant 'cli' has no produce on 'orders'" in err
    code, _, err = run_cli(["acl", "add", *zk, "cli", "produce", "bad/topic"], capsys)
    assert code == 2 and "topic: 'bad/topic' must be a topic name" in err
    code, _, err = run_cli(["token", "revoke", *zk, created["id"]], capsys)
    assert code == 0


def test_mutual_tls_needs_a_client_certificate(tmp_path: Path, zk_server: ZooKeeperServer) -> None:
    cluster = secure_cluster(tmp_path, zk_server, mtls=True)
    try:
        assert cluster.security is not None
        pki = cluster.security.pki
        with (
            Admin(
                cluster.bootstrap, security=ClientSecurity(ca=pki.ca, token=cluster.admin_token)
            ) as admin,
            pytest.raises(TlsError, match="requires a client certificate"),
        ):
            admin.list_topics()
        with Admin(cluster.bootstrap, security=cluster.admin_client) as admin:
            assert admin.list_topics() == []
    finally:
        cluster.stop()


# ---- a mirror worker with credentials from the topology file -----------------------------


def write_secure_topology(path: Path, dcs: dict[str, tuple[LocalCluster, str]]) -> Path:
    lines = []
    for name, (cluster, token_file) in dcs.items():
        assert cluster.security is not None
        brokers = ", ".join(f'"{b.address}"' for b in cluster.brokers)
        lines += [
            f"[dc.{name}]",
            f'zookeeper = "{cluster.zookeeper.address}"',
            f'cluster = "{cluster.cluster}"',
            f'store = "{cluster.store_uri}"',
            f"brokers = [{brokers}]",
            f"[dc.{name}.security]",
            f'tls_ca = "{cluster.security.pki.ca}"',
            f'token_file = "{token_file}"',
            "",
        ]
    lines += ["[[link]]", 'source = "A"', 'target = "B"', 'topics = ["orders"]', ""]
    path.write_text("\n".join(lines))
    return path


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def progress_error(cluster: LocalCluster) -> str:
    zk = connect(cluster.zookeeper.address, cluster.cluster)
    try:
        data, _ = zk.get("/mirror/A:B/progress/orders/0")
        return str(json.loads(data).get("error", ""))
    except Exception:
        return ""
    finally:
        zk.stop()
        zk.close()


def test_a_mirror_worker_without_mirror_rights_on_the_target_is_refused(
    tmp_path: Path, zk_server: ZooKeeperServer
) -> None:
    a = secure_cluster(tmp_path / "A", zk_server)
    b = secure_cluster(tmp_path / "B", zk_server)
    worker: subprocess.Popen[bytes] | None = None
    try:
        assert a.security is not None
        with Admin(a.bootstrap, security=a.admin_client) as admin:
            admin.create_topic("orders", 1)
            admin.wait_until_ready("orders")
        with Producer(a.bootstrap, security=a.admin_client) as producer:
            for i in range(5):
                producer.send("orders", b"m%d" % i, partition=0)
        worker_token = tmp_path / "b-worker.token"
        worker_token.write_text(tenant_token(b, "mirror-ab") + "\n")  # no ACL yet
        topology = write_secure_topology(
            tmp_path / "topology.toml",
            {"A": (a, a.admin_token_file), "B": (b, str(worker_token))},
        )
        with open(tmp_path / "worker.log", "ab") as log:
            worker = subprocess.Popen(
                [
                    *(sys.executable, "-m", "talos", "mirror", "run"),
                    *("--topology", str(topology), "--link", "A:B"),
                    *("--worker-id", "w1", "--session-timeout", "4"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,
            )
        wait_for("the refusal in the link's progress", lambda: "NotAuthorized" in progress_error(b))
        error = progress_error(b)
        assert "tenant 'mirror-ab' may not mirror topic 'orders'" in error
        assert log_end(b, "orders") == 0  # nothing stored

        store = store_of(b)
        try:
            store.add_acl(AclEntry("mirror-ab", Operation.MIRROR, "orders"), 0)
        finally:
            store.zk.stop()
            store.zk.close()
        wait_for("the mirror to copy after the grant", lambda: log_end(b, "orders") == 5, 60)
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        a.stop()
        b.stop()
