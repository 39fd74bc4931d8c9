"""A user-space TCP proxy that plays a WAN link: latency, a bandwidth cap, cuts and resets.

This kernel has no netem, so cross-DC tests put this proxy between a mirror
worker and the target brokers. Each direction of each connection is a delay
line: a chunk read at time t is written at t + latency, so latency adds to
every chunk without serialising the stream behind a per-chunk round trip.
The bandwidth cap is one token bucket per direction shared by all
connections, as a WAN link is shared. The proxy runs its own asyncio loop in
a thread, so blocking tests can drive it::

    with TcpProxy("127.0.0.1", 0, "127.0.0.1", broker_port, latency_ms=25) as proxy:
        connect_to(proxy.address)
        proxy.cut()    # every connection closed, new ones refused
        proxy.heal()
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import logging
import socket
import struct
import sys
import threading
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, TypeVar

from talos.errors import InvalidArgument, TalosError
from talos.signals import stop_on_signals

log = logging.getLogger(__name__)

T = TypeVar("T")

CutMode = Literal["refuse", "blackhole"]
CUT_MODES: tuple[CutMode, ...] = ("refuse", "blackhole")
READ_BYTES = 64 * 1024
#: Largest piece written at once under a bandwidth cap, so the cap is smooth.
PACING_BYTES = 16 * 1024
DEFAULT_BUFFER_BYTES = 8 * 1024 * 1024
MAX_LATENCY_MS = 60_000.0
#: SO_LINGER on with a zero timeout: close() sends a TCP RST instead of a FIN.
_LINGER_RESET = struct.pack("ii", 1, 0)


def _check_latency(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"latency_ms: must be a number of milliseconds, got {value!r}")
    if not 0 <= value <= MAX_LATENCY_MS:
        raise InvalidArgument(f"latency_ms: must be from 0 to {MAX_LATENCY_MS:g}, got {value}")
    return float(value)


def _check_bandwidth(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidArgument(
            f"bandwidth_bytes_s: must be a positive integer (bytes per second) or None, "
            f"got {value!r}"
        )
    return value


def _check_port(value: object, param: str, allow_zero: bool) -> int:
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 65535:
        raise InvalidArgument(f"{param}: must be an integer from {low} to 65535, got {value!r}")
    return value


class _Pacer:
    """A bandwidth cap: each write reserves the link for ``len / rate`` seconds.

    Shared by every connection of one direction; all users run on the
    proxy's loop, so no lock is needed.
    """

    def __init__(self, rate: int | None) -> None:
        self.rate = rate
        self._next_free = 0.0

    async def send(self, size: int) -> None:
        rate = self.rate
        if rate is None:
            return
        now = time.monotonic()
        start = max(now, self._next_free)
        self._next_free = start + size / rate
        delay = self._next_free - now
        if delay > 0:
            await asyncio.sleep(delay)


@dataclass
class ProxyStats:
    accepted: int = 0
    refused: int = 0
    bytes_up: int = 0  # client -> target
    bytes_down: int = 0  # target -> client


class _Connection:
    """One proxied connection: two transports and the tasks pumping between them."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client, self.upstream) if w is not None]

    def abort(self, reset: bool) -> None:
        for writer in self.writers():
            if reset:
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            writer.transport.abort()
        for task in self.tasks:
            task.cancel()


class TcpProxy:
    """Forwards ``listen_host:listen_port`` (0: any free port) to ``target_host:target_port``."""

    def __init__(
        self,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        target_host: str = "127.0.0.1",
        target_port: int = 0,
        latency_ms: float = 0,
        bandwidth_bytes_s: int | None = None,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
    ) -> None:
        if not isinstance(listen_host, str) or not listen_host:
            raise InvalidArgument(f"listen_host: must be a host name or IP, got {listen_host!r}")
        if not isinstance(target_host, str) or not target_host:
            raise InvalidArgument(f"target_host: must be a host name or IP, got {target_host!r}")
        self.listen_host = listen_host
        self.port = _check_port(listen_port, "listen_port", allow_zero=True)
        self.target_host = target_host
        self.target_port = _check_port(target_port, "target_port", allow_zero=False)
        self._latency_s = _check_latency(latency_ms) / 1000
        bandwidth = _check_bandwidth(bandwidth_bytes_s)
        if isinstance(buffer_bytes, bool) or not isinstance(buffer_bytes, int) or buffer_bytes < 1:
            raise InvalidArgument(f"buffer_bytes: must be a positive integer, got {buffer_bytes!r}")
        self.buffer_bytes = buffer_bytes
        self._pacers = {"up": _Pacer(bandwidth), "down": _Pacer(bandwidth)}
        self.stats = ProxyStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_Connection] = set()
        self._cut: CutMode | None = None
        self._flowing: asyncio.Event | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    # -- properties and runtime settings --

    @property
    def address(self) -> str:
        """``host:port`` clients connect to (the real port once started)."""
        return f"{self.listen_host}:{self.port}"

    @property
    def latency_ms(self) -> float:
        return self._latency_s * 1000

    def set_latency(self, latency_ms: float) -> None:
        """One-way delay added to each direction; applies to data read from now on."""
        self._latency_s = _check_latency(latency_ms) / 1000

    @property
    def bandwidth_bytes_s(self) -> int | None:
        return self._pacers["up"].rate

    def set_bandwidth(self, bandwidth_bytes_s: int | None) -> None:
        """Cap each direction at this many bytes per second (None: no cap)."""
        rate = _check_bandwidth(bandwidth_bytes_s)
        for pacer in self._pacers.values():
            pacer.rate = rate

    @property
    def is_cut(self) -> bool:
        return self._cut is not None

    @property
    def active_connections(self) -> int:
        return len(self._connections)

    # -- lifecycle --

    def start(self, timeout: float = 10.0) -> TcpProxy:
        if self._thread is not None:
            raise InvalidArgument("proxy: already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._flowing = asyncio.Event()
                self._flowing.set()
                loop.run_until_complete(self._listen())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name=f"tcp-proxy-{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TalosError(f"proxy: did not start within {timeout}s")
        if failure:
            self._thread.join()
            self._thread = None
            exc = failure[0]
            if isinstance(exc, OSError):
                raise TalosError(
                    f"proxy: cannot listen on {self.address}: {exc.strerror or exc}"
                ) from None
            raise exc
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):
            self._call(self._shutdown())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> TcpProxy:
        if self._thread is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- faults --

    def cut(self, mode: CutMode = "refuse") -> None:
        """Partition the link until :meth:`heal`.

        "refuse": every connection is reset and new ones are refused (the
        listener closes). "blackhole": connections stay open but nothing
        passes either way, as in a silent network partition; the data queued
        meanwhile is delivered after the heal.
        """
        if mode not in CUT_MODES:
            raise InvalidArgument(f"mode: must be one of {', '.join(CUT_MODES)}, got {mode!r}")
        self._call(self._cut_async(mode))

    def heal(self) -> None:
        """End a cut: accept connections again and let data flow."""
        self._call(self._heal_async())

    def reset_connections(self) -> int:
        """Reset (TCP RST) every open connection; new ones are accepted. Returns how many."""
        return self._call(self._reset_async())

    # -- internals (run on the proxy's loop) --

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self._loop
        if loop is None or self._thread is None:
            coro.close()
            raise RuntimeError("proxy: not started")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(30)

    @property
    def _flow(self) -> asyncio.Event:
        """Set while data may pass (cleared by a blackhole cut)."""
        if self._flowing is None:
            raise RuntimeError("proxy: not started")
        return self._flowing

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self.listen_host, self.port, reuse_address=True
        )
        sockets = self._server.sockets
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    async def _close_listener(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()

    async def _cut_async(self, mode: CutMode) -> None:
        self._cut = mode
        if mode == "refuse":
            await self._close_listener()
            await self._reset_async()
        else:
            self._flow.clear()

    async def _heal_async(self) -> None:
        if self._server is None:
            await self._listen()
        self._cut = None
        self._flow.set()

    async def _reset_async(self) -> int:
        connections = list(self._connections)
        self._connections.clear()
        for connection in connections:
            connection.abort(reset=True)
        await asyncio.sleep(0)
        return len(connections)

    async def _shutdown(self) -> None:
        await self._close_listener()
        for connection in list(self._connections):
            connection.abort(reset=False)
        self._connections.clear()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            if task is not None:
                self._handlers.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut == "refuse":
            self.stats.refused += 1
            writer.transport.abort()
            return
        self.stats.accepted += 1
        connection = _Connection(writer)
        self._connections.add(connection)
        try:
            await self._flow.wait()  # a blackholed link does not reach the target
            if connection not in self._connections:  # reset meanwhile
                return
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            self._connections.discard(connection)
            connection.abort(reset=True)
            return
        connection.upstream = up_writer
        if connection not in self._connections:  # reset while connecting
            connection.abort(reset=True)
            return
        up = asyncio.ensure_future(self._pipe(reader, up_writer, "up"))
        down = asyncio.ensure_future(self._pipe(up_reader, writer, "down"))
        connection.tasks = [up, down]
        try:
            await asyncio.gather(up, down)
        except OSError:
            connection.abort(reset=True)  # pass a reset on to the other side
        except asyncio.CancelledError:
            connection.abort(reset=False)
        finally:
            self._connections.discard(connection)
            for side in connection.writers():
                side.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str
    ) -> None:
        """Copy one direction through a delay line: read, hold until due, pace, write."""
        line: collections.deque[tuple[float, bytes]] = collections.deque()
        queued = 0
        changed = asyncio.Event()
        ended = False

        async def fill() -> None:
            nonlocal queued, ended
            try:
                while True:
                    while queued >= self.buffer_bytes:
                        changed.clear()
                        await changed.wait()
                    data = await reader.read(READ_BYTES)
                    if not data:
                        break
                    line.append((time.monotonic() + self._latency_s, data))
                    queued += len(data)
                    changed.set()
            finally:
                ended = True
                changed.set()

        filler = asyncio.ensure_future(fill())
        pacer = self._pacers[direction]
        try:
            while line or not ended:
                if not line:
                    changed.clear()
                    await changed.wait()
                    continue
                due, data = line[0]
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self._flow.wait()
                line.popleft()
                for start in range(0, len(data), PACING_BYTES):
                    piece = data[start : start + PACING_BYTES]
                    await pacer.send(len(piece))
                    await self._flow.wait()
                    # Counted before the write, so a reader never sees more than counted.
                    if direction == "up":
                        self.stats.bytes_up += len(piece)
                    else:
                        self.stats.bytes_down += len(piece)
                    writer.write(piece)
                    await writer.drain()
                queued -= len(data)
                changed.set()
            failure = filler.exception() if filler.done() else None
            if failure is not None:
                raise failure
            if writer.can_write_eof():
                writer.write_eof()
        finally:
            filler.cancel()


# -- a command-line front end: python -m talos.testing.proxy -----------------------------------


def _split(address: str, param: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InvalidArgument(f"{param}: {address!r} must be host:port")
    return host, int(port)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m talos.testing.proxy", description="a WAN-emulating TCP proxy"
    )
    parser.add_argument("--listen", default="127.0.0.1:0", help="host:port to accept on")
    parser.add_argument("--target", required=True, help="host:port to forward to")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="one-way added latency")
    parser.add_argument("--bandwidth", type=int, default=None, help="bytes/s per direction")
    args = parser.parse_args(argv)
    try:
        listen_host, listen_port = _split(args.listen, "listen")
        target_host, target_port = _split(args.target, "target")
        proxy = TcpProxy(
            listen_host, listen_port, target_host, target_port, args.latency_ms, args.bandwidth
        ).start()
    except TalosError as exc:
        print(f"proxy: error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    stop_on_signals(stop)
    print(f"proxy {proxy.address} -> {args.target} ({args.latency_ms:g} ms)", flush=True)
    try:
        stop.wait()
    finally:
        proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
