"""What TLS (and the bearer token) cost per gRPC call, in CPU time, client and server in
one process: ``python -m bench.tls_cost``.

CPU time, not wall time, because the development machine is shared: wall-clock
throughput moves 2x between identical runs there, CPU time per call much less. The
broker's real work per call (validate, append, flush) is what this is compared with in
bench/README.md. Runs are interleaved (plaintext, TLS, plaintext, ...) and the minimum
per mode is reported.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent import futures
from typing import Any

import grpc

from talos.client.connection import open_channel
from talos.security.pki import generate
from talos.security.tls import ClientSecurity, ServerTLS


def _echo(request: bytes, context: grpc.ServicerContext) -> bytes:
    return b"ok"


class _Echo(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    def service(self, details: grpc.HandlerCallDetails) -> Any:
        return grpc.unary_unary_rpc_method_handler(_echo)


def cpu_per_call(
    channel: grpc.Channel, security: ClientSecurity, payload: bytes, calls: int
) -> float:
    """Process CPU seconds per call (client and server threads together)."""
    call = channel.unary_unary("/bench/Echo", request_serializer=None, response_deserializer=None)
    metadata = security.metadata()  # as talos.client.connection.Connections sends it
    call(payload, metadata=metadata)  # connect (and handshake) outside the measurement
    start = time.process_time()
    for _ in range(calls):
        call(payload, metadata=metadata)
    return (time.process_time() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="2048,262144", help="payload bytes, comma-separated")
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    with tempfile.TemporaryDirectory() as tmp:
        pki = generate(tmp)
        server = grpc.server(futures.ThreadPoolExecutor(4), options=options)
        server.add_generic_rpc_handlers((_Echo(),))
        plain_port = server.add_insecure_port("127.0.0.1:0")
        tls = ServerTLS(pki.server_cert, pki.server_key).credentials()
        tls_port = server.add_secure_port("127.0.0.1:0", tls)
        server.start()
        secure = ClientSecurity(ca=pki.ca, token="talos_000000000000_" + "x" * 43)
        plain = ClientSecurity()
        channels = {
            "plaintext": (open_channel(f"127.0.0.1:{plain_port}", plain), plain),
            "TLS + token": (open_channel(f"127.0.0.1:{tls_port}", secure), secure),
        }
        try:
            for size in (int(s) for s in args.sizes.split(",")):
                payload = b"x" * size
                best = {mode: float("inf") for mode in channels}
                for _ in range(args.rounds):
                    for mode, (channel, security) in channels.items():
                        cost = cpu_per_call(channel, security, payload, args.calls)
                        best[mode] = min(best[mode], cost)
                plain_s, secured = best["plaintext"], best["TLS + token"]
                print(
                    f"{size:>8} B/call: plaintext {plain_s * 1e6:8.1f} us CPU, TLS + token "
                    f"{secured * 1e6:8.1f} us CPU: TLS adds {(secured - plain_s) * 1e6:7.1f} us "
                    f"per call ({(secured - plain_s) / size * 1e9:.2f} ns/B)"
                )
        finally:
            for channel, _security in channels.values():
                channel.close()
            server.stop(None)


if __name__ == "__main__":
    main()
