"""Twilio Media Streams server side, sans-I/O (reference_runtime.media_stream), fed literal messages."""

from __future__ import annotations

import base64
import json

from reference_runtime import twiml
from reference_runtime.media_stream import (
    Connected,
    DtmfReceived,
    MarkEchoed,
    MediaReceived,
    MediaStreamProtocol,
    ProtocolError,
    StreamStarted,
    StreamStopped,
)

CONNECTED = '{"event":"connected","protocol":"Call","version":"1.0.0"}'
START = json.dumps(
    {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0",
        "start": {
            "accountSid": "AC" + "0" * 32,
            "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0",
            "callSid": "CA" + "1" * 32,
            "tracks": ["inbound"],
            "customParameters": {"caller": "+15550001111"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    }
)


def media(payload: bytes, chunk: int = 1) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(chunk + 1),
            "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0",
            "media": {
                "track": "inbound",
                "chunk": str(chunk),
                "timestamp": str(20 * chunk),
                "payload": base64.b64encode(payload).decode(),
            },
        }
    )


def started() -> MediaStreamProtocol:
    protocol = MediaStreamProtocol()
    assert protocol.receive(CONNECTED) == Connected("Call", "1.0.0")
    assert isinstance(protocol.receive(START), StreamStarted)
    return protocol


def test_connected_then_start() -> None:
    protocol = MediaStreamProtocol()
    assert protocol.receive(CONNECTED) == Connected("Call", "1.0.0")
    start = protocol.receive(START)
    assert start == StreamStarted(
        stream_sid="MZ18ad3ab5a668481ce02b83e7395059f0",
        call_sid="CA" + "1" * 32,
        account_sid="AC" + "0" * 32,
        tracks=("inbound",),
        custom_parameters={"caller": "+15550001111"},
        encoding="audio/x-mulaw",
        sample_rate=8000,
        channels=1,
    )
    assert protocol.stream_sid == "MZ18ad3ab5a668481ce02b83e7395059f0"


def test_media_dtmf_mark_stop() -> None:
    protocol = started()
    assert protocol.receive(media(b"\xff" * 160, chunk=3)) == MediaReceived(b"\xff" * 160, 3, 60, "inbound")
    dtmf = (
        '{"event":"dtmf","sequenceNumber":"5","streamSid":"MZ1","dtmf":{"track":"inbound_track","digit":"7"}}'
    )
    assert protocol.receive(dtmf) == DtmfReceived("7")
    assert protocol.receive(
        '{"event":"mark","sequenceNumber":"6","streamSid":"MZ1","mark":{"name":"m1"}}'
    ) == (MarkEchoed("m1"))
    assert (
        protocol.receive('{"event":"stop","sequenceNumber":"7","streamSid":"MZ1","stop":{}}')
        == StreamStopped()
    )
    after = protocol.receive(media(b"\xff"))
    assert isinstance(after, ProtocolError) and "after stop" in after.reason


def test_errors_are_returned_not_raised() -> None:
    protocol = MediaStreamProtocol()
    assert isinstance(protocol.receive("not json"), ProtocolError)
    assert isinstance(protocol.receive("[1, 2]"), ProtocolError)
    early = protocol.receive(media(b"\x00"))
    assert isinstance(early, ProtocolError) and "before 'start'" in early.reason
    protocol = started()
    assert isinstance(protocol.receive(START), ProtocolError)
    bad = '{"event":"media","streamSid":"MZ1","media":{"payload":"***"}}'
    assert isinstance(protocol.receive(bad), ProtocolError)
    assert isinstance(protocol.receive('{"event":"bogus"}'), ProtocolError)


def test_start_without_connected_is_tolerated() -> None:
    assert isinstance(MediaStreamProtocol().receive(START), StreamStarted)


def test_outbound_messages_section_3() -> None:
    protocol = started()
    sid = "MZ18ad3ab5a668481ce02b83e7395059f0"
    assert json.loads(protocol.media(b"\x01\x02")) == {
        "event": "media",
        "streamSid": sid,
        "media": {"payload": base64.b64encode(b"\x01\x02").decode()},
    }
    assert json.loads(protocol.mark("m-1")) == {"event": "mark", "streamSid": sid, "mark": {"name": "m-1"}}
    assert json.loads(protocol.clear()) == {"event": "clear", "streamSid": sid}


def test_twiml() -> None:
    xml = twiml.connect_stream("ws://host:1/media", {"caller": '+1 "555" & <x>'})
    assert xml.endswith(
        '<Response><Connect><Stream url="ws://host:1/media"><Parameter name="caller" '
        'value="+1 &quot;555&quot; &amp; &lt;x&gt;"/></Stream></Connect></Response>'
    )
    assert twiml.reject().endswith('<Response><Reject reason="busy"/></Response>')
