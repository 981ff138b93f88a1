"""What the load engine tells Locust: one request per connect, per turn and per call (never per audio frame), and
a failure carries the time it took to fail, so that Locust's percentiles are never shortened by zeros."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from harness.load.node import CallFailed, _fire_requests


class Requests:
    def __init__(self) -> None:
        self.fired: list[dict[str, Any]] = []
        self.environment = SimpleNamespace(events=SimpleNamespace(request=SimpleNamespace(fire=self.fire)))

    def fire(self, **kwargs: Any) -> None:
        self.fired.append(kwargs)

    def send(self, name: str, fields: dict[str, Any]) -> list[tuple[str, str, float, str | None]]:
        self.fired.clear()
        _fire_requests(self.environment, name, fields, dead_air_ms=1500)  # type: ignore[arg-type]
        return [(f["request_type"], f["name"], round(f["response_time"], 3),
                 str(f["exception"]) if f["exception"] is not None else None) for f in self.fired]


@pytest.fixture
def locust() -> Requests:
    return Requests()


def test_a_heard_reply_is_its_latency_and_its_longest_silence(locust: Requests) -> None:
    turn = {"kind": "reply", "status": "ok", "response_latency_ms": 612.5, "listen_from": 10.0,
            "first_audio_at": 10.6125, "closed_at": 13.0, "max_gap_ms": 240.0, "heard": ["a", "b"]}
    assert locust.send("turn", turn) == [("TURN", "reply latency", 612.5, None),
                                         ("AUDIO", "max silence gap", 240.0, None)]


def test_dead_air_is_a_failed_silence(locust: Requests) -> None:
    turn = {"kind": "reply", "status": "ok", "response_latency_ms": 500.0, "listen_from": 1.0,
            "first_audio_at": 1.5, "closed_at": 9.0, "max_gap_ms": 3100.0}
    assert locust.send("turn", turn)[1] == ("AUDIO", "max silence gap", 3100.0, "dead air over 1500 ms")


def test_a_turn_with_no_reply_is_a_failure_as_long_as_the_caller_waited(locust: Requests) -> None:
    turn = {"kind": "reply", "status": "no_response", "response_latency_ms": None, "listen_from": 20.0,
            "first_audio_at": None, "closed_at": 28.0, "max_gap_ms": 0.0}
    # no audio: no silence request either (there was no agent turn to measure gaps in)
    assert locust.send("turn", turn) == [("TURN", "reply latency", 8000.0, "reply turn no_response")]


def test_a_call_that_never_connected_fails_its_connect_after_the_time_it_took(locust: Requests) -> None:
    call = {"outcome": "not_answered", "reason": "HTTP 503 from the webhook", "connect_ms": None,
            "duration_s": 0.25, "turns": []}
    assert locust.send("call_ended", call) == [
        ("WS", "connect", 250.0, "not_answered: HTTP 503 from the webhook"),
        ("CALL", "call", 250.0, "not_answered: HTTP 503 from the webhook")]


def test_a_completed_call_is_one_request_and_a_connect_its_own(locust: Requests) -> None:
    assert locust.send("call_connected", {"connect_ms": 12.5}) == [("WS", "connect", 12.5, None)]
    call = {"outcome": "completed", "connect_ms": 12.5, "duration_s": 14.2, "turns": [{}, {}, {}]}
    assert locust.send("call_ended", call) == [("CALL", "call", 14200.0, None)]
    assert isinstance(CallFailed("x"), Exception)


def test_frames_and_other_events_fire_nothing(locust: Requests) -> None:
    for name in ("call_started", "media", "mark", "frame_sent"):
        assert locust.send(name, {"call_id": 1}) == []


def test_a_worker_refuses_a_loopback_target_when_its_master_is_on_another_machine() -> None:
    from harness.caller import Dial
    from harness.load.node import check_worker_dials
    from harness.safety import UnsafeTargetError

    local = [Dial(webhook_url="http://127.0.0.1:8000/voice")]
    check_worker_dials(local, master_host="127.0.0.1", allow_remote=False)  # same machine: fine
    check_worker_dials(local, master_host="localhost", allow_remote=False)
    with pytest.raises(UnsafeTargetError, match=r"master's own loopback.*10\.0\.0\.5"):
        check_worker_dials(local, master_host="10.0.0.5", allow_remote=True)
    remote = [Dial(websocket_url="wss://agent.example.internal/media")]
    with pytest.raises(UnsafeTargetError, match="not on loopback"):
        check_worker_dials(remote, master_host="127.0.0.1", allow_remote=False)
    check_worker_dials(remote, master_host="10.0.0.5", allow_remote=True)
