"""Which event loop Talos runs on, and the knob that chooses it."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from talos import aio
from talos.errors import InvalidArgument


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TALOS_EVENT_LOOP", raising=False)
    assert aio.loop_kind() == "uvloop"
    assert aio.run(_loop_type()) is uvloop.Loop


def test_the_standard_loop_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALOS_EVENT_LOOP", "asyncio")
    loop_type = aio.run(_loop_type())
    assert loop_type is not uvloop.Loop
    assert issubclass(loop_type, asyncio.BaseEventLoop)


def test_an_unknown_loop_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALOS_EVENT_LOOP", "trio")
    with pytest.raises(InvalidArgument, match=r"^TALOS_EVENT_LOOP: must be one of uvloop, asyncio"):
        aio.new_event_loop()
