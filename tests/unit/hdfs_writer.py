"""A writer in its own process, for the lease-recovery tests: it opens a segment on
HDFS, appends and hflushes what its stdin asks, and prints what happened.

Commands, one a line: ``append N`` (N bytes of b"a", then hflush), ``quit``.
Replies: ``ok POSITION`` or ``failed RETRIABLE MESSAGE``. It prints ``ready`` once
the file is open.
"""

from __future__ import annotations

import sys

from talos.errors import StorageError
from talos.storage.hdfs import HdfsLogStore
from talos.storage.store import Durability


def main(uri: str, path: str) -> None:
    store = HdfsLogStore(uri)
    stream = store.open_append(path)
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            break
        try:
            stream.append(b"a" * int(words[1]))
            stream.flush(Durability.FLUSH)
            print(f"ok {stream.position}", flush=True)
        except StorageError as exc:
            print(f"failed {exc.retriable} {exc.message}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
