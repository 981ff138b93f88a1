from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.eventlog import EventLog, read_events
from harness.lateness import LatenessHistogram
from harness.safety import UnsafeTargetError, check_target


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/voice", "ws://localhost:9/media", "ws://[::1]:80/x",
                                 "http://127.1.2.3/"])
def test_loopback_targets_are_allowed(url: str) -> None:
    check_target(url, allow_remote=False)


@pytest.mark.parametrize("url", ["http://10.0.0.5/voice", "wss://example.com/media", "http://192.168.1.1/"])
def test_other_targets_are_refused_unless_allowed(url: str) -> None:
    with pytest.raises(UnsafeTargetError, match="--allow-remote"):
        check_target(url, allow_remote=False)
    check_target(url, allow_remote=True)


def test_a_url_without_a_host_is_refused() -> None:
    with pytest.raises(UnsafeTargetError, match="expected an http"):
        check_target("/voice", allow_remote=True)


def test_event_log_lines_are_on_disk_as_soon_as_emitted(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.jsonl")
    log.emit("call_started", {"call_id": 1})
    # read with a separate handle before closing: the line is already flushed
    assert json.loads((tmp_path / "events.jsonl").read_text().splitlines()[0])["call_id"] == 1
    log.emit("call_ended", {"call_id": 1})
    log.close()
    with (tmp_path / "events.jsonl").open("a") as handle:
        handle.write('{"event": "torn')  # a crash mid-write
    assert [e["event"] for e in read_events(tmp_path / "events.jsonl")] == ["call_started", "call_ended"]


def test_lateness_histogram_percentiles_and_merge() -> None:
    a = LatenessHistogram()
    for ms in range(1, 101):  # 1..100 ms
        a.record(ms / 1000)
    assert a.percentile(50) == pytest.approx(0.0501, abs=1e-4)
    assert a.percentile(99) == pytest.approx(0.0991, abs=1e-4)
    b = LatenessHistogram()
    b.record(2.0)  # beyond the bins: counted in overflow, max exact
    a.merge(b)
    assert a.total == 101 and a.overflow == 1 and a.maximum == 2.0
    assert a.summary_ms()["max_ms"] == 2000.0
