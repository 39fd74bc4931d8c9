"""The WAN-emulating TCP proxy against a local echo server: latency, bandwidth, cuts, resets."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from talos.errors import InvalidArgument
from talos.testing.proxy import TcpProxy


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        with contextlib.suppress(OSError):
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                sock.sendall(data)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = _Server(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def connect(proxy: TcpProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = []
    got = 0
    while got < size:
        data = sock.recv(min(65536, size - got))
        if not data:
            raise ConnectionError(f"closed after {got} of {size} bytes")
        chunks.append(data)
        got += len(data)
    return b"".join(chunks)


def round_trip(sock: socket.socket, payload: bytes = b"ping") -> float:
    started = time.monotonic()
    sock.sendall(payload)
    assert recv_exactly(sock, len(payload)) == payload
    return time.monotonic() - started


def test_forwards_both_ways_and_counts_bytes(echo_port: int) -> None:
    with TcpProxy("127.0.0.1", 0, "127.0.0.1", echo_port) as proxy, connect(proxy) as sock:
        payload = bytes(range(256)) * 1000
        sock.sendall(payload)
        assert recv_exactly(sock, len(payload)) == payload
        assert proxy.stats.bytes_up == len(payload)
        assert proxy.stats.bytes_down == len(payload)
        assert proxy.stats.accepted == 1
        assert proxy.address == f"127.0.0.1:{proxy.port}" and proxy.port > 0


def test_latency_is_added_in_each_direction(echo_port: int) -> None:
    with TcpProxy("127.0.0.1", 0, "127.0.0.1", echo_port, latency_ms=40) as proxy:
        with connect(proxy) as sock:
            rtts = [round_trip(sock) for _ in range(5)]
        assert min(rtts) >= 0.078, rtts  # 40 ms there, 40 ms back
        assert min(rtts) < 0.2, rtts
        proxy.set_latency(0)
        with connect(proxy) as sock:
            assert min(round_trip(sock) for _ in range(5)) < 0.03


def test_latency_pipelines_instead_of_serialising_the_stream(echo_port: int) -> None:
    """Twenty writes 10 ms apart arrive ~one latency after each was sent, not one after another."""
    with (
        TcpProxy("127.0.0.1", 0, "127.0.0.1", echo_port, latency_ms=50) as proxy,
        connect(proxy) as sock,
    ):
        started = time.monotonic()
        for i in range(20):
            sock.sendall(b"%02d" % i)
            time.sleep(0.01)
        assert recv_exactly(sock, 40) == b"".join(b"%02d" % i for i in range(20))
        elapsed = time.monotonic() - started
        # ~0.2 s of sending + 0.1 s round trip; serialised it would take 20 * 0.1 s.
        assert 0.29 <= elapsed < 0.8, elapsed


def test_bandwidth_cap_slows_a_transfer_to_roughly_the_rate(echo_port: int) -> None:
    payload = b"x" * 200_000
    with TcpProxy("127.0.0.1", 0, "127.0.0.1", echo_port, bandwidth_bytes_s=400_000) as proxy:
        with connect(proxy) as sock:
            started = time.monotonic()
            sock.sendall(payload)
            recv_exactly(sock, len(payload))
            capped = time.monotonic() - started
        # 200 kB at 400 kB/s each way, both directions overlapping: about 0.5 s.
        assert 0.45 <= capped < 1.5, capped
        assert proxy.bandwidth_bytes_s == 400_000
        proxy.set_bandwidth(None)
        with connect(proxy) as sock:
            started = time.monotonic()
            sock.sendall(payload)
            recv_exactly(sock, len(payload))
            assert time.monotonic() - started < 0.4


def test_cut_closes_connections_and_refuses_new_ones_until_heal(echo_port: int) -> None:
    with TcpProxy("127.0.0.1", 0, "127.0.0.1", echo_port) as proxy:
        sock = connect(proxy)
        try:
            round_trip(sock)
            proxy.cut()
            assert proxy.is_cut
            with pytest.raises(OSError):
                sock.sendall(b"after the cut")
                if not sock.recv(100):
                    raise ConnectionError("closed")
        finally:
            sock.close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", proxy.port), timeout=2).close()
        proxy.heal()
        assert not proxy.is_cut
        with connect(proxy) as again:
            assert round_trip(again, b"healed") < 1.0


def test_blackhole_cut_holds_data_until_heal(echo_port: int) -> None:
    with TcpProxy("127.0.0.1", 0, "127.0.0.1", echo_port) as proxy, connect(proxy) as sock:
        round_trip(sock)
        proxy.cut("blackhole")
        sock.sendall(b"held")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(10)
        proxy.heal()
        sock.settimeout(5)
        assert recv_exactly(sock, 4) == b"held"


def test_reset_connections_resets_open_ones_and_accepts_new(echo_port: int) -> None:
    with TcpProxy("127.0.0.1", 0, "127.0.0.1", echo_port) as proxy:
        with connect(proxy) as sock:
            round_trip(sock)
            assert proxy.active_connections == 1
            assert proxy.reset_connections() == 1
            with pytest.raises(ConnectionResetError):
                sock.recv(10)
        with connect(proxy) as again:
            round_trip(again, b"new connection")


def test_target_down_closes_the_client_connection() -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        dead_port = placeholder.getsockname()[1]
    with TcpProxy("127.0.0.1", 0, "127.0.0.1", dead_port) as proxy:
        try:
            sock = connect(proxy)
        except ConnectionResetError:
            return  # the proxy's reset can arrive while connecting: closed as well
        with sock:
            sock.settimeout(5)
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(10) == b""


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"latency_ms": -1}, "latency_ms"),
        ({"latency_ms": "25"}, "latency_ms"),
        ({"bandwidth_bytes_s": 0}, "bandwidth_bytes_s"),
        ({"bandwidth_bytes_s": 1.5}, "bandwidth_bytes_s"),
        ({"target_port": 0}, "target_port"),
        ({"listen_port": 70000, "target_port": 1}, "listen_port"),
    ],
)
def test_bad_settings_name_the_parameter(kwargs: dict[str, object], param: str) -> None:
    arguments: dict[str, object] = {"target_port": 9}
    arguments.update(kwargs)
    with pytest.raises(InvalidArgument, match=param):
        TcpProxy(**arguments)  # type: ignore[arg-type]


def test_cut_mode_is_checked_and_setters_validate(echo_port: int) -> None:
    with TcpProxy("127.0.0.1", 0, "127.0.0.1", echo_port) as proxy:
        with pytest.raises(InvalidArgument, match="mode"):
            proxy.cut("drop")  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match="latency_ms"):
            proxy.set_latency(120_000)
        with pytest.raises(InvalidArgument, match="bandwidth_bytes_s"):
            proxy.set_bandwidth(-5)
