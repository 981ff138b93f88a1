"""What the faults drawn for one request do to its response, chunk by chunk (sans-I/O).

At admission the gate draws the stream faults (``slow_first_byte``, ``stall``, ``truncate``, ``garbage``) of a
request into one :class:`Disruption`. The adapters that send (``outbox.write_paced`` for HTTP streams,
``outbox.Outbox`` for websockets, ``outbox.send_whole`` for a response sent in one piece) start a
:class:`StreamShaper` from it and ask it, before each chunk, for that chunk's :class:`ChunkFate`:

- ``hold_s``: wait this long before sending it (the first chunk's extra delay, a stall; ``inf``: until the
  client gives up). A hold shifts every later chunk by as much: the stream pauses, then resumes at its pace.
- ``garble``: send :func:`garble` of it instead (bytes/text the protocol cannot parse).
- ``cut``: do not send it; end the stream abnormally (HTTP: close the connection mid-body; websocket: drop the
  connection without a close frame, or close with the fault's code).

A chunk is whatever the adapter sends as one unit: an audio chunk, an SSE event, an NDJSON line, a websocket
frame (JSON message or binary audio), or a whole non-streamed body (one chunk). Triggers count chunks already
sent (``after_chunks=N``: N chunks go out normally) or time since the stream started (``after_s``: the first
chunk due at or after it). A time-triggered cut also fires with no chunk pending (:meth:`cut_deadline`), so a
quiet websocket is still dropped on time.

Contract: the shaper never sleeps and never touches a socket; every wait it asks for is done by the adapter,
which is cancelled with the request, so no fault outlives its connection.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import overload

from aiohttp import web


@dataclass(frozen=True, slots=True)
class Trigger:
    """When a stall or cut happens: after ``after_chunks`` chunks, or ``after_s`` into the stream."""

    after_chunks: int | None = None
    after_s: float | None = None

    def fires(self, index: int, elapsed: float) -> bool:
        if self.after_chunks is not None:
            return index >= self.after_chunks
        return self.after_s is not None and elapsed >= self.after_s


@dataclass(frozen=True, slots=True)
class Stall:
    at: Trigger
    #: how long nothing is sent; ``math.inf``: until the client gives up
    for_s: float


@dataclass(frozen=True, slots=True)
class Cut:
    at: Trigger
    #: websocket close code; None: the connection is dropped without a close frame (the client sees 1006)
    close_code: int | None = None


@dataclass(frozen=True, slots=True)
class Garble:
    after_chunks: int
    #: how many chunks are replaced; None: every one after ``after_chunks``
    chunks: int | None = None

    def covers(self, index: int) -> bool:
        return index >= self.after_chunks and (self.chunks is None or index < self.after_chunks + self.chunks)


@dataclass
class Disruption:
    """The stream faults drawn for one request, built at admission (empty: served as normal)."""

    rng: random.Random
    #: delay before the handler runs: the response headers, or the websocket's 101, come this much later
    handshake_delay_s: float = 0.0
    first_byte_delay_s: float = 0.0
    stalls: list[Stall] = field(default_factory=list)
    cuts: list[Cut] = field(default_factory=list)
    garbles: list[Garble] = field(default_factory=list)

    @property
    def shapes_stream(self) -> bool:
        return bool(self.first_byte_delay_s or self.stalls or self.cuts or self.garbles)

    def start(self, now: float) -> StreamShaper:
        return StreamShaper(self, now)


@dataclass(frozen=True, slots=True)
class ChunkFate:
    hold_s: float = 0.0
    garble: bool = False
    cut: Cut | None = None


class StreamShaper:
    """One response's progress through its disruption: which chunk comes next, which stalls have happened."""

    def __init__(self, disruption: Disruption, start: float) -> None:
        self.disruption = disruption
        self.start = start
        self.index = 0
        self._stalls = list(disruption.stalls)

    @property
    def rng(self) -> random.Random:
        return self.disruption.rng

    def pending_cut(self, now: float) -> Cut | None:
        """A cut that is due now, chunk or no chunk: the stream ends right after its N-th chunk (or at its
        time), not when a next chunk happens to be ready."""
        index, elapsed = self.index, now - self.start
        return next((c for c in self.disruption.cuts if c.at.fires(index, elapsed)), None)

    def next(self, now: float) -> ChunkFate:
        """The fate of the chunk about to be sent at ``now``; counts it as sent unless it is cut."""
        index, elapsed = self.index, now - self.start
        cut = self.pending_cut(now)
        if cut is not None:
            return ChunkFate(cut=cut)
        hold = self.disruption.first_byte_delay_s if index == 0 else 0.0
        for stall in list(self._stalls):
            if stall.at.fires(index, elapsed):
                hold += stall.for_s
                self._stalls.remove(stall)  # a stall happens once per stream
        garbled = any(g.covers(index) for g in self.disruption.garbles)
        self.index += 1
        return ChunkFate(hold, garbled)

    def cut_deadline(self) -> tuple[float, Cut] | None:
        """The earliest time-triggered cut, if any: due even if no chunk is ready to be sent then."""
        timed = [(self.start + c.at.after_s, c) for c in self.disruption.cuts if c.at.after_s is not None]
        return min(timed, key=lambda t: t[0]) if timed else None


def no_disruption() -> Disruption:
    return Disruption(random.Random(0))


@overload
def garble(payload: bytes, content_type: str | None, rng: random.Random) -> bytes: ...


@overload
def garble(payload: str, content_type: str | None, rng: random.Random) -> str: ...


def garble(payload: bytes | str, content_type: str | None, rng: random.Random) -> bytes | str:
    """A payload the client's protocol cannot parse, in place of ``payload``.

    Text (a websocket message, JSON): text that is not JSON. An SSE event: a ``data:`` line whose JSON is
    broken (the SDK's decoder fails on it). Audio or other bytes: random bytes of the same length (noise to a
    player, nothing to a decoder).
    """
    tag = f"{rng.getrandbits(32):08x}"
    if isinstance(payload, str):
        return f'{{"type": "Res\x00ults", garbage {tag} <not json'
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == "text/event-stream":
        return f'data: {{"id": "chatcmpl-{tag}", "choices": [{{"delta": garbage <not json\n\n'.encode()
    if kind in ("application/json", "application/x-ndjson"):
        return f"<!-- garbage {tag} --> not json\n".encode()
    return rng.randbytes(len(payload))


#: the request's disruption, set by the gate middleware before the handler runs
DISRUPTION_KEY = web.RequestKey("voicechaos_disruption", Disruption)


def disruption_of(request: web.Request) -> Disruption:
    disruption = request.get(DISRUPTION_KEY)
    return disruption if disruption is not None else no_disruption()


__all__ = [
    "DISRUPTION_KEY",
    "ChunkFate",
    "Cut",
    "Disruption",
    "Garble",
    "Stall",
    "StreamShaper",
    "Trigger",
    "disruption_of",
    "garble",
    "no_disruption",
]
