"""Each way a call can end is named, with its reason, and nothing recorded before it is lost."""

from __future__ import annotations

import itertools
import socket

import pytest
from aiohttp import web

from fake_providers.serve import serve_app
from harness.audio.g711 import MULAW_SILENCE
from harness.caller import Dial
from harness.records import Outcome
from harness.scenario import ExpectHangup, HangUp, Limits, Say, WaitForGreeting
from harness.testing.calls import place_call
from harness.twilio.webhook import twilio_signature


async def _run(dial: Dial, script: list, limits: Limits | None = None):
    call = await place_call(dial, script, limits or Limits(reply_timeout=1.0, connect_timeout=3.0), seed=3)
    return call.record, call.events


@pytest.fixture
async def platform():
    """A tiny platform whose behaviour each test chooses: webhook TwiML and what the media socket does."""
    state: dict = {"twiml": "", "media": None, "forms": [], "signatures": []}

    async def voice(request: web.Request) -> web.Response:
        form = await request.post()
        state["forms"].append(dict(form))
        state["signatures"].append(request.headers.get("X-Twilio-Signature"))
        return web.Response(text=state["twiml"].replace("HOST", request.host), content_type="text/xml")

    async def media(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await state["media"](ws)
        return ws

    app = web.Application()
    app.router.add_post("/voice", voice)
    app.router.add_get("/media", media)
    async with serve_app(app) as url:
        state["host"] = url.removeprefix("http://")
        yield state


async def test_webhook_reject_is_a_rejected_call_and_the_request_is_signed(platform) -> None:
    platform["twiml"] = '<?xml version="1.0"?><Response><Reject reason="busy"/></Response>'
    url = f"http://{platform['host']}/voice"
    record, events = await _run(Dial(webhook_url=url, auth_token="tok"), [WaitForGreeting(), HangUp()])
    assert record.outcome is Outcome.REJECTED
    assert "busy" in record.reason
    (form,) = platform["forms"]
    assert form["CallSid"] == record.call_sid and form["CallStatus"] == "ringing"
    assert platform["signatures"][0] == twilio_signature("tok", url, form)
    assert [name for name, _ in events] == ["call_started", "call_ended"]


async def test_capacity_close_1013_before_any_audio_is_rejected(platform) -> None:
    platform["twiml"] = '<Response><Connect><Stream url="ws://HOST/media"/></Connect></Response>'

    async def refuse(ws: web.WebSocketResponse) -> None:
        await ws.receive()  # connected
        await ws.close(code=1013, message=b"at capacity")

    platform["media"] = refuse
    record, _ = await _run(Dial(webhook_url=f"http://{platform['host']}/voice"), [WaitForGreeting(), HangUp()])
    assert record.outcome is Outcome.REJECTED, record.reason
    assert "1013" in record.reason and "at capacity" in record.reason


async def test_server_closing_mid_script_is_a_dropped_call(platform) -> None:
    platform["twiml"] = '<Response><Connect><Stream url="ws://HOST/media"/></Connect></Response>'
    from harness.testing.known_agent import phrase_mulaw

    async def greet_then_crash_when_spoken_to(ws: web.WebSocketResponse) -> None:
        import base64
        import json
        await ws.receive()
        start = json.loads((await ws.receive()).data)
        payload = base64.b64encode(phrase_mulaw("hello.")).decode()
        media = {"event": "media", "streamSid": start["streamSid"], "media": {"payload": payload}}
        await ws.send_str(json.dumps(media))
        async for message in ws:  # the worker dies as soon as the caller speaks
            data = json.loads(message.data)
            if data["event"] == "media" and base64.b64decode(data["media"]["payload"]) != silence:
                break
        await ws.close(code=1011, message=b"worker crashed")

    silence = bytes([MULAW_SILENCE]) * 160
    platform["media"] = greet_then_crash_when_spoken_to
    record, events = await _run(Dial(webhook_url=f"http://{platform['host']}/voice"),
                                [WaitForGreeting(expect=["hello."]), Say(text="are you there?", think_time=0.0),
                                 Say(text="hello?"), HangUp()], Limits(reply_timeout=5.0))
    assert record.outcome is Outcome.DROPPED, record.reason
    assert "1011" in record.reason and "worker crashed" in record.reason
    assert record.turns[0].heard == ["hello."]  # what was measured before the drop is kept
    assert any(name == "turn" for name, _ in events)


async def test_an_agent_that_never_answers_times_the_call_out(platform) -> None:
    platform["twiml"] = '<Response><Connect><Stream url="ws://HOST/media"/></Connect></Response>'

    async def silent(ws: web.WebSocketResponse) -> None:
        async for _ in ws:
            pass

    platform["media"] = silent
    record, _ = await _run(Dial(webhook_url=f"http://{platform['host']}/voice"), [WaitForGreeting(timeout=0.5),
                                                                              HangUp()])
    assert record.outcome is Outcome.TIMED_OUT
    assert "no agent audio within 0.5 s" in record.reason
    assert record.turns[0].status == "no_response"


async def test_expect_hangup_completes_when_the_agent_hangs_up(platform) -> None:
    platform["twiml"] = '<Response><Connect><Stream url="ws://HOST/media"/></Connect></Response>'

    async def hang_up(ws: web.WebSocketResponse) -> None:
        await ws.receive()
        await ws.receive()
        await ws.close()

    platform["media"] = hang_up
    record, _ = await _run(Dial(webhook_url=f"http://{platform['host']}/voice"), [ExpectHangup(timeout=3)])
    assert record.outcome is Outcome.COMPLETED
    assert record.reason == "the agent hung up"


async def test_nothing_listening_is_failed_to_connect() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    record, _ = await _run(Dial(webhook_url=f"http://127.0.0.1:{port}/voice"), [WaitForGreeting(), HangUp()])
    assert record.outcome is Outcome.FAILED_TO_CONNECT
    assert f"127.0.0.1:{port}" in record.reason
    record, _ = await _run(Dial(websocket_url=f"ws://127.0.0.1:{port}/media"), [WaitForGreeting(), HangUp()])
    assert record.outcome is Outcome.FAILED_TO_CONNECT
    assert "cannot connect" in record.reason


async def test_unusable_twiml_is_failed_to_connect_with_the_reason(platform) -> None:
    platform["twiml"] = "<Response><Start><Stream url='wss://x/y'/></Start></Response>"
    record, _ = await _run(Dial(webhook_url=f"http://{platform['host']}/voice"), [WaitForGreeting(), HangUp()])
    assert record.outcome is Outcome.FAILED_TO_CONNECT
    assert "TwiML" in record.reason


async def test_protocol_errors_are_counted_not_fatal(platform) -> None:
    platform["twiml"] = '<Response><Connect><Stream url="ws://HOST/media"/></Connect></Response>'
    from harness.testing.known_agent import phrase_mulaw

    async def sloppy(ws: web.WebSocketResponse) -> None:
        import base64
        import json
        await ws.receive()
        start = json.loads((await ws.receive()).data)
        await ws.send_str("{not json")
        await ws.send_str(json.dumps({"event": "media", "streamSid": "MZwrong", "media": {"payload": "AAAA"}}))
        await ws.send_str(json.dumps({"event": "party", "streamSid": start["streamSid"]}))
        payload = base64.b64encode(phrase_mulaw("still here.")).decode()
        media = {"event": "media", "streamSid": start["streamSid"], "media": {"payload": payload}}
        await ws.send_str(json.dumps(media))
        async for _ in ws:
            pass

    platform["media"] = sloppy
    record, _ = await _run(Dial(webhook_url=f"http://{platform['host']}/voice"),
                           [WaitForGreeting(expect=["still here."]), HangUp()])
    assert record.outcome is Outcome.COMPLETED, record.reason
    assert record.protocol_errors == 3 and record.unexpected_messages == 1
    assert record.turns[0].heard == ["still here."]
    assert any("streamSid" in text for text in record.protocol_error_examples)


async def test_dtmf_and_wav_utterances_reach_the_platform_as_twilio_sends_them(platform, tmp_path) -> None:
    import base64
    import json

    from harness.audio import formats
    from harness.audio.phrase_codec import decode_phrases, encode_phrase
    from harness.audio.wav import write_wav
    from harness.scenario import Dtmf

    wav = tmp_path / "hello.wav"
    write_wav(wav, encode_phrase("a recorded hello.", 16000), 16000)  # 16 kHz file: the caller resamples
    platform["twiml"] = '<Response><Connect><Stream url="ws://HOST/media"/></Connect></Response>'
    received: list[dict] = []

    async def record(ws: web.WebSocketResponse) -> None:
        async for message in ws:
            received.append(json.loads(message.data))

    platform["media"] = record
    record_, _ = await _run(Dial(webhook_url=f"http://{platform['host']}/voice"),
                            [Dtmf(digits="12#", interval=0.05), Say(wav=str(wav), think_time=0.0), HangUp()],
                            Limits(reply_timeout=0.5))
    # the agent never answers: the call times out after the utterance, but everything was sent as Twilio would
    assert record_.outcome is Outcome.TIMED_OUT
    events = [m["event"] for m in received]
    assert events[:2] == ["connected", "start"] and events[-1] == "stop"
    assert [m["dtmf"]["digit"] for m in received if m["event"] == "dtmf"] == ["1", "2", "#"]
    assert record_.dtmf_sent == "12#"
    numbers = [int(m["sequenceNumber"]) for m in received[1:]]
    assert numbers == list(range(1, len(numbers) + 1))
    media = [m["media"] for m in received if m["event"] == "media"]
    assert [int(m["chunk"]) for m in media] == list(range(1, len(media) + 1))
    assert all(int(b["timestamp"]) - int(a["timestamp"]) == 20 for a, b in itertools.pairwise(media))
    audio = b"".join(base64.b64decode(m["payload"]) for m in media)
    heard = decode_phrases(formats.from_bytes(audio, formats.TWILIO_MULAW_8K), 8000)
    assert [getattr(e, "text", None) for e in heard if getattr(e, "text", None)] == ["a recorded hello."]
