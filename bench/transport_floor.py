"""What a produce round trip costs with no Talos code in it: the latency floor.

    python -m bench.transport_floor [--rate 700] [--seconds 8] [--rounds 4]

Two do-nothing echo servers in their own processes, each answering a
ProduceRequest of one 150-byte batch with an empty ProduceResponse: a
``grpc.aio`` bidirectional stream (what the producer and broker use) and an
asyncio TCP connection carrying the same protobuf messages length-prefixed.
One client process per round sends requests open loop at ``--rate`` per
second (Talos's producer sends about 700 requests/s at 5,000 msg/s offered)
and times each answer; rounds alternate between the two, so both see the
same minutes of a shared host. The first 10% of each round is warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import struct
import time
from typing import Any

import grpc

from talos.aio import new_event_loop
from talos.bench.stats import percentile
from talos.proto import talos_pb2 as pb
from talos.proto import talos_pb2_grpc as pb_grpc

_LENGTH = struct.Struct("<I")
BATCH = b"x" * 150


class _Echo(pb_grpc.BrokerServicer):  # type: ignore[misc]
    async def ProduceStream(self, requests: Any, context: Any) -> Any:
        async for request in requests:
            yield pb.ProduceResponse(request_id=request.request_id)


async def _grpc_server(port: Any) -> None:
    server = grpc.aio.server()
    pb_grpc.add_BrokerServicer_to_server(_Echo(), server)
    port.value = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await server.wait_for_termination()


async def _tcp_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            (size,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
            request = pb.ProduceRequest.FromString(await reader.readexactly(size))
            answer = pb.ProduceResponse(request_id=request.request_id).SerializeToString()
            writer.write(_LENGTH.pack(len(answer)) + answer)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def _tcp_server(port: Any) -> None:
    server = await asyncio.start_server(_tcp_echo, "127.0.0.1", 0)
    port.value = server.sockets[0].getsockname()[1]
    await server.serve_forever()


def _serve(kind: str, port: Any) -> None:
    loop = new_event_loop()
    loop.run_until_complete(_grpc_server(port) if kind == "grpc" else _tcp_server(port))


def _request(i: int) -> pb.ProduceRequest:
    return pb.ProduceRequest(
        request_id=i, batches=[pb.ProduceBatch(topic="t", partition=0, records=BATCH)]
    )


async def _paced(rate: float, seconds: float, send: Any) -> None:
    start = time.perf_counter()
    for i in range(1, int(rate * seconds) + 1):
        left = start + i / rate - time.perf_counter()
        if left > 0:
            await asyncio.sleep(left)
        await send(i)


async def _grpc_client(port: int, rate: float, seconds: float) -> list[float]:
    sent: dict[int, float] = {}
    took: list[float] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = pb_grpc.BrokerStub(channel).ProduceStream()

        async def read() -> None:
            async for answer in call:
                took.append((time.perf_counter() - sent.pop(answer.request_id)) * 1000)

        async def send(i: int) -> None:
            sent[i] = time.perf_counter()
            await call.write(_request(i))

        reader = asyncio.ensure_future(read())
        await _paced(rate, seconds, send)
        await call.done_writing()
        await asyncio.wait_for(reader, 10)
    return took


async def _tcp_client(port: int, rate: float, seconds: float) -> list[float]:
    sent: dict[int, float] = {}
    took: list[float] = []
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    total = int(rate * seconds)

    async def read() -> None:
        while len(took) < total:
            (size,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
            answer = pb.ProduceResponse.FromString(await reader.readexactly(size))
            took.append((time.perf_counter() - sent.pop(answer.request_id)) * 1000)

    async def send(i: int) -> None:
        body = _request(i).SerializeToString()
        sent[i] = time.perf_counter()
        writer.write(_LENGTH.pack(len(body)) + body)

    reading = asyncio.ensure_future(read())
    await _paced(rate, seconds, send)
    await asyncio.wait_for(reading, 10)
    writer.close()
    return took


def _client(kind: str, port: int, rate: float, seconds: float, out: Any) -> None:
    run = _grpc_client if kind == "grpc" else _tcp_client
    out.put(new_event_loop().run_until_complete(run(port, rate, seconds)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=700.0, help="requests/s, open loop")
    parser.add_argument("--seconds", type=float, default=8.0, help="per round")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of each transport")
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    servers = {}
    try:
        for kind in ("grpc", "tcp"):
            port = ctx.Value("i", 0)
            proc = ctx.Process(target=_serve, args=(kind, port), daemon=True)
            proc.start()
            deadline = time.monotonic() + 30
            while port.value == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            servers[kind] = (proc, int(port.value))
        print(f"open loop at {args.rate:,.0f} requests/s, {args.seconds:g} s per round")
        for round_ in range(1, args.rounds + 1):
            for kind in ("grpc", "tcp"):
                out = ctx.Queue()
                client = ctx.Process(
                    target=_client, args=(kind, servers[kind][1], args.rate, args.seconds, out)
                )
                client.start()
                took = out.get(timeout=args.seconds + 60)
                client.join()
                ordered = sorted(took[len(took) // 10 :])
                name = "gRPC aio stream" if kind == "grpc" else "asyncio TCP"
                print(
                    f"round {round_} {name:16s} p50 {percentile(ordered, 50):.3f} "
                    f"p99 {percentile(ordered, 99):.3f} p99.9 {percentile(ordered, 99.9):.3f} "
                    f"max {ordered[-1]:.3f} ms ({len(ordered)} requests)",
                    flush=True,
                )
    finally:
        for proc, _port in servers.values():
            proc.kill()
            proc.join()


if __name__ == "__main__":
    main()
