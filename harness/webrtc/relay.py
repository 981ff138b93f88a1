"""A UDP relay on loopback that impairs the media path between one caller and its far end (the asyncio adapter of
:mod:`harness.webrtc.impairment`).

The relay has two sockets. The caller sends to the *near* one instead of the far end's address; the relay forwards
each datagram to the far end from its *far* socket, and sends what arrives there back to the caller (the address
given, else the last one it heard from). For WebRTC both descriptions are rewritten so that each side sees the other
at the relay (:func:`route_through`): ICE then only finds paths through it, in both directions. Each direction has
its own :class:`~harness.webrtc.impairment.Direction`, and one task delivers the packets that are due. The
impairment can be changed while packets flow (a fault applied, then rolled back); a change applies to packets that
arrive afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from random import Random
from typing import Any

from harness.webrtc.impairment import Direction, Impairment
from harness.webrtc.loopback import candidates

Address = tuple[str, int]


class _Side(asyncio.DatagramProtocol):
    def __init__(self, on_packet: Callable[[bytes, Address], None]) -> None:
        self.on_packet = on_packet

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.on_packet(data, addr)


class UdpRelay:
    def __init__(self, far_end: Address | None, impairment: Impairment | None = None, *, seed: int = 1,
                 clock: Callable[[], float] = time.monotonic, caller: Address | None = None) -> None:
        self.far_end = far_end
        self.clock = clock
        start = clock()
        rng = Random(seed)
        impairment = impairment or Impairment()
        self.up = Direction(impairment, Random(rng.random()), start)  # caller -> far end
        self.down = Direction(impairment, Random(rng.random()), start)  # far end -> caller
        self.caller: Address | None = caller
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
        return self.near_address

    @property
    def near_address(self) -> Address:
        """Where the caller sends (the far end, as the caller sees it)."""
        assert self._near is not None
        return tuple(self._near.get_extra_info("sockname")[:2])  # type: ignore[return-value]

    @property
    def far_address(self) -> Address:
        """Where the far end sends (the caller, as the far end sees it)."""
        assert self._far is not None
        return tuple(self._far.get_extra_info("sockname")[:2])  # type: ignore[return-value]

    def _from_caller(self, data: bytes, addr: Address) -> None:
        self.caller = addr  # the caller's ICE may settle on another of its addresses: follow it
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
                if self.far_end is not None:
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
        """Stop relaying; packets already in the relay are delivered first (a call's last packets, its hang-up)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._far is not None and self._near is not None:
            for data in self.up.due(float("inf")):
                if self.far_end is not None:
                    self._far.sendto(data, self.far_end)
            for data in self.down.due(float("inf")):
                if self.caller is not None:
                    self._near.sendto(data, self.caller)
        for transport in (self._near, self._far):
            if transport is not None:
                transport.close()


def route_through(sdp: str, via: Address) -> tuple[str, Address]:
    """Rewrite a description so that its one host candidate (and the media line's default address) is ``via``;
    returns the new SDP and the address it replaced. A description with candidates on more than one address is
    refused: a second path would bypass the relay."""
    found = {(c.address, c.port) for c in candidates(sdp)}
    if len(found) != 1:
        raise ValueError(f"cannot route a description with {len(found)} candidate addresses through the relay "
                         f"({sorted(found)}); gather on loopback only")
    [(host, port)] = found
    out = re.sub(rf"^(a=candidate:\S+ \d+ \S+ \d+ ){re.escape(host)} {port} ",
                 lambda m: f"{m.group(1)}{via[0]} {via[1]} ", sdp, flags=re.MULTILINE)
    out = re.sub(rf"^(m=\S+ ){port} ", lambda m: f"{m.group(1)}{via[1]} ", out, flags=re.MULTILINE)
    out = re.sub(rf"^c=IN IP4 {re.escape(host)}$", f"c=IN IP4 {via[0]}", out, flags=re.MULTILINE)
    return out, (host, port)
