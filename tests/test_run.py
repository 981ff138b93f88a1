"""``voicechaos run`` end to end against an agent with known behaviour: run folder, summary, exit codes."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.eventlog import read_events
from harness.testing.known_agent import KnownAgent, serve_known_agent


@pytest.fixture
def known_agent_url():
    """A known agent served from its own thread and loop, so the CLI can run its own asyncio.run."""
    agent = KnownAgent(reply=["nice to hear from you."], reply_delay=0.3, gap=0.0, greeting="hello caller.")
    ready = threading.Event()
    stop: dict = {}
    holder: dict = {}

    def serve() -> None:
        async def run() -> None:
            stop["event"] = asyncio.Event()
            async with serve_known_agent(agent) as url:
                holder["url"] = url
                ready.set()
                await stop["event"].wait()

        loop = asyncio.new_event_loop()
        holder["loop"] = loop
        loop.run_until_complete(run())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    yield holder["url"]
    holder["loop"].call_soon_threadsafe(stop["event"].set)
    thread.join(10)


def _scenario(tmp_path: Path, url: str, **extra) -> Path:
    data = {
        "name": "known",
        "target": {"websocket": {"url": url}},
        "callers": {"count": 3, "arrival_rate": 10},
        "script": [{"wait_for_greeting": {"expect": "hello caller."}},
                   {"say": "good morning.", "expect": "nice to hear from you."}, "hang_up"],
        "limits": {"duration": 60, "end_of_turn_silence": 1.0},
        **extra,
    }
    path = tmp_path / "known.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_run_writes_a_complete_run_folder_and_passes(tmp_path: Path, known_agent_url: str, capsys) -> None:
    code = main(["run", str(_scenario(tmp_path, known_agent_url)), "--runs-dir", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert code == 0, out
    assert summary["verdict"] == "pass"
    assert summary["calls"]["outcomes"] == {"completed": 3}
    assert summary["response_latency_ms"]["count"] == 3
    assert 280 <= summary["response_latency_ms"]["p50"] <= 340
    events = read_events(run_dir / "events.jsonl")
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert kinds.count("call_ended") == 3 and kinds.count("turn") == 6
    assert (run_dir / "scenario.yaml").exists()
    assert "Per call" in out and "Verdict: PASS" in out


def test_a_missed_target_exits_1(tmp_path: Path, known_agent_url: str) -> None:
    # one call sends ~280 frames, so its p99 lateness is its third-latest frame: a single hiccup of the shared
    # machine would make the run invalid (exit 2). This test is about a missed target's exit code.
    path = _scenario(tmp_path, known_agent_url, targets={"response_latency_p95_ms": 100,
                                                         "harness_lateness_p99_ms": 50})
    assert main(["run", str(path), "--runs-dir", str(tmp_path / "runs"), "--calls", "1"]) == 1


def test_a_remote_target_is_refused_before_anything_is_sent(tmp_path: Path, capsys) -> None:
    path = _scenario(tmp_path, "ws://192.0.2.10:8080/media")
    assert main(["run", str(path), "--runs-dir", str(tmp_path / "runs")]) == 3
    assert "--allow-remote" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # refused before anything was created


def test_validate_reports_errors_and_exits_3(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nscript:\n  - say: {text: hi, think_time: -2}\n")
    assert main(["validate", str(bad)]) == 3
    assert "script[0].say.think_time" in capsys.readouterr().err
    good = Path(__file__).resolve().parent.parent / "scenarios" / "demo.yaml"
    assert main(["validate", str(good)]) == 0


def test_ctrl_c_keeps_everything_recorded_and_still_writes_the_summary(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    agent = KnownAgent(reply=["ok."], reply_delay=0.2, gap=0.0, greeting="hello caller.")
    connected = threading.Event()
    original = agent.handle

    async def handle(ws) -> None:  # type: ignore[no-untyped-def]
        connected.set()
        await original(ws)

    agent.handle = handle  # type: ignore[method-assign]
    holder: dict = {}
    ready = threading.Event()

    def serve() -> None:
        async def run() -> None:
            holder["stop"] = asyncio.Event()
            async with serve_known_agent(agent) as url:
                holder["url"] = url
                ready.set()
                await holder["stop"].wait()

        holder["loop"] = asyncio.new_event_loop()
        holder["loop"].run_until_complete(run())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    data = {"name": "long", "target": {"websocket": {"url": holder["url"]}},
            "callers": {"count": 2, "arrival_rate": 10},
            "script": ["wait_for_greeting", {"pause": 60}, "hang_up"], "limits": {"duration": 120}}
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(data))
    process = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(path), "--runs-dir",
                                str(tmp_path / "runs")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert connected.wait(30)
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        holder["loop"].call_soon_threadsafe(holder["stop"].set)
        thread.join(10)
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "interrupted by the user" in summary["interrupted"], out
    events = read_events(run_dir / "events.jsonl")
    started = [e for e in events if e["event"] == "call_started"]
    ended = [e for e in events if e["event"] == "call_ended"]
    assert started and len(ended) == len(started)
    assert all(e["outcome"] == "timed_out" and "interrupted" in e["reason"] for e in ended), ended
    assert events[-1]["event"] == "run_finished"
