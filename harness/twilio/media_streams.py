"""The caller's (Twilio's) side of one bidirectional Twilio Media Stream, as a sans-I/O core.

voicechaos plays Twilio towards the voice-AI server under test, so this module must say exactly what Twilio
says and read exactly what Twilio reads. It does no I/O: :class:`CallerStream` *builds* the JSON text of each
message Twilio sends (the adapter writes it to the websocket) and *parses* each message the server sends into
typed events (the adapter feeds it what it read). Tests drive it with literal messages, no sockets.

Facts implemented here come from ``/work/shared/protocols/twilio-media-streams.md``; comments cite its
sections ("doc 2" = messages Twilio sends, "doc 3" = messages the server sends).

Contract of :meth:`CallerStream.receive`: whatever the server sends, it returns events and never raises. A
message Twilio would not understand becomes :class:`ProtocolError` (saying what is wrong); a well-formed
message with an event Twilio does not take from a server becomes :class:`UnexpectedMessage`. What to do about
it (count it, hang up) is the adapter's decision, not the codec's.

Misuse by the harness itself (``media`` before ``start``, anything after ``stop``) is a bug in voicechaos, not
in the server under test, and raises :class:`StreamStateError`.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "AgentClear",
    "AgentMark",
    "AgentMedia",
    "CallerStream",
    "ProtocolError",
    "ServerEvent",
    "StreamStateError",
    "UnexpectedMessage",
    "new_account_sid",
    "new_call_sid",
    "new_stream_sid",
]

#: the ``mediaFormat`` of every Twilio Media Stream (doc 2, ``start``): raw μ-law, 8 kHz, mono.
#: These two numbers are JSON numbers in Twilio's messages; every other number is a JSON string.
MEDIA_FORMAT: dict[str, str | int] = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}

#: DTMF digits a phone keypad can send (doc 2, ``dtmf``)
DTMF_DIGITS = frozenset("0123456789*#ABCD")

_COMPACT = (",", ":")


# --- identifiers --------------------------------------------------------------------------------------------
# Twilio SIDs are a two-letter prefix and 32 lowercase hex digits (doc 1.1 for CA/AC, doc 2 for MZ). They take
# a random.Random so that a seeded run makes the same calls again; there is no module-level random state.


def _sid(prefix: str, rng: random.Random) -> str:
    return f"{prefix}{rng.getrandbits(128):032x}"


def new_call_sid(rng: random.Random) -> str:
    """``CA`` + 32 hex digits."""
    return _sid("CA", rng)


def new_account_sid(rng: random.Random) -> str:
    """``AC`` + 32 hex digits."""
    return _sid("AC", rng)


def new_stream_sid(rng: random.Random) -> str:
    """``MZ`` + 32 hex digits."""
    return _sid("MZ", rng)


# --- events parsed from the server (doc 3) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentMedia:
    """``media``: audio for the caller to hear, raw μ-law 8 kHz, any length (Pipecat sends 320 B)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class AgentMark:
    """``mark``: Twilio must echo this name back once all audio queued before it has played (doc 4)."""

    name: str


@dataclass(frozen=True, slots=True)
class AgentClear:
    """``clear``: drop all queued audio and echo pending marks now (doc 4). It may arrive when nothing is
    queued (Pipecat sends one at the start of every caller turn, doc 5): parsing does not judge that, the
    playout does."""


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """The server sent something Twilio would not accept: ``reason`` says what, ``raw`` is the message as
    received (a binary frame is decoded as UTF-8 with replacement characters)."""

    reason: str
    raw: str


@dataclass(frozen=True, slots=True)
class UnexpectedMessage:
    """Well-formed JSON with an ``event`` Twilio does not take from a server (not media, mark or clear)."""

    event: str
    raw: str


ServerEvent = AgentMedia | AgentMark | AgentClear | ProtocolError | UnexpectedMessage


class StreamStateError(RuntimeError):
    """The harness asked for a message out of order (a voicechaos bug, never the server's)."""


# --- the stream ---------------------------------------------------------------------------------------------


#: ``{"event": "media", "streamSid": "...", "media": {"payload": "..."}}`` (any JSON whitespace) and nothing else:
#: 50 of these arrive per second per call, so they get a fast path; anything else goes through ``json.loads``.
_JSON_WS = r"[ \t\n\r]*"  # JSON's whitespace (RFC 8259 §2), not regex \s
_MEDIA_MESSAGE = re.compile(
    _JSON_WS.join(
        [r"\{", r'"event"', ":", r'"media"', ",", r'"streamSid"', ":", r'"([^"\\]*)"', ",", r'"media"', ":",
         r"\{", r'"payload"', ":", r'"([A-Za-z0-9+/=]*)"', r"\}", r"\}", r"\Z"]
    )
)


class CallerStream:
    """One bidirectional Media Stream seen from Twilio's side.

    Send path: call :meth:`connected`, :meth:`start`, then any number of :meth:`media` / :meth:`media_b64` /
    :meth:`dtmf` / :meth:`mark`, then :meth:`stop`; each returns the JSON text of one websocket text frame.
    ``sequenceNumber`` is ``"1"`` on ``start`` and grows by one on every later message; ``chunk`` is ``"1"``
    on the first ``media`` and grows by one per ``media`` (doc 2). Skipping :meth:`connected` is allowed on
    purpose: a fault may want to start with ``start`` (Pipecat then swallows a media frame, doc 5).

    Receive path: :meth:`receive` turns one server message into events (doc 3); it never raises.
    """

    def __init__(
        self,
        account_sid: str,
        call_sid: str,
        stream_sid: str,
        custom_parameters: Mapping[str, str] | None = None,
        tracks: Sequence[str] = ("inbound",),
    ) -> None:
        params = dict(custom_parameters or {})
        for key, value in params.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError(f"custom parameter {key!r}: names and values are strings, got {value!r}")
        if isinstance(tracks, str):
            raise TypeError("tracks is a sequence of track names, e.g. ('inbound',)")
        self.account_sid = account_sid
        self.call_sid = call_sid
        self.stream_sid = stream_sid
        self.custom_parameters = params
        self.tracks = tuple(tracks)
        self._seq = 0  # last sequenceNumber sent; start is 1
        self._chunk = 0  # last media chunk sent; the first is 1
        self._connected_sent = False
        self._started = False
        self._stopped = False
        # Hot path (doc 2, ``media``): everything between the sequence number and the chunk number is fixed
        # for the life of the stream, so it is serialised once. json.dumps keeps the SIDs safe whatever they
        # contain.
        sid_json = json.dumps(stream_sid)
        self._media_middle = f'","streamSid":{sid_json},"media":{{"track":"inbound","chunk":"'

    # -- what Twilio sends (doc 2) --

    @property
    def sequence_number(self) -> int:
        """The ``sequenceNumber`` of the last message built (0 before ``start``)."""
        return self._seq

    @property
    def chunk(self) -> int:
        """The ``chunk`` of the last ``media`` message built (0 before the first)."""
        return self._chunk

    @property
    def is_open(self) -> bool:
        """``start`` sent and ``stop`` not yet."""
        return self._started and not self._stopped

    def connected(self) -> str:
        """The first message: no sequenceNumber, no streamSid (doc 2, ``connected``)."""
        if self._connected_sent or self._started:
            raise StreamStateError("'connected' is the first message of a stream and is sent once")
        self._connected_sent = True
        return '{"event":"connected","protocol":"Call","version":"1.0.0"}'

    def start(self) -> str:
        """``start`` with sequenceNumber "1" and the stream's metadata (doc 2, ``start``)."""
        if self._started:
            raise StreamStateError("'start' is sent once per stream")
        self._started = True
        self._seq = 1
        message = {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": self.stream_sid,
            "start": {
                "accountSid": self.account_sid,
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": list(self.tracks),
                "customParameters": self.custom_parameters,
                "mediaFormat": MEDIA_FORMAT,
            },
        }
        return json.dumps(message, separators=_COMPACT)

    def media(self, payload: bytes, timestamp_ms: int) -> str:
        """``media`` carrying raw μ-law ``payload``; ``timestamp_ms`` = milliseconds since the stream started
        (doc 2, ``media``). In practice Twilio sends 160 bytes (20 ms) per message."""
        return self.media_b64(base64.b64encode(payload).decode("ascii"), timestamp_ms)

    def media_b64(self, payload_b64: str, timestamp_ms: int) -> str:
        """:meth:`media` with the payload already base64-encoded (standard alphabet, padded, no newlines), so
        a caller can encode its silence frame once. This is the hot path (50 messages/s per call): it formats
        one string around a prefix built in ``__init__`` and yields JSON equal to the full dict's
        ``json.dumps``."""
        if not self._started or self._stopped:
            raise StreamStateError("'media' is sent between 'start' and 'stop'")
        self._seq += 1
        self._chunk += 1
        return (
            f'{{"event":"media","sequenceNumber":"{self._seq}{self._media_middle}{self._chunk}'
            f'","timestamp":"{timestamp_ms:d}","payload":"{payload_b64}"}}}}'
        )

    def dtmf(self, digit: str) -> str:
        """A key press on the caller's phone (doc 2, ``dtmf``; bidirectional streams only)."""
        if digit not in DTMF_DIGITS or len(digit) != 1:
            raise ValueError(f"DTMF digit must be one of 0-9 * # A-D, got {digit!r}")
        return self._numbered("dtmf", {"track": "inbound_track", "digit": digit})

    def mark(self, name: str) -> str:
        """Echo of a server ``mark`` once playout has reached it (doc 2 and doc 4)."""
        return self._numbered("mark", {"name": name})

    def stop(self) -> str:
        """The last message of the stream (doc 2, ``stop``)."""
        message = self._numbered("stop", {"accountSid": self.account_sid, "callSid": self.call_sid})
        self._stopped = True
        return message

    def _numbered(self, event: str, body: dict[str, str]) -> str:
        if not self._started or self._stopped:
            raise StreamStateError(f"{event!r} is sent between 'start' and 'stop'")
        self._seq += 1
        message = {
            "event": event,
            "sequenceNumber": str(self._seq),
            "streamSid": self.stream_sid,
            event: body,
        }
        return json.dumps(message, separators=_COMPACT)

    # -- what the server sends (doc 3) --

    def agent_audio(self, message: str) -> bytes | None:
        """The payload of a plain ``media`` message for this stream, or None when ``message`` is anything else (then
        :meth:`receive` says what it is). The hot path: 50 messages a second per call, no event object built."""
        fast = _MEDIA_MESSAGE.match(message)
        if fast is None or fast.group(1) != self.stream_sid:
            return None
        try:
            return base64.b64decode(fast.group(2), validate=True)
        except (binascii.Error, ValueError):
            return None

    def receive(self, message: str | bytes) -> list[ServerEvent]:
        """Parse one websocket message from the server. Never raises; see the module docstring."""
        return [self._parse(message)]

    def _parse(self, message: str | bytes) -> ServerEvent:
        if isinstance(message, str):
            # the common media message, exactly as most servers write it: skip the JSON parser (same result);
            # anything else, including a broken payload, is reported by the full path below
            payload = self.agent_audio(message)
            if payload is not None:
                return AgentMedia(payload)
        if isinstance(message, bytes | bytearray | memoryview):
            # doc 3: every server message is JSON text; Twilio does not take binary frames.
            raw = bytes(message).decode("utf-8", "replace")
            reason = f"binary frame of {len(message)} bytes; Twilio takes only JSON text frames"
            return ProtocolError(reason, raw)
        if not isinstance(message, str):  # not a websocket message at all; still an event, not a crash
            return ProtocolError(f"not a text frame: {type(message).__name__}", repr(message))
        raw = message
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            return ProtocolError(f"invalid JSON: {exc}", raw)
        if not isinstance(obj, dict):
            return ProtocolError(f"expected a JSON object, got {type(obj).__name__}", raw)
        event = obj.get("event")
        if event is None:
            return ProtocolError("missing 'event'", raw)
        if not isinstance(event, str):
            return ProtocolError(f"'event' must be a string, got {event!r}", raw)
        if event not in ("media", "mark", "clear"):
            return UnexpectedMessage(event, raw)

        # doc 3: each server message names the stream it is for.
        stream_sid = obj.get("streamSid")
        if stream_sid is None:
            return ProtocolError(f"{event}: missing 'streamSid'", raw)
        if stream_sid != self.stream_sid:
            return ProtocolError(
                f"{event}: wrong streamSid {stream_sid!r}, this stream is {self.stream_sid!r}", raw
            )

        if event == "clear":
            return AgentClear()

        body = obj.get(event)
        if not isinstance(body, dict):
            what = "missing" if body is None else f"not an object ({type(body).__name__})"
            return ProtocolError(f"{event}: {event!r} is {what}", raw)

        if event == "mark":
            name = body.get("name")
            if not isinstance(name, str):
                what = "missing" if name is None else f"not a string ({name!r})"
                return ProtocolError(f"mark: 'mark.name' is {what}", raw)
            return AgentMark(name)

        # event == "media": base64 of raw μ-law 8 kHz, any size (doc 3).
        payload = body.get("payload")
        if not isinstance(payload, str):
            what = "missing" if payload is None else f"not a string ({type(payload).__name__})"
            return ProtocolError(f"media: 'media.payload' is {what}", raw)
        try:
            audio = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            return ProtocolError(f"media: 'media.payload' is not valid base64 ({exc})", raw)
        return AgentMedia(audio)
