"""``voicechaos run``: the composition root of a run.

It validates the target, starts the embedded stack when asked, places the calls at the scenario's arrival rate (never
more than its concurrency), records every event as it happens, and ends with ``summary.json`` and a console table.
Every run is bounded: ``limits.duration`` cancels whatever is still going, and each call has its own timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from random import Random
from typing import Any, TextIO

import aiohttp

from harness.caller import Call, CallEnvironment, Dial
from harness.chaos.effects import fault_effects
from harness.chaos.faults import Fault, FaultAction, ProviderFaultAction, ProxyDownAction, ToxicAction
from harness.chaos.probes import CounterProbe
from harness.chaos.timeline import Timeline
from harness.chaos.toxiproxy_client import ToxicSpec, ToxiproxyClient
from harness.clock import MonotonicClock
from harness.eventlog import EventLog
from harness.gcpause import GcWatch
from harness.pacer import Pacer
from harness.records import CallRecord
from harness.runtime_metrics import MetricsSampler, runtime_figures
from harness.safety import check_target
from harness.scenario import Scenario, ScenarioError
from harness.stack import EmbeddedStack, StackEndpoints, StackError
from harness.stallwatch import StallWatch
from harness.storage import StorageClient, StorageEndpoint, StorageError, is_complete
from harness.summary import percentile, summarize
from harness.voice import Voice

EXIT_PASS, EXIT_FAIL, EXIT_INVALID, EXIT_USAGE, EXIT_STACK = 0, 1, 2, 3, 4


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]
    calls: list[CallRecord]

    @property
    def exit_code(self) -> int:
        verdict = self.summary["verdict"]
        return {"pass": EXIT_PASS, "invalid": EXIT_INVALID}.get(verdict, EXIT_FAIL)


def new_run_dir(base: Path, name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = base / f"{stamp}-{name}"
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = base / f"{stamp}-{name}-{suffix}"
    run_dir.mkdir(parents=True)
    return run_dir


def resolve_dial(scenario: Scenario, endpoints: StackEndpoints | None, *, allow_remote: bool) -> Dial:
    callers = scenario.callers
    target = scenario.target
    if target.embedded is not None:
        assert endpoints is not None
        return Dial(webhook_url=endpoints.webhook_url, auth_token=endpoints.auth_token,
                    from_number=callers.from_number, to_number=callers.to_number)
    if target.webhook is not None:
        check_target(target.webhook.url, allow_remote=allow_remote, what="target.webhook.url")
        return Dial(webhook_url=target.webhook.url, auth_token=target.webhook.auth_token,
                    from_number=callers.from_number, to_number=callers.to_number)
    assert target.websocket is not None
    check_target(target.websocket.url, allow_remote=allow_remote, what="target.websocket.url")
    return Dial(websocket_url=target.websocket.url, parameters=dict(target.websocket.parameters),
                from_number=callers.from_number, to_number=callers.to_number)


class Progress:
    """One status line: rewritten in place on a terminal, printed every few seconds otherwise (CI logs).

    Counts are kept as calls finish, so a line costs the same after ten calls or a hundred thousand.
    """

    def __init__(self, out: TextIO, total: int) -> None:
        self.out = out
        self.total = total
        self.tty = out.isatty()
        self.started = time.monotonic()
        self._last_print = 0.0
        self.finished = 0
        self.completed = 0
        # the last few thousand replies: live, and cheap enough for the event loop (the summary has them all)
        self._latencies: deque[float] = deque(maxlen=2000)

    def call_finished(self, record: CallRecord) -> None:
        self.finished += 1
        self.completed += str(record.outcome) == "completed"
        self._latencies.extend(t.response_latency_ms for t in record.turns
                               if t.kind == "reply" and t.response_latency_ms is not None)

    def show(self, active: int, pacer: Pacer, final: bool = False) -> None:
        now = time.monotonic()
        if not final and not self.tty and now - self._last_print < 5.0:
            return
        self._last_print = now
        lateness = pacer.lateness.percentile(99)
        late = f"{lateness * 1000:.1f} ms" if lateness is not None else "-"
        latency = f"{percentile(list(self._latencies), 95):.0f} ms" if self._latencies else "-"
        line = (f"[{now - self.started:6.1f}s] calls {self.finished}/{self.total} done ({self.completed} completed, "
                f"{self.finished - self.completed} not), {active} active | recent response latency p95 {latency} | "
                f"harness lateness p99 {late}")
        if self.tty:
            self.out.write("\r" + line.ljust(110) + ("\n" if final else ""))
        else:
            self.out.write(line + "\n")
        self.out.flush()


async def run_scenario(scenario: Scenario, scenario_path: Path, *, runs_dir: Path, allow_remote: bool = False,
                       out: TextIO | None = None, max_calls: int | None = None) -> RunResult:
    out = out or sys.stdout
    cpu_start = time.process_time()
    # an unsafe target is refused before anything is created or started
    dial = None if scenario.target.embedded is not None else resolve_dial(scenario, None, allow_remote=allow_remote)
    plumbing: FaultPlumbing | None = None
    storage: StorageEndpoint | None = None
    if scenario.target.embedded is None:
        if scenario.faults:
            plumbing = _fault_plumbing(scenario, None, None, allow_remote=allow_remote)
        if scenario.chaos.storage_url:
            check_target(scenario.chaos.storage_url, allow_remote=allow_remote, what="chaos.storage_url")
            storage = StorageEndpoint(url=scenario.chaos.storage_url, bucket=scenario.chaos.storage_bucket)
    run_dir = new_run_dir(runs_dir, scenario.name)
    shutil.copy(scenario_path, run_dir / "scenario.yaml")
    events = EventLog(run_dir / "events.jsonl")
    clock = MonotonicClock()
    rng = Random(scenario.seed)
    stack: EmbeddedStack | None = None
    endpoints: StackEndpoints | None = None
    calls_total = min(scenario.callers.count, max_calls or scenario.callers.count)
    events.emit("run_started", {"scenario": scenario.name, "run_dir": str(run_dir), "calls": calls_total,
                                "config": scenario.model_dump(mode="json")})
    out.write(f"voicechaos: run {scenario.name!r} -> {run_dir}\n")
    done: list[CallRecord] = []
    interrupted = ""
    pacer = Pacer(clock)
    timeline: Timeline | None = None
    sampler: MetricsSampler | None = None
    sampler_task: asyncio.Task[None] | None = None
    timeline_task: asyncio.Task[None] | None = None
    load_start_mono, load_start_wall = clock.now(), time.time()
    control_http = aiohttp.ClientSession()  # fault control and probes: never queued behind the calls' requests
    gc_watch = GcWatch()
    stall_watch = StallWatch(events.emit)  # when the harness itself stops turning, and what it was doing
    try:
        if scenario.target.embedded is not None:
            stack = EmbeddedStack(scenario.target.embedded, scenario_dir=scenario_path.parent, run_dir=run_dir,
                                  seed=scenario.seed, allow_remote=allow_remote, on_event=events.emit)
            out.write("voicechaos: starting the embedded stack (fake providers, reference runtime)...\n")
            endpoints = await stack.start()
            events.emit("stack_started", {
                "runtime_url": endpoints.runtime_url, "providers": endpoints.providers,
                "toxiproxy": endpoints.toxiproxy, "toxiproxy_url": endpoints.toxiproxy_url,
                "dependencies": {k: d.to_json() for k, d in endpoints.dependencies.items()}})
            out.write(f"voicechaos: runtime at {endpoints.runtime_url}, providers "
                      f"{', '.join(f'{k} {v}' for k, v in endpoints.providers.items())}\n")
            out.write(f"voicechaos: every dependency behind {endpoints.toxiproxy} at {endpoints.toxiproxy_url}\n")
            dial = resolve_dial(scenario, endpoints, allow_remote=allow_remote)
        assert dial is not None
        if storage is not None:
            await _ensure_bucket(storage)
        if endpoints is not None:
            storage = endpoints.storage
        if scenario.faults:
            plumbing = plumbing or _fault_plumbing(scenario, endpoints, stack, allow_remote=allow_remote)
            timeline = Timeline(
                [(fault, _action(index, fault, plumbing, control_http)) for index, fault in enumerate(scenario.faults)],
                clock=clock, emit=events.emit,
                probe=CounterProbe(control_http, metrics_url=plumbing.metrics_url,
                                   stats_urls=_stats_urls(plumbing.controls)))
            out.write(f"voicechaos: fault timeline: {len(scenario.faults)} faults "
                      f"({'; '.join(f'{f.label} at {f.at:g} s' for f in scenario.faults)})\n")
        load_start_mono, load_start_wall = clock.now(), time.time()
        # the axis every later time is drawn on: turns are timed on the monotonic clock, calls on the wall clock
        events.emit("load_started", {"mono": load_start_mono, "wall": load_start_wall})
        metrics_url = (f"{endpoints.runtime_url}/metrics" if endpoints is not None
                       else scenario.chaos.runtime_metrics_url)
        if metrics_url:
            start = load_start_mono
            sampler = MetricsSampler(control_http, metrics_url, run_dir / "runtime_metrics.jsonl",
                                     elapsed=lambda: clock.now() - start)
            sampler_task = asyncio.create_task(sampler.run())
        if timeline is not None:
            timeline_task = asyncio.create_task(timeline.run(load_start_mono))
        stall_task = asyncio.create_task(stall_watch.run())
        try:
            with gc_watch:
                interrupted = await _place_calls(scenario, dial, calls_total, clock, pacer, rng, events, done, out)
        finally:
            stall_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stall_task
    finally:
        run_end_s = round(clock.now() - load_start_mono, 3)
        if timeline_task is not None:
            # every fault still applied is rolled back here, however the load ended
            timeline_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timeline_task
        if sampler_task is not None and sampler is not None:
            sampler_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler_task
            await sampler.read_once()  # the state at the end of the load
        await control_http.close()
        stack_cpu: dict[str, float] = {}
        recordings: dict[str, Any] | None = None
        if storage is not None:
            recordings = await _count_recordings(storage, done, wait_s=scenario.limits.recordings_wait)
            events.emit("recordings_counted", recordings)
        if stack is not None:
            stack_cpu = stack.cpu_seconds()
            await stack.stop()
            events.emit("stack_stopped", {"cpu_s": stack_cpu})
        lateness = {**pacer.lateness.summary_ms(), "gc": gc_watch.summary(), "stalls": stall_watch.summary()}
        summary = summarize([c.to_json() for c in done], lateness, scenario.targets, recordings)
        summary["scenario"] = scenario.name
        summary["run_dir"] = str(run_dir)
        summary["calls_planned"] = calls_total
        # CPU each process used: on a shared machine, this is what tells a slow agent from a starved one
        summary["cpu_s"] = {"harness": round(time.process_time() - cpu_start, 2), **stack_cpu}
        if interrupted:
            summary["interrupted"] = interrupted
        if endpoints is not None:
            summary["toxiproxy"] = {"which": endpoints.toxiproxy, "url": endpoints.toxiproxy_url}
            summary["dependencies"] = {k: d.to_json() for k, d in endpoints.dependencies.items()}
        if recordings is not None:
            summary["recordings"] = recordings
        if sampler is not None:
            summary["runtime_metrics"] = {**sampler.summary(), "figures": runtime_figures(sampler)}
        if stack is not None:
            summary["runtime_restarts"] = stack.restarts
        if timeline is not None:
            summary["faults"] = fault_effects([w.to_json() for w in timeline.windows], [c.to_json() for c in done],
                                              load_start_mono=load_start_mono, load_start_wall=load_start_wall,
                                              run_end_s=run_end_s)
        summary["config"] = scenario.model_dump(mode="json")
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        events.emit("run_finished", {"verdict": summary["verdict"], "interrupted": interrupted or None})
        events.close()
    summary, report_line = _report(run_dir, summary)
    print_console_report(summary, done, out)
    out.write(report_line)
    out.flush()
    return RunResult(run_dir=run_dir, summary=summary, calls=done)


def _report(run_dir: Path, summary: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Judge the run folder against every target (the runtime's too) and write report.html, summary.json and
    junit.xml. A report that fails to build costs the report, never the run: the summary written above stands."""
    from reports.build import build_report

    try:
        report = build_report(run_dir)
    except Exception as exc:  # the run is recorded; say what broke and keep the harness's own verdict
        return summary, (f"voicechaos: the report could not be built ({exc.__class__.__name__}: {exc}); "
                         f"`voicechaos report {run_dir}` retries it\n")
    return report.summary, f"Report: {report.html_path} (open it in a browser)\n"


async def _ensure_bucket(storage: StorageEndpoint) -> None:
    client = StorageClient.for_endpoint(storage, timeout_s=5.0)
    try:
        await client.ensure_bucket()
    except StorageError as exc:
        raise StackError(f"object storage at {storage.url}: {exc}") from None
    finally:
        client.close()


async def _count_recordings(storage: StorageEndpoint, calls: list[CallRecord], *, wait_s: float) -> dict[str, Any]:
    """List the bucket: every call the runtime took a media stream for should have left a complete recording.
    Uploads run as calls end, so the listing is repeated for a few seconds until all are there."""
    expected = {c.call_sid for c in calls if c.connect_ms is not None}
    client = StorageClient.for_endpoint(storage, timeout_s=2.0, max_attempts=1)
    complete: set[str] = set()
    error = None
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                found = await client.recordings()
            except StorageError as exc:
                error = str(exc)
                break
            complete = {sid for sid, keys in found.items() if is_complete(keys)}
            if expected <= complete or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    finally:
        client.close()
    missing = sorted(expected - complete)
    return {"store": storage.url, "bucket": storage.bucket, "calls_with_media": len(expected),
            "arrived": len(expected & complete), "missing": len(missing), "missing_call_sids": missing[:50],
            "listing_error": error}


@dataclass
class FaultPlumbing:
    """Where the faults of a run go: the Toxiproxy server, the proxy in front of each dependency, and the control
    API of the fake behind it."""

    toxiproxy: ToxiproxyClient
    proxies: dict[str, str]
    controls: dict[str, str | None]
    metrics_url: str | None


def _fault_plumbing(scenario: Scenario, endpoints: StackEndpoints | None, stack: EmbeddedStack | None, *,
                    allow_remote: bool) -> FaultPlumbing:
    if stack is not None and endpoints is not None:
        assert stack.toxiproxy is not None
        deps = endpoints.dependencies
        return FaultPlumbing(stack.toxiproxy, {k: d.proxy.name for k, d in deps.items()},
                             {k: d.control_url for k, d in deps.items()}, f"{endpoints.runtime_url}/metrics")
    chaos = scenario.chaos
    url = chaos.toxiproxy_url or os.environ.get("TOXIPROXY_URL", "").strip()
    if not url:
        raise ScenarioError("scenario", [("chaos.toxiproxy_url", "faults on this target need a Toxiproxy server: "
                                                                   "set chaos.toxiproxy_url or TOXIPROXY_URL")])
    check_target(url, allow_remote=allow_remote, what="the Toxiproxy URL")
    for name, ref in chaos.dependencies.items():
        if ref.control_url:
            check_target(ref.control_url, allow_remote=allow_remote, what=f"chaos.dependencies.{name}.control_url")
    if chaos.runtime_metrics_url:
        check_target(chaos.runtime_metrics_url, allow_remote=allow_remote, what="chaos.runtime_metrics_url")
    return FaultPlumbing(ToxiproxyClient(url), {k: ref.proxy for k, ref in chaos.dependencies.items()},
                         {k: ref.control_url for k, ref in chaos.dependencies.items()}, chaos.runtime_metrics_url)


def _stats_urls(controls: dict[str, str | None]) -> dict[str, str]:
    """One stats reading per fake: a fake that serves two dependencies (Deepgram: STT and the Aura TTS fallback)
    is read once, under the first dependency's name, so its counters are not counted twice."""
    out: dict[str, str] = {}
    for name, url in controls.items():
        if url and f"{url}/stats" not in out.values():
            out[name] = f"{url}/stats"
    return out


def _action(index: int, fault: Fault, plumbing: FaultPlumbing, http: aiohttp.ClientSession) -> FaultAction:
    proxy = plumbing.proxies.get(fault.target)
    if proxy is None:
        raise RuntimeError(f"fault {fault.label!r}: no proxy in front of {fault.target!r}")
    if fault.toxic is not None:
        toxic = fault.toxic
        # a name per fault: two faults of one type on one proxy must not collide, nor remove each other
        spec = ToxicSpec(type=toxic.type, stream=toxic.stream, toxicity=toxic.toxicity,
                         attributes=dict(toxic.attributes), name=f"{toxic.type}_{toxic.stream}_fault{index}")
        return ToxicAction(plumbing.toxiproxy, proxy, spec)
    if fault.provider is not None:
        control = plumbing.controls.get(fault.target)
        if control is None:
            raise RuntimeError(f"fault {fault.label!r}: {fault.target} has no control API")
        return ProviderFaultAction(http, control, fault.provider)
    return ProxyDownAction(plumbing.toxiproxy, proxy)


async def _place_calls(scenario: Scenario, dial: Dial, calls_total: int, clock: MonotonicClock, pacer: Pacer,
                       rng: Random, events: EventLog, done: list[CallRecord], out: TextIO) -> str:
    """Start calls at the arrival rate, bounded by concurrency and the run's duration. Returns why it stopped early
    ('' when every call ran)."""
    callers = scenario.callers
    concurrency = asyncio.Semaphore(callers.concurrency or calls_total)
    progress = Progress(out, calls_total)
    stop_reason = ""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def on_signal() -> None:
        nonlocal stop_reason
        stop_reason = stop_reason or "interrupted by the user (Ctrl-C / SIGTERM)"
        stopping.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        voice = Voice()
        voice.prepare(scenario.script)
        env = CallEnvironment(clock=clock, pacer=pacer, voice=voice, http=http, rng=rng, emit=events.emit)
        pacer_task = asyncio.create_task(pacer.run())
        tasks: set[asyncio.Task[CallRecord]] = set()
        active: set[Call] = set()

        async def one_call(call_id: int) -> CallRecord:
            async with concurrency:
                call = Call(env, call_id, scenario.script, scenario.limits, dial)
                active.add(call)
                try:
                    record = await call.run()
                finally:
                    active.discard(call)
                    done.append(call.record)
                    progress.call_finished(call.record)
                return record

        async def launcher() -> None:
            start = clock.now()
            for call_id in range(calls_total):
                due = start + call_id / callers.arrival_rate
                delay = due - clock.now()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.add(asyncio.create_task(one_call(call_id)))
            if tasks:
                await asyncio.wait(set(tasks))

        async def reporter() -> None:
            while True:
                progress.show(pacer.active, pacer)
                await asyncio.sleep(1.0)

        report_task = asyncio.create_task(reporter())
        launch = asyncio.create_task(launcher())
        stop_wait = asyncio.create_task(stopping.wait())
        try:
            finished, _ = await asyncio.wait({launch, stop_wait}, timeout=scenario.limits.duration,
                                             return_when=asyncio.FIRST_COMPLETED)
            if launch not in finished:
                stop_reason = stop_reason or f"the run reached limits.duration ({scenario.limits.duration:g} s)"
                launch.cancel()
                for call in active:
                    call.stop_reason = stop_reason
                for task in tasks:
                    task.cancel()
                # cancelled calls still record themselves; give them a moment to do so
                await asyncio.wait({launch, *tasks}, timeout=10.0)
            elif launch.exception() is not None:
                raise launch.exception()  # type: ignore[misc]
        finally:
            stop_wait.cancel()
            report_task.cancel()
            pacer_task.cancel()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
            progress.show(pacer.active, pacer, final=True)
    if stop_reason:
        out.write(f"voicechaos: stopped early: {stop_reason}\n")
    return stop_reason


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}{unit}" if unit else f"{value:g}"
    return f"{value}{unit}"


def _print_faults(faults: list[dict[str, Any]], out: TextIO) -> None:
    if not faults:
        return
    out.write("\nFaults (seconds after the load started) and what they did\n")
    for item in faults:
        effect = item.get("effect")
        if "index" in item:
            when = (f"applied {_fmt(item.get('applied_at_s'), ' s')} -> removed {_fmt(item.get('removed_at_s'), ' s')}"
                    f" ({item.get('removed_because') or 'still applied'})")
            if item.get("error"):
                when = f"FAILED to apply at {_fmt(item.get('applied_at_s'), ' s')}: {item['error']}"
            if item.get("rollback_error"):
                when += f"; ROLLBACK FAILED: {item['rollback_error']}"
            out.write(f"  {item['label']:<28} {when}\n")
        else:
            out.write(f"  {item['label']:<28}\n")
        if effect:
            outcomes = ", ".join(f"{k} {v}" for k, v in sorted(effect["outcomes_during"].items())) or "none"
            latency = effect["response_latency_ms"]
            out.write(f"  {'':<28} calls in progress {effect['calls_during']} ({outcomes}); {effect['turns']} turns, "
                      f"response latency p95 {_fmt(latency['p95'], ' ms')}, statuses "
                      f"{', '.join(f'{k} {v}' for k, v in sorted(effect['statuses'].items())) or '-'}\n")
            if "calls_started_after" in effect:
                after = ", ".join(f"{k} {v}" for k, v in sorted(effect["outcomes_after"].items())) or "none"
                out.write(f"  {'':<28} calls started after it: {effect['calls_started_after']} ({after})\n")
        counted = item.get("counters_delta") or {}
        if counted:
            shown = sorted(counted.items(), key=lambda kv: -abs(kv[1]))[:6]
            out.write(f"  {'':<28} counted meanwhile: "
                      f"{'; '.join(f'{k} +{v:g}' for k, v in shown)}{' ...' if len(counted) > 6 else ''}\n")


def print_console_report(summary: dict[str, Any], calls: list[CallRecord], out: TextIO, max_rows: int = 40) -> None:
    out.write("\nPer call\n")
    header = f"{'call':>5} {'outcome':<18} {'turns':>5} {'latency p50':>12} {'max gap':>9} {'heard':>6}  reason\n"
    out.write(header)
    for call in sorted(calls, key=lambda c: c.call_id)[:max_rows]:
        latencies = [t.response_latency_ms for t in call.turns if t.kind == "reply" and t.response_latency_ms]
        p50 = sorted(latencies)[len(latencies) // 2] if latencies else None
        max_gap = max((t.max_gap_ms for t in call.turns), default=None)
        heard = sum(len(t.heard) for t in call.turns)
        out.write(f"{call.call_id:>5} {call.outcome!s:<18} {len(call.turns):>5} {_fmt(p50, ' ms'):>12} "
                  f"{_fmt(max_gap, ' ms'):>9} {heard:>6}  {call.reason[:110]}\n")
    if len(calls) > max_rows:
        out.write(f"  ... {len(calls) - max_rows} more calls in events.jsonl\n")
    latency = summary["response_latency_ms"]
    out.write(f"\nResponse latency (end of caller speech -> first audible agent audio), {latency['count']} replies: "
              f"p50 {_fmt(latency['p50'], ' ms')}, p95 {_fmt(latency['p95'], ' ms')}, "
              f"p99 {_fmt(latency['p99'], ' ms')}, max {_fmt(latency['max'], ' ms')}\n")
    greeting = summary["greeting_latency_ms"]
    out.write(f"Greeting latency (stream start -> first audio): p50 {_fmt(greeting['p50'], ' ms')}, "
              f"p95 {_fmt(greeting['p95'], ' ms')}\n")
    gaps = summary["silence_gaps_ms"]
    out.write(f"Silence gaps inside agent turns: {gaps['count']} gaps, p95 {_fmt(gaps['p95'], ' ms')}, "
              f"max {_fmt(gaps['max'], ' ms')}\n")
    lateness = summary["harness_lateness"]
    out.write(f"Harness send lateness on the 20 ms grid: p50 {_fmt(lateness['p50_ms'], ' ms')}, "
              f"p99 {_fmt(lateness['p99_ms'], ' ms')}, max {_fmt(lateness['max_ms'], ' ms')} "
              f"over {lateness['frames']} frames\n")
    _print_faults(summary.get("faults") or [], out)
    recordings = summary.get("recordings")
    if recordings:
        out.write(f"Recordings in object storage: {recordings['arrived']} of {recordings['calls_with_media']} calls "
                  f"({recordings['missing']} missing)"
                  f"{'; listing failed: ' + recordings['listing_error'] if recordings['listing_error'] else ''}\n")
    out.write("\nTargets\n")
    for row in summary["targets"]:
        out.write(f"  {row['verdict'].upper():<13} {row['metric']:<26} measured {_fmt(row['measured']):>8}  "
                  f"target {row['target']:<12} {row['note']}\n")
    out.write(f"\nVerdict: {summary['verdict'].upper()}: {summary['verdict_reason']}\n")
    out.write(f"Run folder: {summary['run_dir']} (events.jsonl, summary.json, junit.xml, stack/ logs)\n")
    out.flush()
