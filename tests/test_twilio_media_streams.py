"""The caller side of a Twilio Media Stream, driven with literal messages (doc 2, doc 3); no sockets."""

from __future__ import annotations

import base64
import json
import random

import pytest

from harness.audio.g711 import MULAW_SILENCE
from harness.twilio.media_streams import (
    AgentClear,
    AgentMark,
    AgentMedia,
    CallerStream,
    ProtocolError,
    StreamStateError,
    UnexpectedMessage,
    new_account_sid,
    new_call_sid,
    new_stream_sid,
)

ACCOUNT = "AC" + "a" * 32
CALL = "CA" + "c" * 32
STREAM = "MZ18ad3ab5a668481ce02b83e7395059f0"
OTHER_STREAM = "MZ" + "0" * 32


def make_stream(**kwargs: object) -> CallerStream:
    params = kwargs.pop("custom_parameters", {"agent": "support", "lang": "en"})
    return CallerStream(ACCOUNT, CALL, STREAM, params, **kwargs)  # type: ignore[arg-type]


def started() -> CallerStream:
    stream = make_stream()
    stream.connected()
    stream.start()
    return stream


def one(events: list) -> object:
    assert len(events) == 1, events
    return events[0]


# --- identifiers --------------------------------------------------------------------------------------------


def test_sids_are_prefix_and_32_lowercase_hex_and_follow_the_seed():
    for make, prefix in ((new_call_sid, "CA"), (new_account_sid, "AC"), (new_stream_sid, "MZ")):
        sid = make(random.Random(7))
        assert sid.startswith(prefix) and len(sid) == 34
        assert all(c in "0123456789abcdef" for c in sid[2:])
        assert make(random.Random(7)) == sid
        assert make(random.Random(8)) != sid


# --- what Twilio sends (doc 2) ------------------------------------------------------------------------------


def test_connected_is_literal_without_sequence_number():
    assert make_stream().connected() == '{"event":"connected","protocol":"Call","version":"1.0.0"}'


def test_start_message():
    stream = make_stream()
    stream.connected()
    assert json.loads(stream.start()) == {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": STREAM,
        "start": {
            "accountSid": ACCOUNT,
            "streamSid": STREAM,
            "callSid": CALL,
            "tracks": ["inbound"],
            "customParameters": {"agent": "support", "lang": "en"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    }


def test_start_with_other_tracks_and_no_parameters():
    stream = CallerStream(ACCOUNT, CALL, STREAM, tracks=["inbound", "outbound"])
    start = json.loads(stream.start())["start"]
    assert start["tracks"] == ["inbound", "outbound"]
    assert start["customParameters"] == {}


def test_media_message_literal():
    stream = started()
    assert stream.media(b"\xff\x7f\x00", 0) == (
        '{"event":"media","sequenceNumber":"2","streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0",'
        '"media":{"track":"inbound","chunk":"1","timestamp":"0","payload":"/38A"}}'
    )


def test_fast_media_equals_the_full_dict():
    stream = started()
    payload = bytes(range(256)) * 2
    text = stream.media(payload, 1234)
    assert json.loads(text) == {
        "event": "media",
        "sequenceNumber": "2",
        "streamSid": STREAM,
        "media": {
            "track": "inbound",
            "chunk": "1",
            "timestamp": "1234",
            "payload": base64.b64encode(payload).decode("ascii"),
        },
    }


def test_fast_media_is_safe_for_any_stream_sid_text():
    stream = CallerStream(ACCOUNT, CALL, 'MZ"odd\\sid', {})
    stream.start()
    assert json.loads(stream.media(b"\x00", 20))["streamSid"] == 'MZ"odd\\sid'


def test_media_b64_sends_a_cached_payload():
    silence = bytes([MULAW_SILENCE]) * 160
    silence_b64 = base64.b64encode(silence).decode("ascii")
    stream = started()
    assert stream.media_b64(silence_b64, 0) == started().media(silence, 0)
    assert base64.b64decode(json.loads(stream.media_b64(silence_b64, 20))["media"]["payload"]) == silence


def test_chunk_timestamp_and_sequence_numbers_across_messages():
    stream = make_stream()
    messages = [stream.connected(), stream.start()]
    frame = bytes([MULAW_SILENCE]) * 160
    messages += [stream.media(frame, 0), stream.media(frame, 20)]
    messages += [stream.dtmf("5"), stream.mark("greeting-end"), stream.media(frame, 40), stream.stop()]
    decoded = [json.loads(m) for m in messages]

    assert "sequenceNumber" not in decoded[0]
    assert "streamSid" not in decoded[0]
    assert [m["sequenceNumber"] for m in decoded[1:]] == ["1", "2", "3", "4", "5", "6", "7"]
    events = "connected start media media dtmf mark media stop".split()
    assert [m["event"] for m in decoded] == events
    media = [m["media"] for m in decoded if m["event"] == "media"]
    assert [(m["chunk"], m["timestamp"]) for m in media] == [("1", "0"), ("2", "20"), ("3", "40")]
    assert stream.sequence_number == 7 and stream.chunk == 3


def test_every_number_is_a_json_string_except_media_format():
    stream = make_stream()
    stream.connected()
    messages = [json.loads(stream.start()), json.loads(stream.media(b"\x00" * 160, 20))]
    messages += [json.loads(stream.dtmf("#")), json.loads(stream.mark("m")), json.loads(stream.stop())]

    def numbers(value: object, path: str = "") -> list[str]:
        if isinstance(value, dict):
            return [p for k, v in value.items() for p in numbers(v, f"{path}.{k}")]
        if isinstance(value, list):
            return [p for v in value for p in numbers(v, path)]
        return [path] if isinstance(value, int | float) else []

    found = [p for m in messages for p in numbers(m)]
    # doc 2: mediaFormat's sampleRate and channels are the only JSON numbers Twilio sends.
    assert found == [".start.mediaFormat.sampleRate", ".start.mediaFormat.channels"]


def test_dtmf_mark_and_stop_literals():
    stream = started()
    assert json.loads(stream.dtmf("9")) == {
        "event": "dtmf",
        "sequenceNumber": "2",
        "streamSid": STREAM,
        "dtmf": {"track": "inbound_track", "digit": "9"},
    }
    assert json.loads(stream.mark("utterance-1")) == {
        "event": "mark",
        "sequenceNumber": "3",
        "streamSid": STREAM,
        "mark": {"name": "utterance-1"},
    }
    assert json.loads(stream.stop()) == {
        "event": "stop",
        "sequenceNumber": "4",
        "streamSid": STREAM,
        "stop": {"accountSid": ACCOUNT, "callSid": CALL},
    }
    assert not stream.is_open


def test_start_may_come_without_connected_for_faults():
    stream = make_stream()
    assert json.loads(stream.start())["sequenceNumber"] == "1"
    with pytest.raises(StreamStateError):
        stream.connected()


@pytest.mark.parametrize("misuse", ["media", "dtmf", "mark", "stop"])
def test_messages_before_start_are_a_harness_bug(misuse: str):
    stream = make_stream()
    stream.connected()
    call = {
        "media": lambda: stream.media(b"\x00", 0),
        "dtmf": lambda: stream.dtmf("1"),
        "mark": lambda: stream.mark("m"),
        "stop": stream.stop,
    }[misuse]
    with pytest.raises(StreamStateError):
        call()


def test_nothing_after_stop_and_start_only_once():
    stream = started()
    stream.stop()
    with pytest.raises(StreamStateError):
        stream.media(b"\x00", 0)
    with pytest.raises(StreamStateError):
        stream.stop()
    with pytest.raises(StreamStateError):
        stream.start()


@pytest.mark.parametrize("digit", ["", "12", "x", "E"])
def test_dtmf_rejects_non_keypad_digits(digit: str):
    with pytest.raises(ValueError):
        started().dtmf(digit)


def test_custom_parameters_must_be_strings():
    with pytest.raises(TypeError):
        CallerStream(ACCOUNT, CALL, STREAM, {"n": 1})  # type: ignore[dict-item]


# --- what the server sends (doc 3) --------------------------------------------------------------------------


def test_receive_media():
    message = '{"event":"media","streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0","media":{"payload":"/38A"}}'
    assert started().receive(message) == [AgentMedia(b"\xff\x7f\x00")]


def test_receive_media_as_pipecat_sends_it():
    # Pipecat: 40 ms chunks (320 B), with spaces after separators.
    audio = bytes(range(160)) * 2
    message = json.dumps(
        {"event": "media", "streamSid": STREAM, "media": {"payload": base64.b64encode(audio).decode()}}
    )
    assert started().receive(message) == [AgentMedia(audio)]


def test_receive_large_media_payload():
    audio = random.Random(1).randbytes(8000 * 60)  # one minute in one message
    payload = base64.b64encode(audio).decode()
    message = json.dumps({"event": "media", "streamSid": STREAM, "media": {"payload": payload}})
    event = one(started().receive(message))
    assert isinstance(event, AgentMedia) and event.payload == audio


def test_receive_empty_media_payload():
    message = '{"event":"media","streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0","media":{"payload":""}}'
    assert started().receive(message) == [AgentMedia(b"")]


def test_receive_mark_and_clear():
    stream = started()
    mark = '{"event":"mark","streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0","mark":{"name":"end-of-turn-3"}}'
    clear = '{"event":"clear","streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0"}'
    assert stream.receive(mark) == [AgentMark("end-of-turn-3")]
    assert stream.receive(clear) == [AgentClear()]
    # clear with nothing queued is still just a clear (doc 5): judging it is the playout's business.
    assert stream.receive(clear) == [AgentClear()]


def test_receive_works_before_start():
    # The server may answer before we have sent start; parsing does not depend on the send state.
    stream = make_stream()
    clear = '{"event":"clear","streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0"}'
    assert stream.receive(clear) == [AgentClear()]


def test_receive_ignores_extra_fields():
    message = (
        '{"event":"mark","streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0","sequenceNumber":"9",'
        '"mark":{"name":"a","extra":1}}'
    )
    assert started().receive(message) == [AgentMark("a")]


S = STREAM
MALFORMED = {
    "invalid json": ('{"event":"media",', "invalid JSON"),
    "empty text": ("", "invalid JSON"),
    "json array": ('["media"]', "expected a JSON object, got list"),
    "json string": ('"clear"', "expected a JSON object, got str"),
    "no event": (f'{{"streamSid":"{S}"}}', "missing 'event'"),
    "event not a string": (f'{{"event":3,"streamSid":"{S}"}}', "'event' must be a string"),
    "media without streamSid": ('{"event":"media","media":{"payload":"AA=="}}', "media: missing 'streamSid'"),
    "clear without streamSid": ('{"event":"clear"}', "clear: missing 'streamSid'"),
    "media wrong streamSid": (
        f'{{"event":"media","streamSid":"{OTHER_STREAM}","media":{{"payload":"AA=="}}}}',
        f"media: wrong streamSid '{OTHER_STREAM}', this stream is '{S}'",
    ),
    "mark wrong streamSid": (
        f'{{"event":"mark","streamSid":"{OTHER_STREAM}","mark":{{"name":"x"}}}}',
        "mark: wrong streamSid",
    ),
    "clear wrong streamSid": (f'{{"event":"clear","streamSid":"{OTHER_STREAM}"}}', "clear: wrong streamSid"),
    "streamSid not a string": ('{"event":"clear","streamSid":7}', "clear: wrong streamSid 7"),
    "media without media": (f'{{"event":"media","streamSid":"{S}"}}', "media: 'media' is missing"),
    "media is a string": (
        f'{{"event":"media","streamSid":"{S}","media":"AA=="}}',
        "'media' is not an object",
    ),
    "media without payload": (
        f'{{"event":"media","streamSid":"{S}","media":{{}}}}',
        "media: 'media.payload' is missing",
    ),
    "payload not a string": (
        f'{{"event":"media","streamSid":"{S}","media":{{"payload":123}}}}',
        "'media.payload' is not a string (int)",
    ),
    "payload not base64": (
        f'{{"event":"media","streamSid":"{S}","media":{{"payload":"not*base64!"}}}}',
        "media: 'media.payload' is not valid base64",
    ),
    "payload bad padding": (
        f'{{"event":"media","streamSid":"{S}","media":{{"payload":"AAA"}}}}',
        "'media.payload' is not valid base64",
    ),
    "mark without mark": (f'{{"event":"mark","streamSid":"{S}"}}', "mark: 'mark' is missing"),
    "mark without name": (
        f'{{"event":"mark","streamSid":"{S}","mark":{{}}}}',
        "mark: 'mark.name' is missing",
    ),
    "mark name not a string": (
        f'{{"event":"mark","streamSid":"{S}","mark":{{"name":5}}}}',
        "mark: 'mark.name' is not a string (5)",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_server_message_is_a_protocol_error(case: str):
    raw, reason = MALFORMED[case]
    event = one(started().receive(raw))
    assert isinstance(event, ProtocolError), event
    assert reason in event.reason
    assert event.raw == raw


def test_binary_frame_is_a_protocol_error():
    raw = b'{"event":"clear","streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0"}'
    event = one(started().receive(raw))
    assert event == ProtocolError(
        "binary frame of 66 bytes; Twilio takes only JSON text frames", raw.decode()
    )
    garbage = one(started().receive(b"\xff\xfe\x00"))
    assert isinstance(garbage, ProtocolError) and "binary frame of 3 bytes" in garbage.reason


def test_something_that_is_not_a_message_is_a_protocol_error():
    event = one(started().receive(None))  # type: ignore[arg-type]
    assert event == ProtocolError("not a text frame: NoneType", "None")


def test_deeply_nested_json_is_a_protocol_error_not_a_crash():
    raw = "[" * 100_000 + "]" * 100_000
    event = one(started().receive(raw))
    assert isinstance(event, ProtocolError)


@pytest.mark.parametrize("event_name", ["start", "stop", "dtmf", "connected", "Media", "transcript"])
def test_unknown_event_is_an_unexpected_message(event_name: str):
    raw = json.dumps({"event": event_name, "streamSid": STREAM})
    assert started().receive(raw) == [UnexpectedMessage(event_name, raw)]


def test_unknown_event_with_wrong_stream_is_still_unexpected():
    raw = '{"event":"hello"}'
    assert started().receive(raw) == [UnexpectedMessage("hello", raw)]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ('{"event":"media","streamSid":"MZfast","media":{"payload":"AAEC"}}', AgentMedia(b"\x00\x01\x02")),
        ('{ "event" : "media", "streamSid": "MZfast",\n "media": {"payload": "AAEC"} }', AgentMedia(b"\x00\x01\x02")),
        # an extra field, another key order: the full JSON path, same meaning
        ('{"event":"media","streamSid":"MZfast","media":{"payload":"AAEC","chunk":"2"}}', AgentMedia(b"\x00\x01\x02")),
        ('{"streamSid":"MZfast","event":"media","media":{"payload":"AAEC"}}', AgentMedia(b"\x00\x01\x02")),
    ],
)
def test_media_fast_path_and_json_path_agree(message: str, expected: object) -> None:
    stream = CallerStream("AC1", "CA1", "MZfast")
    assert stream.receive(message) == [expected]
    # the caller's hot path either takes the message with the same payload or leaves it to receive()
    assert stream.agent_audio(message) in (None, expected.payload)  # type: ignore[attr-defined]
    if message.startswith('{"event":"media","streamSid":"MZfast","media":{"payload":"AAEC"}}'):
        assert stream.agent_audio(message) == b"\x00\x01\x02"


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ('{"event":"media","streamSid":"MZother","media":{"payload":"AAEC"}}', "wrong streamSid"),
        ('{"event":"media","streamSid":"MZfast","media":{"payload":"AAE"}}', "not valid base64"),
    ],
)
def test_media_fast_path_never_hides_an_error(message: str, reason: str) -> None:
    stream = CallerStream("AC1", "CA1", "MZfast")
    assert stream.agent_audio(message) is None
    (event,) = stream.receive(message)
    assert isinstance(event, ProtocolError) and reason in event.reason
