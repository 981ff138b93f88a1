"""The voice webhook (doc 1.1, 1.2) checked with Twilio's own validator, and TwiML replies (doc 1.3)."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest
from twilio.request_validator import RequestValidator

from harness.twilio.webhook import (
    ConnectStream,
    Hangup,
    Reject,
    TwimlError,
    build_voice_webhook,
    parse_twiml,
    twilio_signature,
)

TOKEN = "12345"
CALL = "CA" + "c" * 32
ACCOUNT = "AC" + "a" * 32


class MultiDict(dict):
    """The shape of a form with repeated names that RequestValidator reads (Flask's ``getall``)."""

    def getall(self, name: str) -> list[str]:
        value = self[name]
        return [value] if isinstance(value, str) else list(value)


# --- signature (doc 1.2) ------------------------------------------------------------------------------------


def test_signature_matches_twilio_documented_example():
    # The example of Twilio's "Webhooks security" page: token 12345.
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+12349013030",
        "Digits": "1234",
        "From": "+12349013030",
        "To": "+18005551212",
    }
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert twilio_signature(TOKEN, url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


@pytest.mark.parametrize(
    ("url", "params"),
    [
        ("https://agent.example.com/voice", {"CallSid": CALL, "From": "+15551230000", "To": "+15559870000"}),
        ("https://agent.example.com:8443/twilio/voice?tenant=a&x=1", {"CallSid": CALL, "Digits": "12#"}),
        ("http://127.0.0.1:8765/inbound_call", {"From": "client:alice", "To": "client:bot", "Caller": ""}),
        ("https://agent.example.com/voice", {}),
        ("https://agent.example.com/é?q=ü", {"Name": "Zoë Ångström", "Emoji": "☎"}),
    ],
)
def test_signature_is_accepted_by_twilio_request_validator(url: str, params: dict[str, str]):
    signature = twilio_signature(TOKEN, url, params)
    assert RequestValidator(TOKEN).validate(url, params, signature)
    assert not RequestValidator("wrong-token").validate(url, params, signature)


def test_repeated_names_sign_each_value_sorted():
    url = "https://agent.example.com/voice"
    params = {"Tag": ["zeta", "alpha", "mid"], "CallSid": "CA1"}
    signature = twilio_signature(TOKEN, url, params)
    assert RequestValidator(TOKEN).validate(url, MultiDict(params), signature)
    assert signature == twilio_signature(TOKEN, url, {"CallSid": "CA1", "Tag": ("mid", "zeta", "alpha")})
    assert signature != twilio_signature(TOKEN, url, {"CallSid": "CA1", "Tag": "alpha"})


def test_signature_depends_on_url_and_values():
    params = {"CallSid": CALL}
    base = twilio_signature(TOKEN, "https://a.example/voice", params)
    assert base != twilio_signature(TOKEN, "https://a.example/voice?x=1", params)
    assert base != twilio_signature(TOKEN, "https://a.example/voice", {"CallSid": CALL + "0"})


# --- the webhook request (doc 1.1) --------------------------------------------------------------------------


def make_request(url: str = "https://agent.example.com/voice", **kwargs: object):
    return build_voice_webhook(
        url,
        TOKEN,
        call_sid=CALL,
        account_sid=ACCOUNT,
        from_number="+15551230000",
        to_number="+15559870000",
        **kwargs,  # type: ignore[arg-type]
    )


def test_webhook_sends_the_fields_twilio_always_sends():
    request = make_request()
    fields = request.fields
    assert fields["CallSid"] == CALL
    assert fields["AccountSid"] == ACCOUNT
    assert fields["From"] == fields["Caller"] == "+15551230000"
    assert fields["To"] == fields["Called"] == "+15559870000"
    assert fields["CallStatus"] == "ringing"
    assert fields["ApiVersion"] == "2010-04-01"
    assert fields["Direction"] == "inbound"
    for geo in ("City", "State", "Zip", "Country"):
        for who in ("From", "To", "Caller", "Called"):
            assert fields[who + geo] == ""


def test_webhook_body_headers_and_signature():
    request = make_request("https://agent.example.com:8443/twilio/voice?tenant=a")
    assert request.method == "POST"
    assert request.url == "https://agent.example.com:8443/twilio/voice?tenant=a"
    assert dict(parse_qsl(request.body.decode("ascii"), keep_blank_values=True)) == request.fields
    assert b"From=%2B15551230000" in request.body
    sent = parse_qsl(request.body.decode("ascii"), keep_blank_values=True)
    assert [name for name, _ in sent] == list(request.fields)  # in the order of `fields`
    headers = request.headers
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert headers["User-Agent"] == "TwilioProxy/1.1"
    assert headers["I-Twilio-Idempotency-Token"]
    validator = RequestValidator(TOKEN)
    assert validator.validate(request.url, request.fields, headers["X-Twilio-Signature"])
    wrong = RequestValidator("not-the-token")
    assert not wrong.validate(request.url, request.fields, headers["X-Twilio-Signature"])


@pytest.mark.parametrize(
    "url",
    [
        "https://agent.example.com/voice",
        "https://agent.example.com:443/voice",
        "http://localhost:8000/inbound_call?agent=7&lang=en",
    ],
)
def test_webhook_signature_validates_for_several_urls(url: str):
    request = make_request(url, extra={"CallerCountry": "US", "StirVerstat": "TN-Validation-Passed-A"})
    assert RequestValidator(TOKEN).validate(url, request.fields, request.headers["X-Twilio-Signature"])


def test_webhook_signature_fails_if_a_field_is_tampered_with():
    request = make_request()
    tampered = dict(request.fields, From="+15550000000")
    assert not RequestValidator(TOKEN).validate(request.url, tampered, request.headers["X-Twilio-Signature"])


def test_extra_overrides_in_place_and_appends():
    request = make_request(extra={"FromCountry": "US", "CallToken": "tok"})
    names = list(request.fields)
    assert request.fields["FromCountry"] == "US"
    assert names.index("FromCountry") < names.index("Caller")  # overridden where it was
    assert names[-1] == "CallToken"


def test_idempotency_token_is_stable_per_call_and_url_and_settable():
    def token(**kwargs: object) -> str:
        return make_request(**kwargs).headers["I-Twilio-Idempotency-Token"]

    assert token() == token()
    assert token(url="https://other.example/voice") != token()
    assert token(idempotency_token="idem-1") == "idem-1"


def test_extra_values_must_be_strings():
    with pytest.raises(TypeError):
        make_request(extra={"FromZip": 94105})


# --- TwiML (doc 1.3) ----------------------------------------------------------------------------------------


def test_connect_stream_with_parameters():
    twiml = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        "<Response><Connect>"
        '<Stream url="wss://agent.example.com/ws" name="agent-leg">'
        '<Parameter name="tenant" value="acme"/><Parameter name="lang" value="en-US"/>'
        "</Stream></Connect></Response>"
    )
    assert parse_twiml(twiml) == ConnectStream(
        url="wss://agent.example.com/ws", parameters={"tenant": "acme", "lang": "en-US"}, name="agent-leg"
    )


def test_connect_stream_minimal_pipecat_style():
    twiml = """<Response>
  <Connect>
    <Stream url="ws://127.0.0.1:8765/ws"></Stream>
  </Connect>
  <Pause length="40"/>
</Response>"""
    assert parse_twiml(twiml) == ConnectStream(url="ws://127.0.0.1:8765/ws", parameters={}, name=None)


def test_stream_url_query_is_dropped_as_twilio_does():
    twiml = '<Response><Connect><Stream url="wss://h.example:9000/connect_call/42?token=abc#x"/></Connect></Response>'
    assert parse_twiml(twiml).url == "wss://h.example:9000/connect_call/42"


def test_say_play_and_pause_before_connect_are_skipped():
    twiml = (
        '<Response><Say>Please wait while we connect you.</Say><Pause length="1"/>'
        "<Play>https://cdn.example/beep.wav</Play>"
        '<Connect><Stream url="wss://a.example/s"/></Connect></Response>'
    )
    assert parse_twiml(twiml) == ConnectStream("wss://a.example/s", {}, None)


def test_reject_and_hangup():
    assert parse_twiml('<Response><Reject reason="busy"/></Response>') == Reject("busy")
    assert parse_twiml("<Response><Reject/></Response>") == Reject("rejected")
    assert parse_twiml("<Response><Say>Bye</Say><Hangup/></Response>") == Hangup()


def test_start_stream_before_connect_is_a_fork_and_connect_wins():
    twiml = (
        '<Response><Start><Stream url="wss://recorder.example/fork" track="both_tracks"/></Start>'
        '<Connect><Stream url="wss://agent.example/ws"/></Connect></Response>'
    )
    assert parse_twiml(twiml) == ConnectStream("wss://agent.example/ws", {}, None)


def test_parameter_without_value_is_empty():
    twiml = (
        '<Response><Connect><Stream url="wss://a.example/s"><Parameter name="k"/></Stream></Connect>'
        "</Response>"
    )
    assert parse_twiml(twiml).parameters == {"k": ""}


@pytest.mark.parametrize(
    ("twiml", "message"),
    [
        ("<Response><Connect>", "malformed TwiML"),
        ("not xml at all", "malformed TwiML"),
        ("", "malformed TwiML"),
        (
            '<Connect><Stream url="wss://a.example/s"/></Connect>',
            "must have a <Response> root element, got <Connect>",
        ),
        ("<Response></Response>", "no supported verb"),
        ("<Response><Say>Hello</Say></Response>", "no supported verb"),
        (
            '<Response><Start><Stream url="wss://a.example/s"/></Start><Pause length="60"/></Response>',
            "one-way (listen-only) stream; voicechaos needs a bidirectional <Connect><Stream>",
        ),
        ("<Response><Connect><Stream/></Connect></Response>", "<Stream> has no url"),
        ('<Response><Connect><Stream url=""/></Connect></Response>', "<Stream> has no url"),
        (
            '<Response><Connect><Stream url="https://a.example/s"/></Connect></Response>',
            "must be an absolute ws:// or wss:// URL",
        ),
        ('<Response><Connect><Stream url="/relative/ws"/></Connect></Response>', "ws:// or wss://"),
        (
            '<Response><Connect><Room participantIdentity="x">r</Room></Connect></Response>',
            "<Connect> holds <Room>",
        ),
        ("<Response><Connect/></Response>", "<Connect> holds nothing"),
        ("<Response><Dial>+15550001111</Dial></Response>", "unsupported verb <Dial>"),
        (
            '<Response><Gather input="speech"/><Connect><Stream url="wss://a.example/s"/></Connect></Response>',
            "unsupported verb <Gather>",
        ),
        (
            '<Response><Connect><Stream url="wss://a.example/s"><Parameter value="v"/></Stream></Connect>'
            "</Response>",
            "<Parameter> without a name",
        ),
        ('<Response><Reject reason="later"/></Response>', "the reason is 'rejected' or 'busy'"),
    ],
)
def test_twiml_errors_say_what_is_wrong(twiml: str, message: str):
    with pytest.raises(TwimlError) as info:
        parse_twiml(twiml)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_twiml_error_shows_an_excerpt_of_the_document():
    twiml = '<Response><Start><Stream url="wss://listen.example/fork"/></Start></Response>'
    with pytest.raises(TwimlError, match=r"wss://listen\.example/fork"):
        parse_twiml(twiml)
    with pytest.raises(TwimlError, match=r"<Response><Say>oops</Say"):
        parse_twiml("<Response><Say>oops</Say>")
    long_doc = "<Response>" + "<Say>blah</Say>" * 100 + "</Response>"
    with pytest.raises(TwimlError) as info:
        parse_twiml(long_doc)
    assert len(str(info.value)) < 300
