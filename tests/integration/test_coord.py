"""The ZooKeeper metadata layer against a real ZooKeeper."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import KazooException
from kazoo.recipe.election import Election

from mirror.state import new_mirror
from talos.config import MAX_PARTITIONS, TopicConfig
from talos.coord import paths
from talos.coord.brokers import BrokerRegistry
from talos.coord.controller import (
    Assignment,
    AssignmentWatcher,
    Controller,
    current_controller,
    read_assignment,
)
from talos.coord.groups import GroupStore
from talos.coord.partition_state import PartitionState, PartitionStateStore, SegmentInfo
from talos.coord.producer_ids import allocate_producer_id
from talos.coord.topics import TopicStore
from talos.coord.zk import connect
from talos.errors import (
    CoordinationError,
    Fenced,
    IllegalGeneration,
    InvalidArgument,
    TopicExists,
    UnknownMember,
    UnknownTopic,
)
from talos.testing.zookeeper import ZooKeeperServer, free_port

pytestmark = pytest.mark.integration

Connect = Callable[[], KazooClient]


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


@pytest.fixture
def new_client(zk_server: ZooKeeperServer, cluster_name: str) -> Iterator[Connect]:
    clients: list[KazooClient] = []

    def make() -> KazooClient:
        client = connect(zk_server.address, cluster_name, connect_timeout=10, session_timeout=4)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.stop()
        client.close()


@pytest.fixture
def zk(new_client: Connect) -> KazooClient:
    return new_client()


@pytest.fixture
def controllers() -> Iterator[list[Controller]]:
    started: list[Controller] = []
    yield started
    for controller in started:
        controller.stop()


# -- connect ------------------------------------------------------------------------


def test_connect_to_a_dead_port_fails_in_time() -> None:
    port = free_port()
    start = time.monotonic()
    with pytest.raises(CoordinationError, match=rf"ZooKeeper at 127\.0\.0\.1:{port} unreachable"):
        connect(f"127.0.0.1:{port}", "dead", connect_timeout=2)
    assert time.monotonic() - start < 5


def test_connect_creates_the_chroot_and_isolates_clusters(
    zk_server: ZooKeeperServer, zk: KazooClient, cluster_name: str
) -> None:
    for base in paths.BASE_PATHS:
        assert zk.exists(base) is not None
    TopicStore(zk).create("orders", 1, TopicConfig(), now_ms=1)
    other = connect(zk_server.address, cluster_name + "-other")
    try:
        assert TopicStore(other).list() == []
    finally:
        other.stop()
        other.close()
    raw = KazooClient(hosts=zk_server.address)
    raw.start(timeout=10)
    try:
        assert raw.exists(f"/talos/{cluster_name}/topics/orders") is not None
    finally:
        raw.stop()
        raw.close()


@pytest.mark.parametrize("bad", ["", "a/b", "..", "sp ace"])
def test_connect_rejects_bad_cluster_names(zk_server: ZooKeeperServer, bad: str) -> None:
    with pytest.raises(InvalidArgument, match="cluster"):
        connect(zk_server.address, bad)


# -- topics -------------------------------------------------------------------------


def test_topic_lifecycle(zk: KazooClient) -> None:
    topics = TopicStore(zk)
    config = TopicConfig(durability="flush", segment_bytes=1 << 20)
    meta = topics.create("orders", 3, config, now_ms=1234)
    assert (meta.name, meta.partitions, meta.config, meta.created_ms) == ("orders", 3, config, 1234)
    topics.create("audit", 1, TopicConfig(), now_ms=1)
    assert topics.list() == ["audit", "orders"]
    assert topics.get("orders") == meta

    states = PartitionStateStore(zk)
    for partition in range(3):
        assert states.get("orders", partition).epoch == 0
    with pytest.raises(UnknownTopic):
        states.get("orders", 3)

    with pytest.raises(TopicExists):
        topics.create("orders", 5, TopicConfig(), now_ms=1)
    assert topics.get("orders") == meta

    grown = topics.add_partitions("orders", 5)
    assert grown.partitions == 5 and topics.get("orders").partitions == 5
    assert states.get("orders", 4).version == 0

    topics.delete("orders")
    assert topics.list() == ["audit"]
    assert zk.exists(paths.topic("orders")) is None
    for call in (
        lambda: topics.get("orders"),
        lambda: topics.delete("orders"),
        lambda: topics.add_partitions("orders", 9),
    ):
        with pytest.raises(UnknownTopic):
            call()


@pytest.mark.parametrize(
    ("name", "partitions", "config", "match"),
    [
        ("bad/name", 1, TopicConfig(), "topic"),
        ("", 1, TopicConfig(), "topic"),
        ("ok", 0, TopicConfig(), "partitions"),
        ("ok", -1, TopicConfig(), "partitions"),
        ("ok", MAX_PARTITIONS + 1, TopicConfig(), "partitions"),
        ("ok", 1, TopicConfig(durability="never"), "durability"),
    ],
)
def test_bad_topic_input_writes_nothing(
    zk: KazooClient, name: str, partitions: int, config: TopicConfig, match: str
) -> None:
    topics = TopicStore(zk)
    with pytest.raises(InvalidArgument, match=match):
        topics.create(name, partitions, config, now_ms=1)
    assert topics.list() == []
    assert zk.get_children(paths.TOPICS) == []


@pytest.mark.parametrize("new_count", [3, 2, 0, MAX_PARTITIONS + 1])
def test_add_partitions_rejects_shrinking_and_out_of_range(zk: KazooClient, new_count: int) -> None:
    topics = TopicStore(zk)
    before = topics.create("t", 3, TopicConfig(), now_ms=1)
    with pytest.raises(InvalidArgument, match="new_count"):
        topics.add_partitions("t", new_count)
    assert topics.get("t") == before
    assert sorted(zk.get_children(paths.partitions("t"))) == ["0", "1", "2"]
    with pytest.raises(InvalidArgument, match=r"^partitions: .*current 3"):
        topics.add_partitions("t", new_count, param="partitions")


def test_create_and_delete_max_partitions_in_one_transaction(zk: KazooClient) -> None:
    meta = TopicStore(zk).create("wide", MAX_PARTITIONS, TopicConfig(), now_ms=1)
    assert meta.partitions == MAX_PARTITIONS
    assert len(zk.get_children(paths.partitions("wide"))) == MAX_PARTITIONS
    TopicStore(zk).delete("wide")
    assert zk.exists(paths.topic("wide")) is None


def test_topic_watch_and_mirror_field(zk: KazooClient) -> None:
    topics = TopicStore(zk)
    seen: list[list[str]] = []
    topics.watch(seen.append)
    topics.create("b", 1, TopicConfig(), now_ms=1, mirror=new_mirror("dc1:dc2", "dc1", "b"))
    topics.create("a", 1, TopicConfig(), now_ms=1)
    wait_for(lambda: bool(seen) and seen[-1] == ["a", "b"], what="topic watch")
    assert seen[0] == []
    assert topics.get("b").mirror == new_mirror("dc1:dc2", "dc1", "b")
    assert topics.set_mirror("b", None).mirror is None
    assert topics.get("b").mirror is None


# -- partition state ----------------------------------------------------------------


def test_partition_state_cas_conflict_is_fenced(zk: KazooClient) -> None:
    TopicStore(zk).create("t", 1, TopicConfig(), now_ms=1)
    store = PartitionStateStore(zk)
    read = store.get("t", 0)
    mine = store.compare_and_set("t", 0, read.with_owner("b1"), read.version)
    assert (mine.epoch, mine.owner, mine.version) == (1, "b1", read.version + 1)
    assert store.get("t", 0) == mine
    with pytest.raises(Fenced, match="moved by someone else"):
        store.compare_and_set("t", 0, read.with_owner("b2"), read.version)
    assert store.get("t", 0) == mine
    with pytest.raises(UnknownTopic):
        store.compare_and_set("nope", 0, read, 0)


def test_two_clients_racing_cas_exactly_one_wins(new_client: Connect) -> None:
    first, second = new_client(), new_client()
    TopicStore(first).create("t", 1, TopicConfig(), now_ms=1)
    stores = {"b1": PartitionStateStore(first), "b2": PartitionStateStore(second)}
    for _ in range(5):
        base = stores["b1"].get("t", 0)
        outcome = race_cas(stores, base)
        assert sorted(outcome.values()) == ["fenced", "won"]
        winner = next(b for b, result in outcome.items() if result == "won")
        after = stores["b2"].get("t", 0)
        assert (after.owner, after.epoch) == (winner, base.epoch + 1)


def race_cas(stores: dict[str, PartitionStateStore], base: PartitionState) -> dict[str, str]:
    """Both brokers try to take over from the same read state at the same moment."""
    barrier = threading.Barrier(len(stores))
    outcome: dict[str, str] = {}

    def take(broker: str) -> None:
        barrier.wait()
        try:
            stores[broker].compare_and_set("t", 0, base.with_owner(broker), base.version)
            outcome[broker] = "won"
        except Fenced:
            outcome[broker] = "fenced"

    threads = [threading.Thread(target=take, args=(broker,)) for broker in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return outcome


def test_partition_state_watch_sees_the_seal(zk: KazooClient) -> None:
    TopicStore(zk).create("t", 1, TopicConfig(), now_ms=1)
    store = PartitionStateStore(zk)
    seen: list[int | None] = []
    stop = store.watch("t", 0, lambda s: seen.append(None if s is None else s.sealed_end))
    state = store.get("t", 0)
    state = store.compare_and_set("t", 0, state.with_owner("b").with_new_segment(0, 1), 0)
    store.compare_and_set("t", 0, state.with_sealed(0, 42, 100), state.version)
    wait_for(lambda: seen[-1:] == [42], what="sealed end via watch")
    stop()


def expire_session(zk_server: ZooKeeperServer, client: KazooClient) -> None:
    """Expire ``client``'s session: closing another connection that uses it ends it."""
    session_id, password = client.client_id
    thief = KazooClient(hosts=zk_server.address, client_id=(session_id, password))
    thief.start(timeout=10)
    thief.stop()
    thief.close()


# -- brokers ------------------------------------------------------------------------


def test_broker_registration_lives_with_its_session(new_client: Connect) -> None:
    observer = new_client()
    seen: list[dict[str, str]] = []
    BrokerRegistry(observer).watch(seen.append)
    client = new_client()
    registry = BrokerRegistry(client)
    registry.register("b1", "127.0.0.1:9001")
    registry.register("b1", "127.0.0.1:9001")  # idempotent
    assert BrokerRegistry(observer).live() == {"b1": "127.0.0.1:9001"}
    wait_for(lambda: seen[-1:] == [{"b1": "127.0.0.1:9001"}], what="broker watch")
    client.stop()
    wait_for(lambda: BrokerRegistry(observer).live() == {}, what="ephemeral node to vanish")
    wait_for(lambda: seen[-1:] == [{}], what="broker watch after leave")


def test_same_id_from_another_live_session_waits_then_fails(new_client: Connect) -> None:
    holder = new_client()
    BrokerRegistry(holder).register("b1", "host:1")
    contender = BrokerRegistry(new_client())
    start = time.monotonic()
    with pytest.raises(CoordinationError, match="another live ZooKeeper session"):
        contender.register("b1", "host:2", wait_s=0.5)
    assert 0.4 < time.monotonic() - start < 5

    # Once the old session ends, the contender gets the id.
    errors: list[BaseException] = []

    def register() -> None:
        try:
            contender.register("b1", "host:2", wait_s=10)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=register)
    thread.start()
    time.sleep(0.3)
    holder.stop()
    thread.join(15)
    assert not errors
    assert contender.live() == {"b1": "host:2"}


def test_broker_reregisters_after_session_expiry(
    zk_server: ZooKeeperServer, new_client: Connect
) -> None:
    client = new_client()
    registry = BrokerRegistry(client)
    registry.register("b1", "host:1")
    old_session = client.client_id[0]
    expire_session(zk_server, client)

    def registered_again() -> bool:
        try:
            stat = client.exists(paths.broker("b1"))
        except KazooException:  # the old session's requests fail while it expires
            return False
        return stat is not None and stat.ephemeralOwner not in (0, old_session)

    wait_for(registered_again, timeout=20, what="re-registration on the new session")
    registry.deregister()
    assert client.exists(paths.broker("b1")) is None


# -- consumer groups -------------------------------------------------------------------


def test_group_membership_and_fenced_commits(zk: KazooClient) -> None:
    groups = GroupStore(zk)
    a = groups.join("g", "", ["t"], session_timeout_ms=10_000, now_ms=1_000)
    assert a.member_id and a.generation == 1 and a.members == {a.member_id: ["t"]}
    b = groups.join("g", "", ["t", "u"], session_timeout_ms=10_000, now_ms=1_100)
    assert b.generation == 2
    a = groups.join("g", a.member_id, ["t"], session_timeout_ms=10_000, now_ms=1_200)
    assert a.generation == b.generation == 2  # a heartbeat does not bump
    expected = {a.member_id: ["t"], b.member_id: ["t", "u"]}
    assert a.members == b.members == dict(sorted(expected.items()))
    assert list(a.members) == sorted(a.members)

    groups.commit("g", a.member_id, 2, {("t", 0): 10, ("t", 1): 20})
    groups.commit("g", b.member_id, 2, {("t", 0): 11})
    assert groups.fetch("g", [("t", 0), ("t", 1), ("u", 0)]) == {
        ("t", 0): 11,
        ("t", 1): 20,
        ("u", 0): -1,
    }

    # A third member joins: generation 3; a commit from generation 2 is refused.
    c = groups.join("g", "", ["t"], session_timeout_ms=10_000, now_ms=1_300)
    assert c.generation == 3
    with pytest.raises(IllegalGeneration):
        groups.commit("g", a.member_id, 2, {("t", 0): 99})
    assert groups.fetch("g", [("t", 0)]) == {("t", 0): 11}
    with pytest.raises(UnknownMember):
        groups.commit("g", "stranger", 3, {("t", 0): 99})
    with pytest.raises(UnknownMember):
        groups.commit("nogroup", "stranger", 1, {("t", 0): 99})
    groups.commit("g", a.member_id, 3, {("t", 0): 12})
    assert groups.fetch("g", [("t", 0)]) == {("t", 0): 12}

    groups.leave("g", c.member_id, now_ms=1_400)
    after = groups.join("g", a.member_id, ["t"], session_timeout_ms=10_000, now_ms=1_500)
    assert after.generation == 4 and c.member_id not in after.members


def test_member_expiry_bumps_the_generation(zk: KazooClient) -> None:
    groups = GroupStore(zk)
    short = groups.join("g", "", ["t"], session_timeout_ms=1_000, now_ms=0)
    long = groups.join("g", "", ["t"], session_timeout_ms=60_000, now_ms=500)
    assert long.generation == 2
    still = groups.join("g", long.member_id, ["t"], session_timeout_ms=60_000, now_ms=999)
    assert still.generation == 2 and short.member_id in still.members
    later = groups.join("g", long.member_id, ["t"], session_timeout_ms=60_000, now_ms=1_000)
    assert later.generation == 3
    assert list(later.members) == [long.member_id]
    # Changing topics is a change of the member set's shape, too.
    changed = groups.join("g", long.member_id, ["t", "v"], session_timeout_ms=60_000, now_ms=1_100)
    assert changed.generation == 4


def test_standalone_commit_and_bad_offsets(zk: KazooClient) -> None:
    groups = GroupStore(zk)
    groups.commit("solo", "", -1, {("t", 0): 5})
    groups.commit("solo", "", -1, {("t", 0): 6, ("t", 3): 0})
    assert groups.fetch("solo", [("t", 0), ("t", 3)]) == {("t", 0): 6, ("t", 3): 0}
    with pytest.raises(InvalidArgument, match="offsets"):
        groups.commit("solo", "", -1, {("t", 0): -1})
    with pytest.raises(InvalidArgument, match="generation"):
        groups.commit("solo", "", 3, {("t", 0): 1})
    with pytest.raises(InvalidArgument, match="offsets topic"):
        groups.commit("solo", "", -1, {("bad/topic", 0): 1})
    assert groups.fetch("solo", [("t", 0)]) == {("t", 0): 6}


def test_concurrent_joins_lose_nobody(new_client: Connect) -> None:
    stores = [GroupStore(new_client()) for _ in range(2)]
    views = []
    lock = threading.Lock()

    def join(store: GroupStore) -> None:
        for _ in range(5):
            view = store.join("g", "", ["t"], session_timeout_ms=60_000, now_ms=1)
            with lock:
                views.append(view)

    threads = [threading.Thread(target=join, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    final = stores[0].join("g", views[0].member_id, ["t"], session_timeout_ms=60_000, now_ms=2)
    assert set(final.members) == {v.member_id for v in views}
    assert final.generation == 10


# -- producer ids ------------------------------------------------------------------------


def test_producer_ids_are_unique_across_clients(new_client: Connect) -> None:
    clients = [new_client(), new_client()]
    got: list[list[int]] = [[], []]

    def allocate(index: int) -> None:
        for _ in range(40):
            got[index].append(allocate_producer_id(clients[index]))

    threads = [threading.Thread(target=allocate, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    everything = got[0] + got[1]
    assert len(set(everything)) == 80
    assert min(everything) >= 1
    for ids in got:
        assert ids == sorted(ids)


# -- controller ------------------------------------------------------------------------


def raw_assignment(zk: KazooClient) -> dict[str, object]:
    data, _ = zk.get(paths.ASSIGNMENT)
    result: dict[str, object] = json.loads(data)
    return result


def start_broker(
    new_client: Connect, controllers: list[Controller], broker_id: str, delay_ms: int
) -> tuple[KazooClient, Controller]:
    client = new_client()
    BrokerRegistry(client).register(broker_id, f"{broker_id}:9000")
    controller = Controller(client, broker_id, reassign_delay_ms=delay_ms)
    controllers.append(controller)
    controller.start()
    return client, controller


def test_one_controller_assigns_everything_and_a_successor_takes_over(
    new_client: Connect, controllers: list[Controller]
) -> None:
    admin = new_client()
    TopicStore(admin).create("orders", 8, TopicConfig(), now_ms=1)
    TopicStore(admin).create("audit", 2, TopicConfig(), now_ms=1)
    client_a, ctrl_a = start_broker(new_client, controllers, "a", delay_ms=2_000)
    client_b, ctrl_b = start_broker(new_client, controllers, "b", delay_ms=2_000)
    everything = {("orders", p) for p in range(8)} | {("audit", 0), ("audit", 1)}

    def covered(brokers: set[str]) -> bool:
        owners = read_assignment(admin).owners
        return set(owners) == everything and set(owners.values()) == brokers

    wait_for(lambda: covered({"a", "b"}), what="assignment over a and b")
    for _ in range(10):
        assert [ctrl_a.is_leader, ctrl_b.is_leader].count(True) == 1
        time.sleep(0.05)
    leader, follower = (ctrl_a, ctrl_b) if ctrl_a.is_leader else (ctrl_b, ctrl_a)
    leader_client = client_a if leader is ctrl_a else client_b
    leader_id, follower_id = ("a", "b") if leader is ctrl_a else ("b", "a")
    assert current_controller(admin) == leader_id

    # Growing a topic is noticed.
    TopicStore(admin).add_partitions("audit", 4)
    everything |= {("audit", 2), ("audit", 3)}
    wait_for(lambda: covered({"a", "b"}), what="new partitions assigned")

    # Kill the leader's session: the follower takes over, holds the dead broker's
    # partitions for the delay, then moves them.
    killed_at = int(time.time() * 1000)
    leader_client.stop()
    wait_for(lambda: follower.is_leader, what="follower to become controller")
    assert not leader.is_leader
    wait_for(
        lambda: leader_id in raw_assignment(admin)["missing_since"],  # type: ignore[operator]
        what="dead broker recorded as missing",
    )
    since = raw_assignment(admin)["missing_since"][leader_id]  # type: ignore[index]
    assert since >= killed_at - 1_000
    assert leader_id in read_assignment(admin).owners.values()  # still reserved
    wait_for(lambda: covered({follower_id}), what="partitions moved after the delay")
    assert int(time.time() * 1000) - since >= 2_000
    assert raw_assignment(admin)["missing_since"] == {}
    assert current_controller(admin) == follower_id

    # Deleting a topic drops its partitions.
    TopicStore(admin).delete("audit")
    everything = {("orders", p) for p in range(8)}
    wait_for(lambda: covered({follower_id}), what="deleted topic dropped")


def test_stopping_the_leader_hands_over_and_versions_increase(
    new_client: Connect, controllers: list[Controller]
) -> None:
    admin = new_client()
    TopicStore(admin).create("t", 6, TopicConfig(), now_ms=1)
    seen: list[Assignment] = []
    watcher = AssignmentWatcher(admin, seen.append)
    _, ctrl_a = start_broker(new_client, controllers, "a", delay_ms=0)
    wait_for(lambda: ctrl_a.is_leader, what="first controller")
    wait_for(lambda: set(read_assignment(admin).owners.values()) == {"a"}, what="all on a")
    _, ctrl_b = start_broker(new_client, controllers, "b", delay_ms=0)
    # The joining broker takes a share even though nothing was orphaned.
    wait_for(lambda: set(read_assignment(admin).owners.values()) == {"a", "b"}, what="b gets some")
    assert not ctrl_b.is_leader

    ctrl_a.stop()  # resigns; b's broker registration (and a's) still live
    wait_for(lambda: ctrl_b.is_leader, what="b takes over after a resigns")
    assert set(read_assignment(admin).owners.values()) <= {"a", "b"}
    watcher.stop()
    versions = [a.version for a in seen]
    assert versions[0] == -1
    assert versions == sorted(versions) and len(set(versions)) == len(versions)


def test_leader_whose_session_expires_steps_down_and_rejoins(
    zk_server: ZooKeeperServer, new_client: Connect, controllers: list[Controller]
) -> None:
    admin = new_client()
    TopicStore(admin).create("t", 4, TopicConfig(), now_ms=1)
    client_a, ctrl_a = start_broker(new_client, controllers, "a", delay_ms=60_000)
    wait_for(lambda: ctrl_a.is_leader, what="a leads")
    _, ctrl_b = start_broker(new_client, controllers, "b", delay_ms=60_000)
    wait_for(lambda: set(read_assignment(admin).owners.values()) == {"a", "b"}, what="a and b")

    expire_session(zk_server, client_a)
    wait_for(lambda: ctrl_b.is_leader, what="b leads after a's session expired")
    wait_for(lambda: not ctrl_a.is_leader, what="a steps down")
    # a's client reconnects with a new session; a contends again as a follower.
    wait_for(
        lambda: sorted(Election(admin, paths.CONTROLLER).contenders()) == ["a", "b"],
        what="a back in the election",
    )
    assert current_controller(admin) == "b"
    for _ in range(10):
        assert (ctrl_a.is_leader, ctrl_b.is_leader) == (False, True)
        time.sleep(0.05)


def test_a_recreated_topic_is_a_new_incarnation_and_stale_cas_fails(zk: KazooClient) -> None:
    """Issue 11 §1: a recreated partition znode reaches the same version again;
    a compare-and-set meant for the deleted incarnation must still fail."""
    topics, states = TopicStore(zk), PartitionStateStore(zk)
    first = topics.create("again", 1, TopicConfig(), now_ms=1)
    stale = states.get("again", 0)
    assert stale.incarnation == first.incarnation != ""
    topics.delete("again")
    second = topics.create("again", 1, TopicConfig(), now_ms=2)
    assert second.incarnation != first.incarnation
    assert topics.get("again").incarnation == second.incarnation
    fresh = states.get("again", 0)
    assert (fresh.version, fresh.incarnation) == (stale.version, second.incarnation)
    with pytest.raises(Fenced, match="incarnation"):
        states.compare_and_set("again", 0, stale.with_owner("zombie"), stale.version)
    assert states.get("again", 0) == fresh  # nothing written
    # deleting by the old incarnation leaves the new one alone
    with pytest.raises(UnknownTopic, match="incarnation"):
        topics.delete("again", first.incarnation)
    assert topics.get("again") == second


def test_deleting_a_topic_removes_its_group_offsets(zk: KazooClient) -> None:
    topics, groups = TopicStore(zk), GroupStore(zk)
    topics.create("gone", 2, TopicConfig(), now_ms=1)
    topics.create("kept", 1, TopicConfig(), now_ms=1)
    groups.commit("g1", "", -1, {("gone", 0): 5, ("gone", 1): 7, ("kept", 0): 3})
    groups.commit("g2", "", -1, {("gone", 1): 9})
    topics.delete("gone")
    topics.create("gone", 2, TopicConfig(), now_ms=2)
    assert groups.fetch("g1", [("gone", 0), ("gone", 1), ("kept", 0)]) == {
        ("gone", 0): -1,
        ("gone", 1): -1,
        ("kept", 0): 3,
    }
    assert groups.fetch("g2", [("gone", 1)]) == {("gone", 1): -1}
    groups.commit("g1", "", -1, {("gone", 0): 1})  # the cache of known znodes recovers
    assert groups.fetch("g1", [("gone", 0)]) == {("gone", 0): 1}


def test_segment_metadata_lives_in_chunks_not_one_growing_value(zk: KazooClient) -> None:
    """Issue 12 §3, in small: 4 segments a chunk, 60 rolls."""
    meta = TopicStore(zk).create("chunked", 1, TopicConfig(), now_ms=1)
    writer, reader = PartitionStateStore(zk, chunk_segments=4), PartitionStateStore(zk)
    seen: list[PartitionState | None] = []
    reader.watch("chunked", 0, seen.append)
    state = writer.get("chunked", 0)
    state = writer.compare_and_set(
        "chunked", 0, state.with_owner("b1").with_new_segment(0, 1), state.version
    )
    sizes = []
    for i in range(60):
        rolled = state.with_sealed(i * 10, i * 10 + 10, 100).with_new_segment(i * 10 + 10, 1)
        state = writer.compare_and_set("chunked", 0, rolled, state.version)
        sizes.append(len(zk.get(paths.partition("chunked", 0))[0]))
    assert max(sizes[20:]) <= max(sizes[:10]) * 2, "the partition znode keeps growing"
    children = sorted(c for c in zk.get_children(paths.partition("chunked", 0)))
    assert children == [c.name for c in state.chunks] and len(children) >= 12
    assert reader.get("chunked", 0) == state
    assert len(state.segments) == 61 and state.incarnation == meta.incarnation
    deadline = time.monotonic() + 10
    while seen[-1] != state and time.monotonic() < deadline:
        time.sleep(0.05)
    assert seen[-1] == state  # the watch assembles chunks too
    # retention: the log start passes whole chunks, which go with it in the same CAS
    trimmed = state.with_log_start(300)
    state = writer.compare_and_set("chunked", 0, trimmed, state.version)
    assert reader.get("chunked", 0).segments[0] == SegmentInfo(300, 1, 310, 100)
    assert len(zk.get_children(paths.partition("chunked", 0))) == len(state.chunks) < len(children)
    TopicStore(zk).delete("chunked")
    assert not zk.exists(paths.topic("chunked"))
