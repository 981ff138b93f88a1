"""The Twilio edge playout model: when the agent's audio is actually heard (doc 4 of
``/work/shared/protocols/twilio-media-streams.md``).

Why: a server may send 5 s of audio in 50 ms. What the person on the phone hears is the playout timeline, not
the websocket arrival, so response latency, silence gaps and barge-in timing must be measured where the audio
plays.

How Twilio plays (doc 4), and so this model:

- Outbound audio is queued and drains at 8000 bytes/s (μ-law, one byte per sample). Audio that arrives while
  the queue is empty starts playing on arrival.
- A mark is reached when all audio queued before it has played; a mark that arrives with nothing queued is
  reached on arrival.
- ``clear`` empties the queue at once and echoes every pending mark immediately.
- More than about 10 minutes of queued audio is discarded (Twilio warning 31931); the excess is counted.

Not modelled: Twilio's own jitter buffer and network delay to the handset (a constant offset for every call).

The model is pure: every method takes ``now`` (seconds on the caller's clock, see :mod:`harness.clock`) and
nothing reads a clock. The contract that makes it exact: **every reported time is computed from the time
playout started and an integer byte count** (byte ``k`` after a start at ``t0`` plays at
``t0 + k / bytes_per_second``), never from the time a method happened to be called. An event loop that calls
:meth:`Playout.advance` late, or seldom, gets the same times; only the split of audio into
:class:`PlayedAudio` pieces depends on when it asks.

A byte is counted as played once it has finished playing (``now`` has reached its end), with a tolerance of a
thousandth of a byte (125 ns at 8 kHz) so that float rounding of ``now`` never holds back a boundary that is
due.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

__all__ = ["ClearResult", "MarkReached", "PlayedAudio", "Playout", "PlayoutEvent", "Underrun"]

#: tolerance, in bytes, when deciding how many bytes have played by ``now`` (see the module docstring)
_EPS_BYTES = 1e-3


@dataclass(frozen=True, slots=True, repr=False)
class PlayedAudio:
    """Audio that has played: byte ``i`` of ``payload`` plays at ``start + i / bytes_per_second``."""

    start: float
    payload: bytes

    def __repr__(self) -> str:
        return f"PlayedAudio(start={self.start!r}, payload=<{len(self.payload)} bytes>)"


@dataclass(frozen=True, slots=True)
class MarkReached:
    """Playout reached mark ``name`` at ``at``: the moment Twilio echoes it (doc 4)."""

    name: str
    at: float


@dataclass(frozen=True, slots=True)
class Underrun:
    """The queue ran dry at ``at`` (exactly when the last queued byte finished): the agent went silent."""

    at: float


PlayoutEvent = PlayedAudio | MarkReached | Underrun


@dataclass(frozen=True, slots=True)
class ClearResult:
    """What a ``clear`` at ``at`` did.

    ``events`` is everything that happened up to ``at``, exactly as :meth:`Playout.advance` would report it
    (audio played, marks reached in the course of playout, an underrun). ``marks`` names the marks that were
    still pending and that the clear echoes at ``at`` (doc 4); they are *not* repeated in ``events``, so a
    caller that echoes every :class:`MarkReached` of ``events`` and every name of ``marks`` echoes each mark
    once. ``dropped_bytes`` is the queued audio that will never play. ``was_playing`` tells whether audio was
    audible at ``at`` (a barge-in reaction cut it) or the queue was already empty (a routine ``clear``, as
    Pipecat sends at the start of every caller turn, doc 5). A clear that cuts audio does not produce an
    :class:`Underrun`: playout stopped at ``at`` because it was told to.
    """

    at: float
    events: tuple[PlayoutEvent, ...]
    dropped_bytes: int
    marks: tuple[str, ...]
    was_playing: bool


class _Audio:
    """A queued media payload; ``offset`` is the index of its first byte since playout started."""

    __slots__ = ("offset", "payload", "played")

    def __init__(self, offset: int, payload: bytes) -> None:
        self.offset = offset
        self.payload = payload
        self.played = 0  # bytes of it already reported


class _Mark:
    """A queued mark, reached once ``offset`` bytes have played."""

    __slots__ = ("name", "offset")

    def __init__(self, offset: int, name: str) -> None:
        self.offset = offset
        self.name = name


class Playout:
    """The queue of agent audio at the Twilio edge of one call, driven by the times passed in.

    Times passed to the methods must not decrease. :meth:`enqueue_audio` and :meth:`enqueue_mark` look at
    playout only to learn whether the queue has run dry by ``now`` (then the new item starts at ``now``); what
    played until then, and the underrun, are kept and returned by the next :meth:`advance` (or :meth:`clear`).
    So no event is lost, no time depends on how often ``advance`` is called, and payloads are cut only where
    ``advance`` or ``clear`` falls inside them.
    """

    def __init__(self, bytes_per_second: int = 8000, max_queued_seconds: float = 600.0) -> None:
        if bytes_per_second <= 0:
            raise ValueError("bytes_per_second must be positive")
        self.bytes_per_second = bytes_per_second
        self.max_queued_seconds = max_queued_seconds
        self._max_queued_bytes = int(max_queued_seconds * bytes_per_second)
        if self._max_queued_bytes < 1:
            raise ValueError("max_queued_seconds must allow at least one byte of audio")
        self._queue: deque[_Audio | _Mark] = deque()
        self._t0: float | None = None  # when the current playout run started; None while idle
        self._played = 0  # bytes since _t0 already reported as played
        self._end = 0  # bytes queued since _t0 (played or not)
        self._last: float | None = None  # latest `now` seen
        self._pending: list[PlayoutEvent] = []  # events found while enqueueing, not yet returned
        self._discarded = 0

    # -- inputs --

    def enqueue_audio(self, payload: bytes, now: float) -> None:
        """Queue agent audio received at ``now``; if the queue is empty it starts playing at ``now``.

        Audio beyond ``max_queued_seconds`` of queue is discarded (Twilio warning 31931, doc 4): the tail of
        this payload that does not fit is dropped and counted in :attr:`discarded_bytes`.
        """
        self._catch_up(now)
        if not payload:
            return
        if self._t0 is None:
            self._t0 = now
            self._played = 0
            self._end = 0
        room = self._max_queued_bytes - (self._end - self._played_by(now))
        if len(payload) > room:
            self._discarded += len(payload) - max(room, 0)
            payload = payload[: max(room, 0)]
            if not payload:
                return
        self._queue.append(_Audio(self._end, bytes(payload)))
        self._end += len(payload)

    def enqueue_mark(self, name: str, now: float) -> None:
        """Queue a mark received at ``now``: reached when the audio queued before it has played, or at ``now``
        if nothing is left to play."""
        self._catch_up(now)
        if self._t0 is None or not self._queue:
            self._pending.append(MarkReached(name, now))
        else:
            self._queue.append(_Mark(self._end, name))

    def advance(self, now: float) -> list[PlayoutEvent]:
        """Everything that happened in playout since the last call, up to ``now``, in time order: audio played
        (a payload cut where ``now`` falls inside it), marks reached, the queue running dry."""
        self._play_until(now)
        events, self._pending = self._pending, []
        return events

    def clear(self, now: float) -> ClearResult:
        """``clear`` received at ``now`` (doc 4): play up to ``now``, drop the rest, name the pending marks to
        echo now (in :attr:`ClearResult.marks`)."""
        self._play_until(now)
        events = self._pending
        self._pending = []
        was_playing = self._t0 is not None and self._played < self._end
        dropped = self._end - self._played
        marks: list[str] = []
        for item in self._queue:
            if isinstance(item, _Mark):
                marks.append(item.name)
        self._queue.clear()
        self._t0 = None
        self._played = self._end = 0
        return ClearResult(
            at=now, events=tuple(events), dropped_bytes=dropped, marks=tuple(marks), was_playing=was_playing
        )

    # -- queries --

    @property
    def queued_bytes(self) -> int:
        """Bytes queued and not yet played, as of the latest ``now`` the model was given."""
        if self._last is None:
            return 0
        return self._end - self._played_by(self._last)

    @property
    def queued_seconds(self) -> float:
        """:attr:`queued_bytes` in seconds of audio."""
        return self.queued_bytes / self.bytes_per_second

    @property
    def discarded_bytes(self) -> int:
        """Audio dropped because the queue was over ``max_queued_seconds`` (warning 31931)."""
        return self._discarded

    @property
    def ends_at(self) -> float | None:
        """When the audio queued so far will have finished playing; ``None`` when idle."""
        if self._t0 is None:
            return None
        return self._t0 + self._end / self.bytes_per_second

    def is_playing(self, now: float) -> bool:
        """Whether agent audio is audible at ``now``, given what is queued so far. Does not change state."""
        ends_at = self.ends_at
        return ends_at is not None and self._t0 is not None and self._t0 <= now < ends_at

    # -- the model --

    def _time_of(self, offset: int) -> float:
        assert self._t0 is not None
        return self._t0 + offset / self.bytes_per_second

    def _played_by(self, now: float) -> int:
        """How many of the bytes queued since playout started have finished playing at ``now``."""
        if self._t0 is None:
            return 0
        return min(self._end, math.floor((now - self._t0) * self.bytes_per_second + _EPS_BYTES))

    def _tick(self, now: float) -> None:
        if self._last is not None and now < self._last:
            raise ValueError(f"time went backwards: {now} after {self._last}")
        self._last = now

    def _catch_up(self, now: float) -> None:
        # Before queueing, find out whether the queue has run dry by `now` (then new audio starts at `now`).
        # Audio that is still playing is left alone, so that only `advance` decides where a payload is cut.
        self._tick(now)
        if self._t0 is not None and self._played_by(now) == self._end:
            self._play_until(now)

    def _play_until(self, now: float) -> None:
        self._tick(now)
        if self._t0 is None:
            return
        target = self._played_by(now)
        queue, out = self._queue, self._pending
        while queue:
            item = queue[0]
            if isinstance(item, _Mark):
                if item.offset > target:
                    break
                out.append(MarkReached(item.name, self._time_of(item.offset)))
                queue.popleft()
                continue
            first = item.offset + item.played  # index of the first byte not yet reported
            if first >= target:
                break
            upto = min(target, item.offset + len(item.payload))
            out.append(PlayedAudio(self._time_of(first), item.payload[item.played : upto - item.offset]))
            if upto == item.offset + len(item.payload):
                queue.popleft()
            else:
                item.played = upto - item.offset
                break
        self._played = max(self._played, target)
        # The queue ran dry at the end of its last byte. It is an underrun only once time has moved past that
        # instant: audio arriving exactly then continues playout without a gap.
        if not queue and self._played == self._end:
            ends_at = self._time_of(self._end)
            if now > ends_at:
                out.append(Underrun(ends_at))
                self._t0 = None
                self._played = self._end = 0
