"""The WebRTC caller's jitter buffer: what a person's phone or browser does with a lost packet.

aiortc's receiver keeps the audio in a ``JitterBuffer(capacity=16, prefetch=4)`` that waits for a missing packet until
16 later ones have arrived, then drops frames to make room: one lost packet stalls the audio for up to 320 ms and
takes several good frames with it. Measured here, 5 % loss became about 25 % of the agent's audio concealed (a hole
of 100 ms per lost packet). That is aiortc's receiver, not the network, and not what a person hears: a browser's
NetEQ plays on and conceals the one lost frame. So the caller's receivers use :class:`CallerJitterBuffer`: a missing
packet is given up as soon as :data:`PREFETCH` packets wait behind it, instead of stalling the stream; the lost frame
is then concealed by its RTP timestamp (:class:`~harness.webrtc.media.TrackListener`) and the timeline keeps its
length. Its depth is 2 packets (40 ms) rather than aiortc's 4: jitter is absorbed after it by the caller's adaptive
playout delay (:mod:`harness.webrtc.line`, 60 ms to start), so the receive path adds about 100 ms on a clean path.

The agent's side (the reference runtime, or a Pipecat bot, both aiortc) keeps aiortc's own buffer: that is how those
agents really hear a lossy caller.
"""

from __future__ import annotations

from typing import Any

from aiortc.jitterbuffer import JitterBuffer, JitterFrame

CAPACITY = 16  # aiortc's own (rtcrtpreceiver.py)
PREFETCH = 2  # packets that wait behind the one played (aiortc: 4)


class CallerJitterBuffer(JitterBuffer):
    """Audio only (one packet per frame, as Opus and G.711 are sent): plays the oldest packet once ``prefetch``
    packets wait behind it, and skips the holes before it."""

    def __init__(self) -> None:
        super().__init__(capacity=CAPACITY, prefetch=PREFETCH)
        self.skipped = 0  # packets given up as lost

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        assert self._origin is not None
        first: int | None = None
        waiting = 0
        for count in range(self._capacity):
            if self._packets[(self._origin + count) % self._capacity] is not None:
                if first is None:
                    first = count
                else:
                    waiting += 1
        if first is None or waiting < self._prefetch:
            return None
        packet: Any = self._packets[(self._origin + first) % self._capacity]
        self.skipped += first
        self.remove(first + 1)
        return JitterFrame(data=packet._data, timestamp=packet.timestamp)


def use_caller_jitter_buffer(receiver: Any) -> None:
    """Give an aiortc ``RTCRtpReceiver`` (audio) the caller's jitter buffer. It replaces a private attribute, so the
    aiortc version is pinned in pyproject.toml and tests/test_webrtc_caller.py fails if the attribute goes away."""
    name = "_RTCRtpReceiver__jitter_buffer"
    if not isinstance(getattr(receiver, name, None), JitterBuffer):
        raise RuntimeError("aiortc's RTCRtpReceiver has no audio jitter buffer where voicechaos expects it")
    setattr(receiver, name, CallerJitterBuffer())
