"""The load process's call engine: a hang-up is never lost, whenever it arrives.

A Locust user killed just after it dialled hangs its call up before the call's task first ran on the engine's loop
(the task is created by one queued callback and first run by another, queued after the hang-up). The hang-up must
still end the call; before, the call ran to its end and its record came after the run had closed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from harness.caller import Dial
from harness.load.engine import CallEngine
from harness.scenario import Scenario

SILENT_FOR_S = 20.0  # the agent answers and never speaks: a call not hung up waits for its greeting this long


@pytest.fixture
def silent_agent() -> Iterator[str]:
    """A Media Streams endpoint on loopback that accepts calls and says nothing, in a thread of its own."""
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def hold(socket: ServerConnection) -> None:
        async for _ in socket:
            pass

    async def main() -> None:
        stop = asyncio.Event()
        state["stop"], state["loop"] = stop, asyncio.get_running_loop()
        async with serve(hold, "127.0.0.1", 0) as server:
            state["url"] = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/media"
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield state["url"]
    state["loop"].call_soon_threadsafe(state["stop"].set)
    thread.join(10)


def _scenario() -> Scenario:
    return Scenario.model_validate({
        "name": "engine", "target": {"websocket": {"url": "ws://127.0.0.1:1/media"}},
        "callers": {"count": 1},
        "script": [{"wait_for_greeting": {"timeout": SILENT_FOR_S}}, "hang_up"],
        "limits": {"duration": 60, "call_timeout": 40},
    })


class Events:
    """What the engine emitted (on its thread), and a wait for a condition on it without polling the clock."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self._changed = threading.Condition()

    def emit(self, name: str, fields: dict[str, Any]) -> None:
        with self._changed:
            self.seen.append((name, fields))
            self._changed.notify_all()

    def connected(self, call_id: int) -> bool:
        return any(name == "call_connected" and fields["call_id"] == call_id for name, fields in self.seen)

    def wait_connected(self, call_id: int, timeout: float = 10.0) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: self.connected(call_id), timeout), f"call {call_id} not connected"


def _engine() -> tuple[CallEngine, Events]:
    events = Events()
    engine = CallEngine(_scenario(), process_index=0, emit=events.emit)
    engine.start()
    return engine, events


def test_a_hang_up_before_the_calls_task_ran_still_ends_the_call(silent_agent: str) -> None:
    engine, events = _engine()
    try:
        assert engine.loop is not None
        gate = threading.Event()
        engine.loop.call_soon_threadsafe(gate.wait, 10)  # hold the loop: both callbacks queue before either runs
        placed = engine.place_call(Dial(websocket_url=silent_agent))
        assert placed is not None
        call_id, future = placed
        engine.hang_up(call_id, "the load stopped (Locust stopped this caller)")
        started = time.monotonic()
        gate.set()
        record = future.result(timeout=15)
        assert time.monotonic() - started < 10  # not the agent's 20 s of silence
        assert "stopped before it finished: the load stopped (Locust stopped this caller)" in record.reason
        assert [name for name, _ in events.seen if name in ("call_started", "call_ended")] == ["call_started",
                                                                                              "call_ended"]
        assert not events.connected(call_id)  # ended before it dialled the agent
    finally:
        engine.stop()


def test_hang_up_all_ends_the_calls_placed_so_far_started_or_not(silent_agent: str) -> None:
    engine, events = _engine()
    try:
        assert engine.loop is not None
        first = engine.place_call(Dial(websocket_url=silent_agent))
        assert first is not None
        events.wait_connected(first[0])
        gate = threading.Event()
        engine.loop.call_soon_threadsafe(gate.wait, 10)
        second = engine.place_call(Dial(websocket_url=silent_agent))  # dialled, its task not run yet
        assert second is not None
        engine.hang_up_all("the load stopped (its process was ending)")
        gate.set()
        for _, future in (first, second):
            record = future.result(timeout=15)
            assert "stopped before it finished: the load stopped (its process was ending)" in record.reason
        assert engine.ended == engine.placed == 2
        # a call placed afterwards (another test started from the web UI) is not touched
        third = engine.place_call(Dial(websocket_url=silent_agent))
        assert third is not None
        events.wait_connected(third[0])  # a call stopped at its start never connects: this one did
        assert not third[1].done()
        engine.hang_up(third[0], "the test ended")
        assert "stopped before it finished: the test ended" in third[1].result(timeout=15).reason
    finally:
        engine.stop()
