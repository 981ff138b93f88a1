"""Twilio Media Streams, server side, as a sans-I/O core.

:class:`MediaStreamProtocol` turns the text frames Twilio sends into typed events and builds the frames the
server sends back. It never touches a socket: the call's adapter feeds it with :meth:`receive` and writes what
:meth:`media`, :meth:`mark` and :meth:`clear` return. Errors are returned as :class:`ProtocolError` events,
never swallowed, so the adapter decides whether to hang up.

The events are also the vocabulary of :meth:`reference_runtime.call.Call.run` whatever the transport: the WebRTC
link (reference_runtime/webrtc.py) produces the same ones from its peer connection.

Sections cited are those of ``shared/protocols/twilio-media-streams.md``:
section 2 (what Twilio sends), section 3 (what the server sends), section 4 (playout: marks and clear).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class Connected:
    """First message of a stream (section 2): no streamSid yet."""

    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class StreamStarted:
    """``start`` (section 2): once, carries the ids, the custom ``<Parameter>`` values and the media
    format.

    The call's other transports synthesize it when their caller connects (reference_runtime/webrtc.py), with
    ``transport`` saying which one carries the call: the audio plan chooses the line's format by it."""

    stream_sid: str
    call_sid: str
    account_sid: str
    tracks: tuple[str, ...]
    custom_parameters: dict[str, str]
    encoding: str
    sample_rate: int
    channels: int
    transport: Literal["twilio", "webrtc"] = "twilio"


@dataclass(frozen=True, slots=True)
class MediaReceived:
    """``media`` (section 2): raw caller audio (base64 decoded), in the format ``start`` announced."""

    payload: bytes
    chunk: int
    timestamp_ms: int
    track: str


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    digit: str


@dataclass(frozen=True, slots=True)
class MarkEchoed:
    """Twilio played every byte queued before the mark of this name (section 4)."""

    name: str


@dataclass(frozen=True, slots=True)
class StreamStopped:
    """``stop`` (section 2): the caller hung up or the call left the ``<Connect>``."""


@dataclass(frozen=True, slots=True)
class ProtocolError:
    reason: str
    raw: str = field(default="", repr=False)


Event = Connected | StreamStarted | MediaReceived | DtmfReceived | MarkEchoed | StreamStopped | ProtocolError


def _as_int(value: Any, default: int = 0) -> int:
    # Section 2: "all numbers are JSON strings"; accept real numbers too.
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


class MediaStreamProtocol:
    """One stream's state: expects ``connected`` then ``start``, then ``media``/``dtmf``/``mark``/``stop``.

    ``start`` without a preceding ``connected`` is tolerated (some gateways skip it); anything else before
    ``start`` is a :class:`ProtocolError`, as is anything after ``stop``.
    """

    def __init__(self) -> None:
        self.connected = False
        self.started: StreamStarted | None = None
        self.stopped = False

    @property
    def stream_sid(self) -> str:
        if self.started is None:
            raise RuntimeError("no stream yet: 'start' has not been received")
        return self.started.stream_sid

    # -- inbound --------------------------------------------------------------------------------------------

    def receive(self, text: str) -> Event:
        try:
            message = json.loads(text)
        except json.JSONDecodeError as error:
            return ProtocolError(f"not JSON: {error.msg}", text)
        if not isinstance(message, dict):
            return ProtocolError("message is not a JSON object", text)
        event = message.get("event")
        if self.stopped:
            return ProtocolError(f"{event!r} after stop", text)
        if event == "connected":
            if self.connected or self.started is not None:
                return ProtocolError("duplicate 'connected'", text)
            self.connected = True
            return Connected(str(message.get("protocol", "")), str(message.get("version", "")))
        if event == "start":
            return self._start(message, text)
        if self.started is None:
            return ProtocolError(f"{event!r} before 'start'", text)
        if event == "media":
            return self._media(message, text)
        if event == "dtmf":
            digit = (message.get("dtmf") or {}).get("digit")
            if not isinstance(digit, str) or not digit:
                return ProtocolError("dtmf without a digit", text)
            return DtmfReceived(digit)
        if event == "mark":
            name = (message.get("mark") or {}).get("name")
            if not isinstance(name, str):
                return ProtocolError("mark without a name", text)
            return MarkEchoed(name)
        if event == "stop":
            self.stopped = True
            return StreamStopped()
        return ProtocolError(f"unknown event {event!r}", text)

    def _start(self, message: dict[str, Any], text: str) -> Event:
        if self.started is not None:
            return ProtocolError("duplicate 'start'", text)
        start = message.get("start")
        if not isinstance(start, dict):
            return ProtocolError("'start' without a start object", text)
        stream_sid = message.get("streamSid") or start.get("streamSid")
        if not isinstance(stream_sid, str) or not stream_sid:
            return ProtocolError("'start' without a streamSid", text)
        media_format = start.get("mediaFormat") or {}
        params = start.get("customParameters") or {}
        self.started = StreamStarted(
            stream_sid=stream_sid,
            call_sid=str(start.get("callSid", "")),
            account_sid=str(start.get("accountSid", "")),
            tracks=tuple(str(t) for t in start.get("tracks") or ("inbound",)),
            custom_parameters={str(k): str(v) for k, v in params.items()} if isinstance(params, dict) else {},
            encoding=str(media_format.get("encoding", "audio/x-mulaw")),
            sample_rate=_as_int(media_format.get("sampleRate"), 8000),
            channels=_as_int(media_format.get("channels"), 1),
        )
        return self.started

    def _media(self, message: dict[str, Any], text: str) -> Event:
        media = message.get("media")
        if not isinstance(media, dict) or not isinstance(media.get("payload"), str):
            return ProtocolError("media without a payload", text)
        try:
            payload = base64.b64decode(media["payload"], validate=True)
        except (binascii.Error, ValueError):
            return ProtocolError("media payload is not base64", text)
        return MediaReceived(
            payload=payload,
            chunk=_as_int(media.get("chunk")),
            timestamp_ms=_as_int(media.get("timestamp")),
            track=str(media.get("track", "inbound")),
        )

    # -- outbound (section 3) --------------------------------------------------------------------------------

    def media(self, audio: bytes) -> str:
        payload = base64.b64encode(audio).decode("ascii")
        return json.dumps({"event": "media", "streamSid": self.stream_sid, "media": {"payload": payload}})

    def mark(self, name: str) -> str:
        return json.dumps({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    def clear(self) -> str:
        return json.dumps({"event": "clear", "streamSid": self.stream_sid})
