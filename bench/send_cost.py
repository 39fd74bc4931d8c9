"""What one ``send()`` costs the calling thread, by completion style (issue 17 §3).

    python -m bench.send_cost BOOTSTRAP [--size 100] [--count 100000]

Sends go into one 64 MB batch that lingers 60 s, so the producer's I/O loop
is idle while a round is timed; the batch is flushed between rounds. Each
style is the minimum over 9 rounds of the caller thread's CPU time per send,
the styles interleaved in one process (on a shared machine the minimum is the
least disturbed figure). The topic ``t`` must exist.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from talos.client import Producer

STYLES = ("future", "on_delivery", "future+callback")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bootstrap")
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--topic", default="t")
    args = parser.parse_args()
    producer = Producer(
        args.bootstrap, linger_ms=60_000, batch_bytes=64 << 20, buffer_bytes=256 << 20
    )
    try:
        producer.send(args.topic, b"warm-up")
        producer.flush()
        body = b"x" * args.size
        send, topic = producer.send, args.topic

        def delivered(_error: Any, _meta: Any) -> None:
            pass

        def done(_future: Any) -> None:
            pass

        def futures() -> None:
            for _ in range(args.count):
                send(topic, body)

        def callbacks_only() -> None:
            for _ in range(args.count):
                send(topic, body, on_delivery=delivered)

        def futures_with_callbacks() -> None:
            for _ in range(args.count):
                send(topic, body).add_done_callback(done)

        rounds: dict[str, Callable[[], None]] = {
            "future": futures,
            "on_delivery": callbacks_only,
            "future+callback": futures_with_callbacks,
        }
        best = dict.fromkeys(STYLES, float("inf"))
        for _ in range(9):
            for style in STYLES:
                started = time.thread_time()
                rounds[style]()
                best[style] = min(best[style], (time.thread_time() - started) / args.count)
                producer.flush()
        for style in STYLES:
            print(f"{style:16} {best[style] * 1e6:.2f} us per send ({args.size} B)")
    finally:
        producer.close()


if __name__ == "__main__":
    main()
