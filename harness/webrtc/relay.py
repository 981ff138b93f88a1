"""A UDP relay on loopback that impairs the media path between one caller and its far end (the asyncio adapter of
:mod:`harness.webrtc.impairment`).

The caller sends to the relay's address instead of the far end's; the relay forwards each datagram from its own second
socket, and sends what comes back to the caller's address (the last one it heard from). Each direction has its own
:class:`~harness.webrtc.impairment.Direction`, and one task delivers the packets that are due. The impairment can be
changed while packets flow (a fault applied, then rolled back); a change applies to packets that arrive afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from random import Random
from typing import Any

from harness.webrtc.impairment import Direction, Impairment

Address = tuple[str, int]


class _Side(asyncio.DatagramProtocol):
    def __init__(self, on_packet: Callable[[bytes, Address], None]) -> None:
        self.on_packet = on_packet

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.on_packet(data, addr)


class UdpRelay:
    def __init__(self, far_end: Address, impairment: Impairment | None = None, *, seed: int = 1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.far_end = far_end
        self.clock = clock
        start = clock()
        rng = Random(seed)
        impairment = impairment or Impairment()
        self.up = Direction(impairment, Random(rng.random()), start)  # caller -> far end
        self.down = Direction(impairment, Random(rng.random()), start)  # far end -> caller
        self.caller: Address | None = None
        self._near: asyncio.DatagramTransport | None = None
        self._far: asyncio.DatagramTransport | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def impairment(self) -> Impairment:
        return self.up.impairment

    def set_impairment(self, impairment: Impairment) -> None:
        self.up.impairment = self.down.impairment = impairment

    async def start(self) -> Address:
        """Open both sockets on 127.0.0.1; returns the address the caller sends to."""
        loop = asyncio.get_running_loop()
        self._near, _ = await loop.create_datagram_endpoint(lambda: _Side(self._from_caller),
                                                            local_addr=("127.0.0.1", 0))
        self._far, _ = await loop.create_datagram_endpoint(lambda: _Side(self._from_far_end),
                                                           local_addr=("127.0.0.1", 0))
        self._task = asyncio.create_task(self._deliver())
        return self._near.get_extra_info("sockname")[:2]

    def _from_caller(self, data: bytes, addr: Address) -> None:
        self.caller = addr
        self.up.packet(data, self.clock())
        self._wake.set()

    def _from_far_end(self, data: bytes, addr: Address) -> None:
        self.down.packet(data, self.clock())
        self._wake.set()

    async def _deliver(self) -> None:
        while True:
            now = self.clock()
            assert self._far is not None and self._near is not None
            for data in self.up.due(now):
                self._far.sendto(data, self.far_end)
            for data in self.down.due(now):
                if self.caller is not None:
                    self._near.sendto(data, self.caller)
            due = [t for t in (self.up.next_due(), self.down.next_due()) if t is not None]
            self._wake.clear()
            if due:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, min(due) - self.clock()))
            else:
                await self._wake.wait()

    def stats(self) -> dict[str, Any]:
        return {"caller_to_far_end": self.up.stats.to_json(), "far_end_to_caller": self.down.stats.to_json(),
                "impairment": self.impairment.model_dump(mode="json", exclude_defaults=True)}

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for transport in (self._near, self._far):
            if transport is not None:
                transport.close()
