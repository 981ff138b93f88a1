"""The seam between a simulated caller's script and the transport it calls over.

A :class:`~harness.caller.Call` runs the script, the turns and every measurement; a :class:`Line` only moves audio.
It sends the caller's 20 ms frames when the pacer ticks and reports what the agent sends back, as it arrives, to
:class:`LineEvents`. Two lines exist: Twilio Media Streams over a websocket (:mod:`harness.twilio.line`) and WebRTC
over aiortc (:mod:`harness.webrtc.line`). Audio crosses this seam in one format, μ-law 8 kHz (what the phrase codec
and the :class:`~harness.hearing.Ear` read), so both transports are measured by the same code.
"""

from __future__ import annotations

from typing import Protocol

from harness.records import Outcome
from harness.transport.websocket import Closed


class LineRefused(Exception):
    """The call never connected: ``outcome`` is REJECTED or FAILED_TO_CONNECT, ``reason`` says what and where."""

    def __init__(self, outcome: Outcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


class LineEvents(Protocol):
    """What a line reports, each at the moment it happens (``now`` is the caller's clock)."""

    def on_agent_audio(self, mulaw: bytes, now: float) -> None: ...

    def on_agent_audio_lost(self, ms: float, now: float) -> None:
        """``ms`` of the agent's audio never arrived (packets lost); the audio passed next starts with its silence."""
        ...

    def on_agent_mark(self, name: str, now: float) -> None: ...

    def on_agent_clear(self, now: float) -> None: ...

    def on_protocol_problem(self, text: str, *, unexpected_message: bool = False) -> None: ...

    def on_closed(self, closed: Closed) -> None: ...


class Line(Protocol):
    #: the transport's name in records and reports: ``twilio`` or ``webrtc``
    transport: str
    #: whether the agent can flush the caller's playout buffer (Twilio's ``clear``); without it, a barge-in is
    #: answered by the agent's audio simply stopping
    has_clear: bool
    #: whether audio already received still plays when the far end hangs up (it is on the caller's device: WebRTC);
    #: Twilio drops what its edge still had queued when the stream closes
    plays_out_on_close: bool
    #: the call's id on the platform's side when the platform names it (a WebRTC answer's ``pc_id``); recordings are
    #: stored under it
    platform_call_sid: str | None

    async def connect(self, events: LineEvents, timeout: float) -> str:
        """Place the call; returns the media URL. Raises :class:`LineRefused`."""
        ...

    @property
    def is_open(self) -> bool: ...

    def start_media(self, first_frame_at: float) -> None:
        """The pacer's first tick for this call is due at ``first_frame_at``."""
        ...

    def send_frame(self, payload_b64: str, scheduled: float) -> None:
        """One 20 ms frame of caller audio (base64 μ-law 8 kHz), due at ``scheduled``."""
        ...

    def send_dtmf(self, digit: str) -> None: ...

    def echo_mark(self, name: str) -> None:
        """The audio before mark ``name`` has played (Twilio's mark echo)."""
        ...

    def hang_up(self) -> None:
        """The caller puts the phone down (idempotent; a line already closed is left alone)."""
        ...

    def media_stats(self) -> dict[str, float]:
        """What the transport itself measured at the end of the call, as :class:`~harness.records.CallRecord`
        fields (``concealed_ms``, ``late_frames``)."""
        ...

    async def wait_closed(self) -> None:
        """After :meth:`hang_up`: until the transport has let go of its resources."""
        ...
