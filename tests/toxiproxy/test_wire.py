"""The API's messages, sans-I/O: Go's JSON decoding rules, the validation order, addresses, rendering."""

from __future__ import annotations

import pytest

from harness.chaos.toxiproxy.toxics import Latency, default_toxics
from harness.chaos.toxiproxy.wire import (
    ApiError,
    ProxyInput,
    Stream,
    decode_body,
    error_body,
    parse_proxy_create,
    parse_proxy_update,
    parse_toxic_create,
    parse_toxic_update,
    resolve_listen,
    same_listen,
    toxic_json,
)

REGISTRY = default_toxics()


def error_of(call: object) -> tuple[int, str]:
    with pytest.raises(ApiError) as caught:
        call()  # type: ignore[operator]
    return caught.value.status, caught.value.message


def test_first_json_value_wins_and_empty_is_eof() -> None:
    assert decode_body(b' {"a": 1} trailing') == {"a": 1}
    assert error_of(lambda: decode_body(b"")) == (400, "bad request body: EOF")
    assert error_of(lambda: decode_body(b'{"a":')) == (400, "bad request body: unexpected EOF")
    assert error_of(lambda: decode_body(b"NaN"))[0] == 400


def test_proxy_fields_match_case_insensitively_and_null_is_absent() -> None:
    parsed = parse_proxy_create(b'{"Name": "p", "UPSTREAM": "127.0.0.1:1", "enabled": null, "extra": [1]}')
    assert parsed == ProxyInput("p", "", "127.0.0.1:1", True)
    current = ProxyInput("p", "127.0.0.1:5", "127.0.0.1:1", True)
    assert parse_proxy_update(b'{"enabled": false}', current) == ProxyInput("p", "127.0.0.1:5", "127.0.0.1:1", False)
    assert error_of(lambda: parse_proxy_update(b'{"enabled": "no"}', current))[0] == 400


def test_toxic_create_checks_in_gos_order() -> None:
    def create(body: bytes, taken: bool = False) -> object:
        return parse_toxic_create(body, REGISTRY, lambda name: taken)

    assert error_of(lambda: create(b'{"type": "nope", "stream": "sideways"}'))[1].startswith("stream was invalid")
    assert error_of(lambda: create(b'{"type": "nope"}')) == (400, "invalid toxic type")
    assert error_of(lambda: create(b'{"type": "latency"}', taken=True)) == (409, "toxic already exists")
    assert error_of(lambda: create(b'{"type": "latency", "attributes": {"latency": 1.5}}'))[1].startswith(
        "bad request body: json: cannot unmarshal number 1.5"
    )
    spec = create(b'{"type": "latency", "stream": "UpStream", "attributes": {"LATENCY": 5}}')
    assert spec.name == "latency_UpStream" and spec.direction is Stream.UPSTREAM  # type: ignore[attr-defined]
    assert spec.toxic == Latency(latency=5)  # type: ignore[attr-defined]


def test_toxic_update_merges_attributes_and_keeps_identity() -> None:
    spec = parse_toxic_create(
        b'{"type": "latency", "attributes": {"latency": 5, "jitter": 1}}', REGISTRY, lambda name: False
    )
    updated = parse_toxic_update(b'{"attributes": {"jitter": 3}, "type": "slicer", "name": "x"}', spec)
    assert toxic_json(updated) == {
        "attributes": {"latency": 5, "jitter": 3},
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1,
    }


def test_listen_resolution_and_refusal() -> None:
    assert resolve_listen("localhost:3310", allow_remote=False) == ("127.0.0.1", 3310)
    assert resolve_listen("", allow_remote=False) == ("127.0.0.1", 0)
    assert resolve_listen("[::1]:0", allow_remote=False) == ("::1", 0)
    assert error_of(lambda: resolve_listen("0.0.0.0:80", allow_remote=False))[0] == 500
    assert resolve_listen("0.0.0.0:80", allow_remote=True) == ("0.0.0.0", 80)
    assert error_of(lambda: resolve_listen("nonsense", allow_remote=False)) == (
        500,
        "listen tcp: address nonsense: missing port in address",
    )


def test_same_listen_never_matches_port_zero() -> None:
    assert same_listen("127.0.0.1:3310", "localhost:3310")
    assert not same_listen("127.0.0.1:3310", "127.0.0.1:0")


def test_error_bodies_are_json_and_a_newline() -> None:
    assert error_body(ApiError("proxy not found", 404)) == b'{"error":"proxy not found","status":404}\n'
