"""talos.heap: which glibc thresholds keep_freed_memory sets, and which it leaves alone."""

from __future__ import annotations

import pytest

from talos import heap


class RecordingLibc:
    """Stands in for glibc (a foreign library): records mallopt and malloc_trim calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append(("mallopt", param, value))
        return 1

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("malloc_trim", pad, 0))
        return 1


@pytest.fixture
def libc(monkeypatch: pytest.MonkeyPatch) -> RecordingLibc:
    fake = RecordingLibc()
    monkeypatch.setattr(heap, "_LIBC", fake)
    for name in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"):
        monkeypatch.delenv(name, raising=False)
    return fake


def test_both_thresholds_are_raised(libc: RecordingLibc) -> None:
    assert heap.keep_freed_memory()
    assert libc.calls == [
        ("mallopt", -1, heap.TRIM_THRESHOLD),
        ("mallopt", -3, heap.MMAP_THRESHOLD),
    ]


def test_a_threshold_given_in_the_environment_is_left_as_given(
    libc: RecordingLibc, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    heap.keep_freed_memory()
    assert libc.calls == [("mallopt", -3, heap.MMAP_THRESHOLD)]


def test_release_free_heap_trims_everything(libc: RecordingLibc) -> None:
    heap.release_free_heap()
    assert libc.calls == [("malloc_trim", 0, 0)]


def test_without_glibc_nothing_is_called(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "_LIBC", None)
    assert heap.keep_freed_memory() is False
    heap.release_free_heap()


def test_this_machine_has_glibc() -> None:
    assert heap._LIBC is not None, "the broker's heap settings would silently do nothing"
