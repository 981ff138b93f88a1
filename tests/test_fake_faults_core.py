"""The fault machinery without sockets: fault configs and their validation, the gate's draws and route
filters, the per-chunk fates of a disruption, the garbage, and each provider's literal error bodies."""

from __future__ import annotations

import math
import random
import re
from typing import Any

import pytest

from fake_providers.chaos import ChaosSettings
from fake_providers.deepgram import ROUTES as DEEPGRAM_ROUTES
from fake_providers.disruption import Cut, Disruption, Garble, Stall, Trigger, garble
from fake_providers.faults import (
    BUILTIN_FAULTS,
    FAULT_KINDS,
    ErrorFault,
    FaultError,
    RateLimitFault,
    SlowFirstByteFault,
    StallFault,
    TruncateFault,
    parse_fault,
)
from fake_providers.gate import Admission, DuplicateFault, ProviderGate
from fake_providers.refusals import (
    DeepgramErrors,
    ElevenLabsErrors,
    OpenAIErrors,
    PlainErrors,
    RateLimited,
    go_duration,
)
from fake_providers.routes import RequestInfo, RouteTable, route_matches
from harness.clock import ManualClock

LISTEN = RequestInfo("/v1/listen", "listen", "nova-3")
SPEAK_REST = RequestInfo("/v1/speak", "speak.rest")


def deepgram_gate(seed: int = 1, **kwargs: Any) -> ProviderGate:
    return ProviderGate(
        "deepgram",
        rng=random.Random(seed),
        clock=ManualClock(),
        errors=DeepgramErrors(),
        routes=DEEPGRAM_ROUTES,
        **kwargs,
    )


def admit(gate: ProviderGate, info: RequestInfo) -> Admission:
    admission = Admission(info, Disruption(gate.rng))
    admission.refusal = gate.admit(admission)
    return admission


# -- fault configs ----------------------------------------------------------------------------------------


def test_registry_holds_every_builtin_kind_once() -> None:
    assert set(FAULT_KINDS) == {"rate_limit", "error", "slow_first_byte", "stall", "truncate", "garbage"}
    assert list(FAULT_KINDS.values()) == list(BUILTIN_FAULTS)
    with pytest.raises(TypeError):
        FAULT_KINDS["x"] = RateLimitFault  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"kind": "rate_limit", "probability": 1.5}, "probability: Input should be less than or equal to 1"),
        ({"kind": "nope"}, "kind: unknown fault kind 'nope' (known: rate_limit, error, slow_first_byte"),
        ({"probability": 0.5}, "kind: missing"),
        ({"kind": "error", "status": 501}, "status: Input should be 500, 502, 503 or 504"),
        ({"kind": "slow_first_byte"}, "delay_ms: Field required"),
        (
            {"kind": "slow_first_byte", "delay_ms": 500, "max_delay_ms": 100},
            "max_delay_ms: 100 is below delay_ms (500)",
        ),
        ({"kind": "stall", "after_chunks": 1, "after_ms": 10}, "after_ms: set after_chunks or after_ms, not both"),
        ({"kind": "truncate", "close_code": 1006}, "close_code: 1006 cannot be sent"),
        ({"kind": "garbage", "chunks": 0}, "chunks: Input should be greater than or equal to 1"),
        ({"kind": "stall", "stall_ms": 10, "typo": 1}, "typo: Extra inputs are not permitted"),
        ([1, 2], "(top level): a fault is a JSON object"),
    ],
)
def test_bad_faults_are_refused_naming_the_field(body: Any, message: str) -> None:
    with pytest.raises(FaultError, match="^" + re.escape(message)):
        parse_fault(body)


def test_fault_fields_are_its_json() -> None:
    fault = parse_fault({"kind": "stall", "route": "speak", "after_ms": 250, "stall_ms": None})
    assert isinstance(fault, StallFault)
    assert fault.route == ("speak",) and fault.probability == 1.0
    assert fault.describe() == {
        "kind": "stall",
        "probability": 1.0,
        "route": ["speak"],
        "after_chunks": None,
        "after_ms": 250.0,
        "stall_ms": None,
    }
    assert StallFault().trigger() == Trigger(after_chunks=1)  # neither trigger set: after the first chunk


def test_route_filters_match_names_and_dotted_families() -> None:
    assert route_matches(None, "anything")
    assert route_matches(("speak",), "speak.ws") and route_matches(("speak",), "speak.rest")
    assert not route_matches(("spe",), "speak.ws")
    assert route_matches(("listen", "speak.rest"), "speak.rest") and not route_matches(("listen",), "speak.ws")
    crm = RouteTable(("workflow",), open_families=("tools",))
    assert crm.check(["tools.book_appointment", "tools", "workflow"]) is None
    assert crm.check(["calendar"]) == "unknown route 'calendar' (known: tools, workflow)"


def test_config_sections_check_route_filters_before_anything_starts() -> None:
    class Section(ChaosSettings):
        route_table = DEEPGRAM_ROUTES

    assert Section.model_validate({"faults": [{"kind": "error", "route": "speak"}]}).faults[0].route == ("speak",)
    with pytest.raises(ValueError, match=r"faults\.0\.route: unknown route 'chat'"):
        Section.model_validate({"faults": [{"kind": "error", "route": "chat"}]})
    with pytest.raises(ValueError, match=r"limits\.route: unknown route"):
        Section.model_validate({"limits": {"concurrent_streams": 1, "route": "tts"}})


# -- the gate's decisions -------------------------------------------------------------------------------


def test_admission_faults_refuse_only_their_routes_and_are_counted() -> None:
    gate = deepgram_gate()
    fault_id = gate.add_fault(ErrorFault(status=503, route=("listen",)))
    assert fault_id == "error-1"
    refused = admit(gate, LISTEN)
    assert refused.refusal is not None and refused.refusal.status == 503 and refused.applied == ["error-1"]
    assert refused.refusal.body["err_code"] == "SERVICE_UNAVAILABLE"
    served = admit(gate, SPEAK_REST)
    assert served.refusal is None and served.applied == []
    assert gate.counters.faults_applied == {"error-1": 1}
    assert gate.counters.by_name == {"listen": 1, "speak.rest": 1}


def test_probability_is_drawn_per_request_from_the_seeded_generator() -> None:
    def pattern(seed: int) -> list[bool]:
        gate = deepgram_gate(seed)
        gate.add_fault(RateLimitFault(probability=0.3))
        return [admit(gate, LISTEN).refusal is not None for _ in range(400)]

    first = pattern(7)
    assert first == pattern(7), "the same seed refuses the same requests"
    assert first != pattern(8)
    assert 0.2 < sum(first) / len(first) < 0.4
    never = deepgram_gate()
    never.add_fault(RateLimitFault(probability=0.0))
    assert all(admit(never, LISTEN).refusal is None for _ in range(50))


def test_stream_faults_build_the_requests_disruption() -> None:
    gate = deepgram_gate()
    gate.add_fault(SlowFirstByteFault(delay_ms=300))
    gate.add_fault(SlowFirstByteFault(delay_ms=100, max_delay_ms=200, at="handshake"))
    gate.add_fault(StallFault(after_chunks=3, stall_ms=500))
    gate.add_fault(TruncateFault(after_ms=2000, close_code=1011))
    gate.add_fault(parse_fault({"kind": "garbage", "after_chunks": 2, "chunks": 1, "route": "speak"}))
    d = admit(gate, LISTEN).disruption
    assert d.first_byte_delay_s == pytest.approx(0.3)
    assert 0.1 <= d.handshake_delay_s <= 0.2
    assert d.stalls == [Stall(Trigger(after_chunks=3), 0.5)]
    assert d.cuts == [Cut(Trigger(after_s=2.0), 1011)]
    assert d.garbles == [], "the garbage fault is for speak only"
    assert admit(gate, SPEAK_REST).disruption.garbles == [Garble(2, 1)]


def test_an_admission_fault_wins_over_stream_faults_added_before_it() -> None:
    gate = deepgram_gate()
    gate.add_fault(StallFault(stall_ms=100))
    gate.add_fault(RateLimitFault())
    admission = admit(gate, LISTEN)
    assert admission.refusal is not None and admission.refusal.status == 429
    assert admission.applied == ["rate_limit-2"], "a refused request is not also stalled"


def test_fault_ids_unknown_routes_and_removal() -> None:
    gate = deepgram_gate()
    assert gate.add_fault(ErrorFault(), "my-fault") == "my-fault"
    with pytest.raises(DuplicateFault, match="already in force"):
        gate.add_fault(ErrorFault(), "my-fault")
    with pytest.raises(FaultError, match=r"^id: "):
        gate.add_fault(ErrorFault(), "bad id!")
    with pytest.raises(FaultError, match=r"^route: unknown route 'chat'"):
        gate.add_fault(ErrorFault(route=("chat",)))
    second = gate.add_fault(ErrorFault())
    assert list(gate.faults) == ["my-fault", second]
    assert gate.remove_fault("my-fault") and not gate.remove_fault("my-fault")
    assert gate.clear_faults() == 1 and gate.faults == {}


# -- one stream's fates ------------------------------------------------------------------------------------


def test_shaper_first_byte_stall_garble_and_cut_by_chunks() -> None:
    disruption = Disruption(
        random.Random(0),
        first_byte_delay_s=0.4,
        stalls=[Stall(Trigger(after_chunks=2), 1.5)],
        cuts=[Cut(Trigger(after_chunks=4))],
        garbles=[Garble(1, 1)],
    )
    shaper = disruption.start(10.0)
    fates = [shaper.next(10.0 + i) for i in range(4)]
    assert [f.hold_s for f in fates] == [0.4, 0.0, 1.5, 0.0]
    assert [f.garble for f in fates] == [False, True, False, False]
    assert all(f.cut is None for f in fates)
    assert shaper.pending_cut(20.0) == Cut(Trigger(after_chunks=4)), "after 4 chunks the stream ends"
    assert shaper.next(20.0).cut is not None


def test_shaper_time_triggers_and_forever_stalls() -> None:
    disruption = Disruption(
        random.Random(0),
        stalls=[Stall(Trigger(after_s=1.0), math.inf)],
        cuts=[Cut(Trigger(after_s=5.0), 1011)],
    )
    shaper = disruption.start(100.0)
    assert shaper.next(100.5).hold_s == 0
    assert shaper.next(101.2).hold_s == math.inf, "the first chunk due after 1 s stalls"
    assert shaper.next(102.0).hold_s == 0, "a stall happens once"
    assert shaper.cut_deadline() == (105.0, Cut(Trigger(after_s=5.0), 1011))
    assert shaper.pending_cut(104.9) is None and shaper.pending_cut(105.0) is not None
    assert not Disruption(random.Random(0), handshake_delay_s=1).shapes_stream


def test_garbage_is_not_parseable_by_the_protocol() -> None:
    import json

    rng = random.Random(3)
    text = garble('{"type": "Results"}', None, rng)
    assert isinstance(text, str)
    with pytest.raises(ValueError):
        json.loads(text)
    audio = bytes(range(256)) * 4
    noise = garble(audio, "application/octet-stream", rng)
    assert isinstance(noise, bytes) and len(noise) == len(audio) and noise != audio
    sse = garble(b'data: {"id": 1}\n\n', "text/event-stream; charset=utf-8", rng)
    assert isinstance(sse, bytes) and sse.startswith(b"data: ") and sse.endswith(b"\n\n")
    with pytest.raises(ValueError):
        json.loads(sse.removeprefix(b"data: "))
    body = garble(b'{"ok": true}', "application/json", rng)
    with pytest.raises(ValueError):
        json.loads(body)


# -- each provider's error bodies (shared/protocols/providers.md) ------------------------------------------


def test_deepgram_429_is_its_documented_body_without_retry_after() -> None:
    refusal = DeepgramErrors().rate_limited(RateLimited("requests", 2.0), LISTEN, random.Random(0))
    assert refusal.status == 429 and refusal.kind == "rate_limit"
    assert refusal.body == {
        "err_code": "TOO_MANY_REQUESTS",
        "err_msg": "Too many requests. Please try again later",
        "request_id": refusal.headers["dg-request-id"],
    }
    assert "retry-after" not in refusal.headers
    forced = DeepgramErrors().rate_limited(RateLimited("requests", 1.2, True), LISTEN, random.Random(0))
    assert forced.headers["retry-after"] == "2", "whole seconds, rounded up"


def test_elevenlabs_429_variants() -> None:
    info = RequestInfo("/v1/text-to-speech/{voice_id}/stream", "http.stream")
    concurrent = ElevenLabsErrors().rate_limited(RateLimited("concurrency", 1.0, limit=2), info, random.Random(0))
    assert concurrent.status == 429
    assert concurrent.body["detail"]["status"] == "too_many_concurrent_requests"
    assert "maximum of 2 concurrent requests" in concurrent.body["detail"]["message"]
    busy = ElevenLabsErrors().rate_limited(RateLimited("busy", 1.0), info, random.Random(0))
    assert busy.body["detail"]["status"] == "system_busy"
    error = ElevenLabsErrors().server_error(503, info, random.Random(0))
    assert error.status == 503 and error.body["detail"]["status"] == "service_unavailable"


def test_openai_429_headers_and_message() -> None:
    info = RequestInfo("/v1/chat/completions", "chat", "gpt-4o")
    refusal = OpenAIErrors().rate_limited(RateLimited("requests", 0.174), info, random.Random(0))
    error = refusal.body["error"]
    assert error["type"] == "requests" and error["param"] is None and error["code"] == "rate_limit_exceeded"
    assert error["message"].startswith("Rate limit reached for gpt-4o in organization")
    assert "Please try again in 174ms." in error["message"]
    h = refusal.headers
    assert h["x-ratelimit-remaining-requests"] == "0" and h["x-ratelimit-reset-requests"] == "174ms"
    assert h["x-ratelimit-limit-requests"] == "500" and h["x-ratelimit-limit-tokens"] == "200000"
    assert h["retry-after"] == "1" and h["retry-after-ms"] == "174" and h["x-request-id"].startswith("req_")
    tokens = OpenAIErrors().rate_limited(RateLimited("tokens", 90, limit=60), info, random.Random(0))
    assert tokens.body["error"]["type"] == "tokens" and tokens.headers["x-ratelimit-reset-tokens"] == "1m30s"
    assert tokens.headers["x-ratelimit-limit-requests"] == "60"
    quiet = OpenAIErrors().rate_limited(RateLimited("requests", 1, False), info, random.Random(0))
    assert "retry-after" not in quiet.headers and "retry-after-ms" not in quiet.headers
    server = OpenAIErrors().server_error(500, info, random.Random(0))
    assert server.body["error"]["type"] == "server_error" and server.status == 500


def test_go_durations_and_plain_errors() -> None:
    assert [go_duration(s) for s in (0.02, 0.9994, 1.5, 6, 360, 61.25)] == [
        "20ms",
        "999ms",
        "1.5s",
        "6s",
        "6m0s",
        "1m1.25s",
    ]
    info = RequestInfo("/tools", "tools.book_appointment")
    plain = PlainErrors().server_error(502, info, random.Random(0))
    assert plain.body == {"error": {"code": "bad_gateway", "message": "tools.book_appointment failed: bad gateway"}}
    limited = PlainErrors().rate_limited(RateLimited("requests", 0.3), info, random.Random(0))
    assert limited.status == 429 and limited.headers["retry-after"] == "1"
