"""Safeguard 5 (incident 5: audio buffers pile up until the worker dies), broken and fixed.

- the decision (:class:`MemoryWatch`, sans-I/O): alert at 80 %, drain at 85 %, once; broken never does either;
- the monitor with a manual clock and a fake probe: CPU percent, the metrics, the OOM emulation;
- the runtime: a fixed runtime crossing 85 % drains (``/readyz`` 503, new calls refused as when full, the call in
  progress finishes normally) and asks to exit 75; a broken one never drains; ``python -m reference_runtime
  serve`` over its budget exits 75 after its ``drained`` line;
- per-call buffers, measured (weak references, cross-checked with the garbage collector, not booked): N calls in
  sequence leave N calls' audio in memory when broken (growing linearly), nothing when fixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import sys
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import yaml
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from fake_providers.deepgram import DeepgramConfig, create_deepgram_app
from fake_providers.elevenlabs import ElevenLabsConfig, create_elevenlabs_app
from fake_providers.openai_chat import OpenAIConfig, create_openai_app
from harness.audio.formats import TWILIO_MULAW_8K, to_bytes
from harness.clock import ManualClock
from reference_runtime.app import RUNTIME, create_app
from reference_runtime.call import Call
from reference_runtime.config import ConfigError, MemoryConfig, parse_config
from reference_runtime.memory import (
    EXIT_DRAINED,
    CallMemoryLedger,
    DrainNeeded,
    MemoryAlert,
    MemoryAlertCleared,
    MemoryMonitor,
    MemoryWatch,
    OverBudget,
)
from reference_runtime.metrics import RuntimeMetrics
from reference_runtime.recording import Recording
from reference_runtime.tools import StaticToolRunner
from reference_runtime.workflow import LoggingWorkflowClient
from tests.test_runtime_app import PROVIDERS, REPO
from tests.test_runtime_call import FAST, SCRIPT, STEP_TIMEOUT_S, Stack, TwilioSide, metric, runtime_config, serving

MIB = 2**20


class FakeProbe:
    """The monitor's view of the process, set by the test."""

    def __init__(self, rss_mib: float = 10.0) -> None:
        self.rss = rss_mib * MIB
        self.cpu = 0.0

    def rss_bytes(self) -> float:
        return self.rss

    def cpu_seconds(self) -> float:
        return self.cpu


class DroppingSink:
    """Keeps no recording (as the spool does once the recording is on disk): whatever outlives the call is held by
    something else. Remembers the sizes handed over."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    async def store(self, recording: Recording) -> None:
        self.sizes.append(recording.nbytes)


def tone_recording(n: int = 8000) -> Recording:
    tone = (0.3 * np.sin(np.arange(n) * 0.1)).astype(np.float32)
    audio = to_bytes(tone, TWILIO_MULAW_8K)
    return Recording("CA1", "MZ1", TWILIO_MULAW_8K, audio, audio[: n // 2], 0.0, 1.0, "completed")


# --- the decision --------------------------------------------------------------------------------------------------


def test_the_watch_alerts_at_80_drains_at_85_once_each() -> None:
    watch = MemoryWatch(100.0, alert_fraction=0.8, drain_fraction=0.85)
    assert watch.observe(79.9) == []
    assert watch.observe(80.0) == [MemoryAlert(80.0, 0.8)]
    assert watch.observe(82.0) == []  # still the same alert
    assert watch.observe(85.0) == [DrainNeeded(85.0, 0.85)]
    assert watch.observe(99.0) == []  # one drain per process
    assert watch.observe(76.0) == []  # within the hysteresis: the alert stands
    assert watch.observe(74.0) == [MemoryAlertCleared(74.0, 0.74)]
    assert watch.observe(81.0) == [MemoryAlert(81.0, 0.81)]
    assert watch.alerts == 2 and watch.draining


def test_broken_watches_nothing_and_the_oom_emulation_fires_at_the_budget_in_either_mode() -> None:
    broken = MemoryWatch(100.0, enforce=False)
    assert [broken.observe(rss) for rss in (50.0, 90.0, 120.0)] == [[], [], []]
    assert broken.fraction == 1.2 and broken.alerts == 0 and not broken.draining
    assert MemoryWatch(100.0, enforce=False, oom_kill=True).observe(100.0) == [OverBudget(100.0, 1.0)]
    assert MemoryWatch(100.0, oom_kill=True).observe(100.0) == [
        MemoryAlert(100.0, 1.0), DrainNeeded(100.0, 1.0), OverBudget(100.0, 1.0)]


def test_memory_config_defaults_and_validation() -> None:
    memory = parse_config({"providers": PROVIDERS}).memory
    assert (memory.budget_mb, memory.alert_fraction, memory.drain_fraction, memory.oom_kill) == (1024, 0.8, 0.85, False)
    for bad, path in (
        ({"alert_fraction": 0.9, "drain_fraction": 0.85}, "memory"),
        ({"budget_mb": 0}, "memory.budget_mb"),
        ({"drain_fraction": 1.5}, "memory.drain_fraction"),
        ({"budget": 100}, "memory.budget"),
    ):
        with pytest.raises(ConfigError) as caught:
            parse_config({"providers": PROVIDERS, "memory": bad})
        assert any(line.strip().startswith(f"{path}:") for line in str(caught.value).splitlines()), caught.value


# --- the monitor (manual clock, fake probe) ------------------------------------------------------------------------


def test_the_monitor_exports_rss_budget_and_cpu_and_acts_on_the_watch() -> None:
    clock, probe = ManualClock(), FakeProbe(10)
    metrics = RuntimeMetrics(active_calls=lambda: 0.0, capacity=lambda: 1.0, ready=lambda: 1.0)
    drained: list[dict[str, Any]] = []
    killed: list[bool] = []
    monitor = MemoryMonitor(MemoryConfig(budget_mb=100, oom_kill=True), "fixed", clock=clock, probe=probe,
                            observer=metrics, drain=drained.append, kill=lambda: killed.append(True))
    assert monitor.check() == [] and monitor.cpu_percent is None  # CPU needs two samples
    clock.advance(2.0)
    probe.cpu += 0.5
    probe.rss = 81 * MIB
    assert monitor.check() == [MemoryAlert(81 * MIB, 0.81)]
    assert monitor.cpu_percent == pytest.approx(25.0)  # 0.5 s of CPU in 2 s
    text = metrics.exposition().decode()
    assert metric(text, "runtime_memory_budget_bytes") == 100 * MIB
    assert metric(text, "runtime_memory_budget_fraction") == pytest.approx(0.81)
    assert metric(text, "runtime_memory_alerts_total") == 1.0 and metric(text, "runtime_memory_alert") == 1.0
    assert metric(text, "runtime_process_cpu_percent") == pytest.approx(25.0)
    assert metric(text, "process_cpu_seconds_total") > 0  # prometheus_client's process collector, this registry
    probe.rss = 86 * MIB
    clock.advance(1.0)
    monitor.check()
    assert drained == [{"rss_bytes": 86 * MIB, "budget_bytes": 100 * MIB, "fraction": 0.86}] and not killed
    probe.rss = 100 * MIB
    clock.advance(1.0)
    monitor.check()
    assert killed == [True]  # memory.oom_kill: the container's limit


# --- per-call buffers ----------------------------------------------------------------------------------------------


def test_the_ledger_measures_what_outlives_its_call_rather_than_booking_it() -> None:
    fixed = CallMemoryLedger(keep=False)
    held = tone_recording()
    fixed.call_ended(held)  # something (here: this test) still holds the recording...
    assert (fixed.retained_calls, fixed.retained_bytes) == (1, held.nbytes)  # ...so it counts
    del held
    gc.collect()
    assert (fixed.retained_calls, fixed.retained_bytes) == (0, 0)
    broken = CallMemoryLedger(keep=True)
    for k in range(1, 4):
        broken.call_ended(tone_recording())
        gc.collect()
        # the tracks (12 kB of μ-law) and their decoded float32 PCM (4 bytes a sample): 5 x the tracks
        assert (broken.retained_calls, broken.retained_bytes) == (k, k * 5 * 12_000)


@asynccontextmanager
async def memory_stack(mode: str, probe: FakeProbe, **overrides: Any) -> AsyncIterator[Stack]:
    """The runtime against the fakes, its memory monitor reading ``probe``. The monitor samples once at start and
    then every hour: the test calls ``check()`` itself."""
    deepgram = create_deepgram_app(DeepgramConfig.model_validate({"stt": FAST, "tts": FAST}))
    elevenlabs = create_elevenlabs_app(ElevenLabsConfig.model_validate({"latency": FAST}))
    openai = create_openai_app(OpenAIConfig.model_validate({"script": SCRIPT, "latency": FAST}))
    async with serving(deepgram) as stt, serving(elevenlabs) as tts, serving(openai) as llm:
        config = runtime_config(stt, tts, llm, safeguards={"memory": mode},
                                memory={"budget_mb": 100, "check_interval_s": 3600}, **overrides)
        sink, workflow, tools = DroppingSink(), LoggingWorkflowClient(), StaticToolRunner()
        app = create_app(config, recording_sink=sink, workflow_client=workflow, tool_runner=tools,
                         process_probe=probe)
        async with serving(app) as url, aiohttp.ClientSession() as http:
            yield Stack(url, app, http, sink, workflow, tools)  # type: ignore[arg-type]


async def new_call_is_refused(s: Stack, n: int) -> tuple[bool, int | None, str | None]:
    """The webhook's answer (refused?) and how a stream that connects anyway is closed."""
    form = {"CallSid": f"CA{n:032x}", "From": "+15550001111", "To": "+15559990000"}
    async with s.http.post(f"{s.url}/voice", data=form) as response:
        refused = ET.fromstring(await response.text()).find("./Reject") is not None
    if not refused:
        return False, None, None
    async with connect(s.url.replace("http", "ws") + "/media") as ws:
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(STEP_TIMEOUT_S):
                await ws.recv()
        return True, ws.close_code, ws.close_reason


async def readyz(s: Stack) -> tuple[int, dict[str, Any]]:
    async with s.http.get(f"{s.url}/readyz") as response:
        return response.status, await response.json()


@pytest.mark.e2e
async def test_fixed_alerts_at_80_then_drains_at_85_and_the_call_in_progress_finishes() -> None:
    probe = FakeProbe(50)
    async with memory_stack("fixed", probe, capacity=2) as s:
        runtime = s.app[RUNTIME]
        monitor = runtime.memory_monitor
        assert monitor is not None
        caller = await TwilioSide.dial(s, n=1)
        await caller.listen(sentences=2)

        probe.rss = 81 * MIB
        assert monitor.check() == [MemoryAlert(81 * MIB, 0.81)]
        assert (await readyz(s))[0] == 200  # an alert is only an alert
        probe.rss = 86 * MIB
        assert monitor.check() == [DrainNeeded(86 * MIB, 0.86)]

        assert await readyz(s) == (503, {"ready": False, "reason": "draining", "drain_reason": "memory"})
        assert await new_call_is_refused(s, 2) == (True, 1013, "draining")
        assert runtime.stop_requested.is_set()  # what __main__ waits for: exit once the calls are done...
        assert (runtime.stop_reason, runtime.exit_code) == ("memory", EXIT_DRAINED)  # ...with 75
        during = await s.metrics()

        # the call in progress carries on as if nothing happened
        await caller.say("I would like an appointment.")
        assert (await caller.listen(sentences=1)).texts == ["Which day works for you?"]
        await caller.hang_up()
        await s.idle()
        probe.rss = 95 * MIB
        assert monitor.check() == []  # one drain
        after = await s.metrics()
    assert metric(during, "runtime_memory_alerts_total") == 1.0
    assert metric(during, "runtime_memory_budget_fraction") == pytest.approx(0.86)
    assert metric(during, "runtime_draining") == 1.0 and metric(during, "runtime_ready") == 0.0
    assert metric(during, "runtime_drains_total", reason="memory") == 1.0
    assert metric(during, "runtime_active_calls") == 1.0
    assert metric(after, "runtime_calls_total", outcome="caller_hangup") == 1.0
    assert metric(after, "runtime_calls_total", outcome="rejected_busy") == 1.0
    assert metric(after, "runtime_calls_total", outcome="refused_draining") == 1.0
    assert metric(after, "runtime_turns_total") == 1.0


@pytest.mark.e2e
async def test_broken_never_alerts_or_drains_however_high_rss_goes() -> None:
    probe = FakeProbe(50)
    async with memory_stack("broken", probe, capacity=2) as s:
        runtime = s.app[RUNTIME]
        assert runtime.memory_monitor is not None
        for mib in (81, 86, 99, 120):
            probe.rss = mib * MIB
            assert runtime.memory_monitor.check() == []
        assert (await readyz(s))[0] == 200
        assert (await new_call_is_refused(s, 3))[0] is False
        text = await s.metrics()
    assert not runtime.stop_requested.is_set() and runtime.exit_code == 0
    assert metric(text, "runtime_memory_budget_fraction") == pytest.approx(1.2)  # seen, exported, not acted on
    assert metric(text, "runtime_memory_alerts_total") == 0.0 and metric(text, "runtime_draining") == 0.0


def live(kind: type) -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, kind))


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["broken", "fixed"])
async def test_calls_in_sequence_leave_their_buffers_behind_only_when_broken(mode: str) -> None:
    calls = 3
    retained: list[tuple[int, int, int]] = []
    before = live(Recording)  # whatever other tests left (a failed test's traceback may hold some)
    async with memory_stack(mode, FakeProbe(10), capacity=1) as s:
        ledger = s.app[RUNTIME].call_memory
        assert ledger is not None and ledger.keep is (mode == "broken")
        for n in range(1, calls + 1):
            caller = await TwilioSide.dial(s, n=n)
            await caller.listen(sentences=2)
            await caller.say("I would like an appointment.")
            await caller.listen(sentences=1)
            await caller.hang_up()
            await s.idle()
            retained.append((ledger.retained_calls, ledger.retained_bytes, live(Recording) - before))
        assert live(Call) == 0  # the call objects themselves are gone in both modes
        text = await s.metrics()
        sizes = s.recordings.sizes  # type: ignore[attr-defined]
    assert len(sizes) == calls and min(sizes) > 10_000
    if mode == "broken":
        # linear growth: every call adds its tracks and their decoded PCM (5 x the μ-law bytes), and stays
        expected = [(k, 5 * sum(sizes[:k]), k) for k in range(1, calls + 1)]
        assert retained == expected
    else:
        assert retained == [(0, 0, 0)] * calls
    assert metric(text, "runtime_call_buffers_retained") == retained[-1][0]
    assert metric(text, "runtime_call_buffers_retained_bytes") == retained[-1][1]


# --- the process: exit 75 after a memory drain ---------------------------------------------------------------------


async def _lines(stream: asyncio.StreamReader) -> AsyncIterator[dict[str, Any]]:
    while line := await stream.readline():
        with contextlib.suppress(json.JSONDecodeError):
            message = json.loads(line)
            if isinstance(message, dict):
                yield message


async def start_runtime(tmp_path: Path, mode: str) -> asyncio.subprocess.Process:
    config = {"providers": PROVIDERS, "port": 0, "safeguards": {"memory": mode},
              "memory": {"budget_mb": 1, "check_interval_s": 0.05}}  # any Python process is over a 1 MiB budget
    path = tmp_path / f"runtime-{mode}.yaml"
    path.write_text(yaml.safe_dump(config))
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "reference_runtime", "serve", "--config", str(path), "--log-level", "WARNING",
        cwd=REPO, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


@pytest.mark.e2e
async def test_the_process_over_its_budget_drains_prints_its_last_line_and_exits_75(tmp_path: Path) -> None:
    process = await start_runtime(tmp_path, "fixed")
    try:
        assert process.stdout is not None
        async with asyncio.timeout(60):
            events = [message async for message in _lines(process.stdout)]
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert [e["event"] for e in events] == ["listening", "drained"]
    drained = events[1]
    assert (drained["reason"], drained["exit_code"], drained["calls_cut"]) == ("memory", 75, 0)
    assert drained["budget_bytes"] == MIB and drained["rss_bytes"] > 0.85 * MIB
    assert code == EXIT_DRAINED


@pytest.mark.e2e
async def test_the_broken_process_over_its_budget_keeps_serving(tmp_path: Path) -> None:
    process = await start_runtime(tmp_path, "broken")
    try:
        assert process.stdout is not None
        async with asyncio.timeout(60):
            listening = await anext(_lines(process.stdout))
            url = listening["url"]
            async with aiohttp.ClientSession() as http:
                while True:  # until the monitor has sampled: then it saw RSS far over the budget, and did nothing
                    async with http.get(f"{url}/metrics") as response:
                        text = await response.text()
                    if metric(text, "runtime_memory_budget_fraction") > 1.0:
                        break
                    await asyncio.sleep(0.05)
                async with http.get(f"{url}/readyz") as response:
                    assert response.status == 200
            assert process.returncode is None
            process.send_signal(signal.SIGTERM)  # the process we started, by its pid
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert code == 0
