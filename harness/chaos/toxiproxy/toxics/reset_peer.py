"""``reset_peer``: ``timeout`` ms after the first data (or end of stream) in its direction, the connection is reset.

As Toxiproxy ``toxics/reset_peer.go`` and ``link.go``: nothing happens until data flows; the first chunk is consumed
and what follows is held back, then the stream ends. The reset is a TCP RST only when the toxic existed when the
connection was accepted (the proxy then sets ``SO_LINGER 0`` on both sockets, so every close of that connection is an
RST, on both sides); a toxic added to a live connection ends it with an ordinary close (FIN). Unlike Go's, the wait is
interruptible: removing or updating the toxic cancels a pending reset and hands the held data on.
"""

from __future__ import annotations

from dataclasses import dataclass
from random import Random
from typing import ClassVar

from harness.chaos.toxiproxy.toxics.base import END, Chunk, Item, Toxic, ToxicState


@dataclass(frozen=True)
class ResetPeer(Toxic):
    type_name = "reset_peer"
    rst_on_close: ClassVar[bool] = True
    timeout: int = 0  # ms

    def start(self, now: float, rng: Random) -> ToxicState:
        return ResetPeerState(self)


class ResetPeerState(ToxicState):
    def __init__(self, toxic: ResetPeer) -> None:
        self._timeout = toxic.timeout / 1000.0
        self._reset_at: float | None = None
        self._held: list[Item] = []
        self._done = False

    def receive(self, item: Item, now: float) -> None:
        if self._reset_at is None:
            self._reset_at = now + self._timeout  # the first item is consumed: it starts the countdown
        else:
            self._held.append(item)

    def pull(self, now: float) -> list[Item]:
        if not self._done and self._reset_at is not None and now >= self._reset_at:
            self._done = True
            self._held.clear()
            return [END]
        return []

    def deadline(self) -> float | None:
        return None if self._done else self._reset_at

    def held_bytes(self) -> int:
        return sum(len(item.data) for item in self._held if isinstance(item, Chunk))

    def flush(self) -> list[Item]:
        out, self._held = self._held, []
        return out
