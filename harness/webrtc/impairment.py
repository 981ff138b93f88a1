"""Impairment of the caller's media path: what a bad network does to a stream of UDP packets (sans-I/O).

The WebRTC caller's media (RTP/RTCP inside DTLS/SRTP, all UDP) goes through a small relay in the harness
(:mod:`harness.webrtc.relay`), which asks this core what to do with each datagram. Per direction:

- **loss**: each packet is dropped with probability ``loss_pct`` (independent losses);
- **burst loss**: a two-state Gilbert-Elliott channel: in the *good* state nothing extra is lost, in the *bad* state
  every packet is; ``p_enter`` is the chance per packet of going bad, ``p_leave`` of going good again (mean burst
  length 1/p_leave packets). Real Wi-Fi and cellular losses come in such bursts, which concealment hides far worse
  than the same share of scattered losses;
- **delay and jitter**: each packet is held ``delay_ms`` plus a uniform draw in ``[-jitter_ms, +jitter_ms]`` (never
  below zero). Packets keep their order (a packet is never released before the one before it), as on most paths,
  so jitter shows as bunching, not reordering;
- **reordering**: a share ``reorder_pct`` of packets is held back a further ``reorder_gap_ms``, so the next ones
  overtake it;
- **blackout**: from ``blackout_at`` for ``blackout_s`` seconds every packet is dropped (a dead link or a tunnel).

What it does not model: bandwidth limits and queueing (use a Toxiproxy ``bandwidth`` toxic on TCP legs), duplication,
corruption (SRTP would reject it as loss anyway), path MTU, NAT rebinding, or loss that depends on packet size.
Time comes from the caller (``now`` on the relay's clock); randomness from an injected ``Random``, so a seed gives the
same losses every run.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from random import Random

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Impairment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    loss_pct: float = Field(0.0, ge=0, le=100, description="independent packet loss, %")
    burst_enter_pct: float = Field(0.0, ge=0, le=100, description="Gilbert-Elliott: % chance per packet of "
                                                                  "entering a loss burst")
    burst_leave_pct: float = Field(30.0, gt=0, le=100, description="Gilbert-Elliott: % chance per packet of "
                                                                   "leaving it (mean burst 100/this packets)")
    delay_ms: float = Field(0.0, ge=0, le=10_000)
    jitter_ms: float = Field(0.0, ge=0, le=10_000, description="each packet's delay varies +- this much")
    reorder_pct: float = Field(0.0, ge=0, le=100, description="share of packets held back to arrive late")
    reorder_gap_ms: float = Field(30.0, ge=0, le=10_000)
    blackout_at: float | None = Field(None, ge=0, description="seconds after the relay started")
    blackout_s: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _blackout_has_a_length(self) -> Impairment:
        if self.blackout_at is not None and self.blackout_s <= 0:
            raise ValueError("blackout_at needs blackout_s > 0")
        return self


@dataclass
class DirectionStats:
    packets: int = 0
    lost_random: int = 0
    lost_burst: int = 0
    lost_blackout: int = 0
    reordered: int = 0
    delivered: int = 0

    @property
    def lost(self) -> int:
        return self.lost_random + self.lost_burst + self.lost_blackout

    def to_json(self) -> dict[str, int | float]:
        return {"packets": self.packets, "lost": self.lost, "lost_random": self.lost_random,
                "lost_burst": self.lost_burst, "lost_blackout": self.lost_blackout, "reordered": self.reordered,
                "delivered": self.delivered,
                "loss_pct": round(100.0 * self.lost / self.packets, 2) if self.packets else 0.0}


@dataclass
class Direction:
    """One direction of the path: packets in, the ones to deliver out, at their time."""

    impairment: Impairment
    rng: Random
    start: float
    stats: DirectionStats = field(default_factory=DirectionStats)
    _bad: bool = False
    _last_release: float = 0.0
    _queue: list[tuple[float, int, bytes]] = field(default_factory=list)
    _seq: int = 0

    def packet(self, data: bytes, now: float) -> None:
        """A packet arrived at ``now``: drop it, or schedule its delivery."""
        imp = self.impairment
        self.stats.packets += 1
        if imp.blackout_at is not None and imp.blackout_at <= now - self.start < imp.blackout_at + imp.blackout_s:
            self.stats.lost_blackout += 1
            return
        if imp.burst_enter_pct > 0:
            # the state moves once per packet; in the bad state the packet is lost
            if self._bad:
                self._bad = self.rng.random() * 100 >= imp.burst_leave_pct
            else:
                self._bad = self.rng.random() * 100 < imp.burst_enter_pct
            if self._bad:
                self.stats.lost_burst += 1
                return
        if imp.loss_pct > 0 and self.rng.random() * 100 < imp.loss_pct:
            self.stats.lost_random += 1
            return
        delay = imp.delay_ms
        if imp.jitter_ms > 0:
            delay += self.rng.uniform(-imp.jitter_ms, imp.jitter_ms)
        release = now + max(0.0, delay) / 1000.0
        if imp.reorder_pct > 0 and self.rng.random() * 100 < imp.reorder_pct:
            release += imp.reorder_gap_ms / 1000.0  # overtaken by the next packets; the order rule is not applied
            self.stats.reordered += 1
        else:
            release = max(release, self._last_release)
            self._last_release = release
        self._seq += 1
        heapq.heappush(self._queue, (release, self._seq, data))

    def due(self, now: float) -> list[bytes]:
        """The packets to deliver by ``now``, in delivery order."""
        out = []
        while self._queue and self._queue[0][0] <= now:
            out.append(heapq.heappop(self._queue)[2])
        self.stats.delivered += len(out)
        return out

    def next_due(self) -> float | None:
        return self._queue[0][0] if self._queue else None
