"""The WebRTC callers' own network: one impairment for every call of a run, one relay per call.

Each WebRTC call gets its own :class:`~harness.webrtc.relay.UdpRelay` (a call's media is one 5-tuple), and they all
share the leg's current :class:`~harness.webrtc.impairment.Impairment`: a fault on the caller's leg (applied by the
fault timeline, or on demand) changes it for the calls in progress and for the calls that start afterwards, and
rolling the fault back restores a clean path. Packet counts are summed over every relay the leg has opened.
"""

from __future__ import annotations

from typing import Any

from harness.webrtc.impairment import Impairment
from harness.webrtc.relay import UdpRelay


class CallerLeg:
    def __init__(self, seed: int = 1) -> None:
        self._seed = seed
        self._opened = 0
        self.impairment = Impairment()
        self._relays: set[UdpRelay] = set()
        self._closed_stats: list[dict[str, Any]] = []

    async def open_relay(self) -> UdpRelay:
        """A relay for one call (its far end and caller are filled in by :func:`~harness.webrtc.relay.route_through`
        as the descriptions are exchanged)."""
        self._opened += 1
        relay = UdpRelay(None, self.impairment, seed=self._seed * 100_003 + self._opened)
        await relay.start()
        self._relays.add(relay)
        return relay

    async def close_relay(self, relay: UdpRelay) -> None:
        if relay in self._relays:
            self._relays.discard(relay)
            self._closed_stats.append(relay.stats())
            await relay.close()

    def set_impairment(self, impairment: Impairment) -> None:
        self.impairment = impairment
        for relay in self._relays:
            relay.set_impairment(impairment)

    def stats(self) -> dict[str, Any]:
        """Packets seen, lost, reordered... in each direction, over every call's relay so far."""
        totals: dict[str, dict[str, float]] = {"caller_to_far_end": {}, "far_end_to_caller": {}}
        for stats in [*self._closed_stats, *(relay.stats() for relay in self._relays)]:
            for direction, counts in totals.items():
                for key, value in stats[direction].items():
                    if isinstance(value, int):
                        counts[key] = counts.get(key, 0) + value
        for counts in totals.values():
            packets = counts.get("packets", 0)
            counts["loss_pct"] = round(100.0 * counts.get("lost", 0) / packets, 2) if packets else 0.0
        return {**totals, "calls": self._opened,
                "impairment": self.impairment.model_dump(mode="json", exclude_defaults=True)}

    async def close(self) -> None:
        for relay in list(self._relays):
            await self.close_relay(relay)
