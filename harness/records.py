"""What a call and each of its turns measured, as plain records (written to the run's event log as JSON)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    COMPLETED = "completed"
    REJECTED = "rejected"  # the platform said no: <Reject>, a refused or 1013-closed stream
    DROPPED = "dropped"  # the platform ended the call in the middle of the script
    FAILED_TO_CONNECT = "failed_to_connect"  # webhook or websocket unreachable / broken
    TIMED_OUT = "timed_out"  # no reply, no hang-up when expected, or the call's time ran out
    ERROR = "error"  # the harness itself failed (a bug, reported as such, never blamed on the agent)


@dataclass
class TurnRecord:
    """One agent turn: the greeting, or the reply to one caller utterance.

    Times are seconds on the caller's monotonic clock; ``*_ms`` values are what the report uses.
    """

    index: int
    step: int  # index of the script step that opened the turn
    kind: str  # "greeting" | "reply"
    caller_text: str | None = None
    expected: list[str] = field(default_factory=list)
    listen_from: float = 0.0  # end of caller speech (or stream start for the greeting)
    caller_speech_start: float | None = None
    first_audio_at: float | None = None
    last_audio_end: float | None = None
    response_latency_ms: float | None = None
    #: when the turn was closed (its reply heard, the caller gave up waiting, or the call ended)
    closed_at: float | None = None
    gaps_ms: list[float] = field(default_factory=list)
    heard: list[str] = field(default_factory=list)
    undecodable: int = 0
    undecodable_reasons: list[str] = field(default_factory=list)
    cut_phrases: int = 0  # phrases cut short by a clear (barge-in): not garbled audio
    # how much of the agent's phrase audio arrived intact: symbols of recognised phrases, and those read clearly
    # (a phrase cut by a clear is left out: that is the agent's choice, not the network's)
    audio_symbols: int = 0
    audio_symbols_clear: int = 0
    #: WebRTC: agent audio of this turn lost on the way and concealed as silence (from its first audio on)
    concealed_ms: float = 0.0
    barge_in: bool = False
    barge_in_reaction_ms: float | None = None
    stray_clears: int = 0  # clear while nothing was playing (logged; no reaction)
    status: str = "open"  # ok | no_response | mismatch | garbled | interrupted | cut_off

    @property
    def max_gap_ms(self) -> float:
        return max(self.gaps_ms, default=0.0)

    @property
    def audio_quality(self) -> float | None:
        """The share of the turn's phrase symbols that arrived intact (1.0: all of them); None without phrases."""
        if not self.audio_symbols:
            return None
        return round(self.audio_symbols_clear / self.audio_symbols, 4)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["max_gap_ms"] = self.max_gap_ms
        data["audio_quality"] = self.audio_quality
        return data


@dataclass
class CallRecord:
    call_id: int
    call_sid: str
    stream_sid: str
    outcome: Outcome | None = None
    reason: str = ""
    started_at: float = 0.0  # wall clock (epoch seconds), for the event log
    connect_ms: float | None = None
    duration_s: float | None = None
    turns: list[TurnRecord] = field(default_factory=list)
    frames_sent: int = 0
    dtmf_sent: str = ""
    marks_echoed: int = 0
    clears: int = 0
    stray_clears: int = 0  # clears while nothing played (e.g. Pipecat clears at every caller turn)
    protocol_errors: int = 0
    protocol_error_examples: list[str] = field(default_factory=list)
    unexpected_messages: int = 0
    close_code: int | None = None
    close_reason: str = ""
    send_lateness_max_ms: float = 0.0
    discarded_audio_bytes: int = 0
    #: how the call was placed (``twilio`` or ``webrtc``) and the scenario's caller group it belongs to
    transport: str = "twilio"
    group: str = "twilio"
    #: WebRTC receiver: agent audio lost on the way and concealed as silence, and packets that came too late to play
    #: (a websocket loses nothing: 0 on Twilio)
    concealed_ms: float = 0.0
    late_frames: int = 0
    #: WebRTC receiver: times the playout ran dry (a stall heard as silence), and its playout delay at the end
    playout_underruns: int = 0
    playout_delay_ms: float | None = None
    #: WebRTC receiver's RTCP figures for the agent's stream (None on Twilio: TCP has no packet sequence)
    rtp_packets_received: int | None = None
    rtp_packets_lost: int | None = None
    rtp_jitter_ms: float | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["outcome"] = str(self.outcome) if self.outcome else None
        data["turns"] = [turn.to_json() for turn in self.turns]
        return data
