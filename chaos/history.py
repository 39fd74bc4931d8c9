"""The history of a chaos run: one JSON object per line, written by every process.

Each client process appends to its own file, so no locking across processes
is needed; the checker merges the files. Every event carries ``t`` (wall
seconds, the machine's real clock, never a shifted broker clock), ``proc``
(the writer), ``n`` (its sequence number in the writer) and ``type``. The types and their fields:

- ``send``   dc, topic, value, partition — written before the send is attempted
- ``ack``    dc, topic, value, partition, offset — the broker acknowledged it
- ``fail``   dc, topic, value, definite (bool), error — the send failed;
  ``definite`` only when the record can never have been stored
- ``assign`` dc, topic, partition, session, offset — a reader starts at offset
- ``read``   dc, topic, partition, session, offset, value — a live poll returned it
- ``read-error`` dc, topic, partition, offset, error, expected — a read failed (``expected``
  when it hit data the nemesis destroyed on purpose)
- ``drain``  dc, topic, partition, offset, value — the final read after the faults
- ``drain-end`` dc, topic, partition, log_end — the final read covered [0, log_end)
- ``mirror`` source_dc, source_topic, target_dc, target_topic — the target copies the source
- ``nemesis`` kind, phase (start|end), node, detail; kills also list ``partitions``
  (the [dc, topic, partition] triples the killed broker owned); corruption of
  acknowledged data lists the ``destroyed`` values with their dc and topic

Values are unique over the whole run (``<proc>-<sequence>``).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from talos.errors import InvalidArgument

Event = Mapping[str, Any]

EVENT_TYPES = frozenset(
    {
        "send",
        "ack",
        "fail",
        "assign",
        "read",
        "read-error",
        "drain",
        "drain-end",
        "mirror",
        "nemesis",
    }
)


class HistoryWriter:
    """Appends events to a JSON-lines file; safe to call from several threads."""

    def __init__(self, path: str | os.PathLike[str], proc: str) -> None:
        self.path = Path(path)
        self.proc = proc
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")
        self._lock = threading.Lock()
        self._sequence = 0

    def write(self, type_: str, **fields: Any) -> None:
        if type_ not in EVENT_TYPES:
            raise InvalidArgument(f"type: must be one of {sorted(EVENT_TYPES)}, got {type_!r}")
        with self._lock:
            if self._file.closed:
                return
            self._sequence += 1
            event = {
                "t": round(time.time(), 6),
                "n": self._sequence,
                "proc": self.proc,
                "type": type_,
                **fields,
            }
            self._file.write(json.dumps(event, separators=(",", ":"), sort_keys=True) + "\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def __enter__(self) -> HistoryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_events(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The events of one file; a torn last line (writer killed mid-write) is skipped."""
    with Path(path).open(encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                yield event


def load_history(paths: Iterable[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """All events of all files, ordered by time (stable for equal times)."""
    events: list[dict[str, Any]] = []
    for path in paths:
        events.extend(read_events(path))
    events.sort(key=lambda e: float(e.get("t", 0.0)))
    return events


def history_files(run_dir: str | os.PathLike[str]) -> list[Path]:
    return sorted(Path(run_dir).glob("history/*.jsonl"))
