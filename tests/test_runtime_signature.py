"""Twilio webhook signatures (reference_runtime.signature), checked against Twilio's own RequestValidator."""

from __future__ import annotations

from multidict import MultiDict
from twilio.request_validator import RequestValidator

from reference_runtime.signature import compute_signature, is_valid, url_variants

TOKEN = "12345"
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}


def test_matches_twilio_documented_example() -> None:
    # The example from Twilio's "Webhooks security" documentation and its validator's tests.
    assert compute_signature(TOKEN, URL, PARAMS.items()) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    assert compute_signature(TOKEN, URL, PARAMS.items()) == RequestValidator(TOKEN).compute_signature(
        URL, PARAMS
    )


def test_repeated_keys_are_sorted_by_value_like_twilio() -> None:
    pairs = [("To", "+1800"), ("Media", "b"), ("From", "+1234"), ("Media", "a"), ("Media", "b")]
    expected = RequestValidator(TOKEN).compute_signature(URL, MultiDict(pairs))
    assert compute_signature(TOKEN, URL, pairs) == expected
    assert compute_signature(TOKEN, URL, reversed(pairs)) == expected


def test_accepts_url_with_and_without_port() -> None:
    validator = RequestValidator(TOKEN)
    with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2"
    signed_with_port = validator.compute_signature(with_port, PARAMS)
    signed_without = validator.compute_signature(URL, PARAMS)
    assert is_valid(TOKEN, URL, PARAMS.items(), signed_with_port)
    assert is_valid(TOKEN, with_port, PARAMS.items(), signed_without)
    local = "http://127.0.0.1:8080/voice"
    assert is_valid(
        TOKEN, local, PARAMS.items(), validator.compute_signature("http://127.0.0.1/voice", PARAMS)
    )
    assert is_valid(TOKEN, local, PARAMS.items(), validator.compute_signature(local, PARAMS))


def test_rejects_tampering_missing_and_wrong_token() -> None:
    good = RequestValidator(TOKEN).compute_signature(URL, PARAMS)
    assert not is_valid(TOKEN, URL, {**PARAMS, "From": "+10000000000"}.items(), good)
    assert not is_valid(TOKEN, URL + "&x=1", PARAMS.items(), good)
    assert not is_valid("other", URL, PARAMS.items(), good)
    assert not is_valid(TOKEN, URL, PARAMS.items(), None)
    assert not is_valid(TOKEN, URL, PARAMS.items(), "")


def test_url_variants() -> None:
    assert url_variants("http://h:8080/voice") == ["http://h:8080/voice", "http://h/voice"]
    assert url_variants("https://h/voice") == ["https://h/voice", "https://h:443/voice"]
