"""A run's session: everything a run owns besides its callers.

The run folder and its event log, the embedded stack (or the checks on an external target), the fault timeline and
faults applied on demand, the runtime's ``/metrics`` sampler, the stall watch, the count of recordings, and at the end
``summary.json`` and the report. Two composition roots use it: ``voicechaos run`` (callers on this event loop) and the
Locust master (callers in Locust users, maybe on other processes), so both produce the same run folder and verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from harness.caller import Dial
from harness.chaos.effects import fault_effects
from harness.chaos.faults import Fault, FaultAction, ImpairmentAction, ProviderFaultAction, ProxyDownAction, ToxicAction
from harness.chaos.probes import CounterProbe
from harness.chaos.timeline import Timeline
from harness.chaos.toxiproxy_client import ToxicSpec, ToxiproxyClient
from harness.clock import MonotonicClock
from harness.eventlog import EventLog
from harness.runtime_metrics import MetricsSampler, runtime_figures
from harness.safety import check_target
from harness.scenario import Scenario, ScenarioError
from harness.stack import EmbeddedStack, StackEndpoints, StackError
from harness.stallwatch import StallWatch
from harness.storage import StorageClient, StorageEndpoint, StorageError, is_complete
from harness.summary import summarize
from harness.webrtc.leg import CallerLeg


def new_run_dir(base: Path, name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = base / f"{stamp}-{name}"
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = base / f"{stamp}-{name}-{suffix}"
    run_dir.mkdir(parents=True)
    return run_dir


def resolve_dials(scenario: Scenario, endpoints: StackEndpoints | None, *, allow_remote: bool,
                  caller_leg: CallerLeg | None = None) -> list[Dial]:
    """One dial per caller group (``Scenario.callers.group_of`` says which call uses which)."""
    dials = []
    for group in scenario.callers.caller_groups():
        if group.transport == "webrtc":
            if scenario.target.embedded is not None:
                assert endpoints is not None
                url = endpoints.webrtc_offer_url
            else:
                assert scenario.target.webrtc is not None
                url = scenario.target.webrtc.url
                # the WebRTC caller gathers loopback candidates only: a remote agent could never reach its media
                check_target(url, allow_remote=False, what="target.webrtc.url (WebRTC stays on loopback, even with "
                                                           "--allow-remote)")
            dials.append(Dial(transport="webrtc", offer_url=url, caller_leg=caller_leg,
                              group=group.name))
        else:
            dial = resolve_dial(scenario, endpoints, allow_remote=allow_remote)
            dials.append(Dial(**{**dial.__dict__, "group": group.name}))
    return dials


def resolve_dial(scenario: Scenario, endpoints: StackEndpoints | None, *, allow_remote: bool) -> Dial:
    """The phone callers' dial (Twilio)."""
    callers = scenario.callers
    target = scenario.target
    if target.embedded is not None:
        assert endpoints is not None
        return Dial(webhook_url=endpoints.webhook_url, auth_token=endpoints.auth_token,
                    from_number=callers.from_number, to_number=callers.to_number, media_via=endpoints.media_via)
    if target.webhook is not None:
        check_target(target.webhook.url, allow_remote=allow_remote, what="target.webhook.url")
        return Dial(webhook_url=target.webhook.url, auth_token=target.webhook.auth_token,
                    from_number=callers.from_number, to_number=callers.to_number)
    assert target.websocket is not None
    check_target(target.websocket.url, allow_remote=allow_remote, what="target.websocket.url")
    return Dial(websocket_url=target.websocket.url, parameters=dict(target.websocket.parameters),
                from_number=callers.from_number, to_number=callers.to_number)


@dataclass
class FaultPlumbing:
    """Where the faults of a run go: the Toxiproxy server, the proxy in front of each dependency, and the control
    API of the fake behind it."""

    toxiproxy: ToxiproxyClient | None
    proxies: dict[str, str]
    controls: dict[str, str | None]
    metrics_url: str | None
    #: the WebRTC callers' own network (impairment faults), when the run has WebRTC callers
    caller_leg: CallerLeg | None = None


def fault_plumbing(scenario: Scenario, endpoints: StackEndpoints | None, stack: EmbeddedStack | None, *,
                   allow_remote: bool) -> FaultPlumbing:
    if stack is not None and endpoints is not None:
        assert stack.toxiproxy is not None
        deps = endpoints.dependencies
        return FaultPlumbing(stack.toxiproxy, {k: d.proxy.name for k, d in deps.items()},
                             {k: d.control_url for k, d in deps.items()}, f"{endpoints.runtime_url}/metrics")
    chaos = scenario.chaos
    url = chaos.toxiproxy_url or os.environ.get("TOXIPROXY_URL", "").strip()
    if not url and all(fault.impairment is not None for fault in scenario.faults):
        # impairments act in the harness's own relay: no Toxiproxy needed
        return FaultPlumbing(None, {}, {}, chaos.runtime_metrics_url)
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


def fault_action(index: int, fault: Fault, plumbing: FaultPlumbing, http: aiohttp.ClientSession) -> FaultAction:
    if fault.impairment is not None:
        if plumbing.caller_leg is None:
            raise RuntimeError(f"fault {fault.label!r}: no WebRTC callers of this process to impair (only "
                               "`voicechaos run` places calls through the impairment relay)")
        return ImpairmentAction(plumbing.caller_leg, fault.impairment)
    proxy = plumbing.proxies.get(fault.target)
    if proxy is None:
        raise RuntimeError(f"fault {fault.label!r}: no proxy in front of {fault.target!r}")
    if fault.toxic is not None:
        toxic = fault.toxic
        # a name per fault: two faults of one type on one proxy must not collide, nor remove each other
        spec = ToxicSpec(type=toxic.type, stream=toxic.stream, toxicity=toxic.toxicity,
                         attributes=dict(toxic.attributes), name=f"{toxic.type}_{toxic.stream}_fault{index}")
        assert plumbing.toxiproxy is not None
        return ToxicAction(plumbing.toxiproxy, proxy, spec)
    if fault.provider is not None:
        control = plumbing.controls.get(fault.target)
        if control is None:
            raise RuntimeError(f"fault {fault.label!r}: {fault.target} has no control API")
        return ProviderFaultAction(http, control, fault.provider)
    assert plumbing.toxiproxy is not None
    return ProxyDownAction(plumbing.toxiproxy, proxy)


async def _ensure_bucket(storage: StorageEndpoint) -> None:
    client = StorageClient.for_endpoint(storage, timeout_s=5.0)
    try:
        await client.ensure_bucket()
    except StorageError as exc:
        raise StackError(f"object storage at {storage.url}: {exc}") from None
    finally:
        client.close()


async def count_recordings(storage: StorageEndpoint, calls: list[dict[str, Any]], *,
                           wait_s: float) -> dict[str, Any]:
    """List the bucket: every call the runtime took a media stream for should have left a complete recording.
    Uploads run as calls end, so the listing is repeated for a few seconds until all are there."""
    expected = {c["call_sid"] for c in calls if c.get("connect_ms") is not None}
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


def build_run_report(run_dir: Path, summary: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Judge the run folder against every target (the runtime's too) and write report.html, summary.json and
    junit.xml. A report that fails to build costs the report, never the run: the summary written before stands."""
    from reports.build import build_report

    try:
        report = build_report(run_dir)
    except Exception as exc:  # the run is recorded; say what broke and keep the harness's own verdict
        return summary, (f"voicechaos: the report could not be built ({exc.__class__.__name__}: {exc}); "
                         f"`voicechaos report {run_dir}` retries it\n")
    return report.summary, f"Report: {report.html_path} (open it in a browser)\n"


class RunSession:
    """Open it (run folder, stack, faults), start the load's clock, close it with the calls' records.

    Everything here runs on one asyncio loop; the event log is written from that loop only.
    """

    def __init__(self, scenario: Scenario, scenario_path: Path, *, runs_dir: Path, allow_remote: bool,
                 out: TextIO, calls_planned: int, clock: MonotonicClock | None = None,
                 mode: str = "run", faults_on_demand: bool = False, run_dir: Path | None = None,
                 callers_here: bool = True) -> None:
        self.scenario = scenario
        self.scenario_path = scenario_path
        self.runs_dir = runs_dir
        self.allow_remote = allow_remote
        self.out = out
        self.calls_planned = calls_planned
        self.clock = clock or MonotonicClock()
        self.mode = mode
        #: the Locust UI's Chaos tab applies faults during the run: wire the fault plumbing even without a timeline
        self.faults_on_demand = faults_on_demand
        #: whether this process places the calls (``voicechaos run``) or Locust's processes do; the WebRTC callers'
        #: impairment relay can only sit in the process that places the calls
        self.callers_here = callers_here
        self.cpu_start = time.process_time()
        self.run_dir: Path | None = None
        self._given_run_dir = run_dir  # a launcher that writes its own files beside the run's names it
        self.events: EventLog | None = None
        self.stack: EmbeddedStack | None = None
        self.endpoints: StackEndpoints | None = None
        self.dials: list[Dial] = []
        #: the WebRTC callers' network: one impairment relay per call, when a fault may impair it
        self.caller_leg: CallerLeg | None = None
        self.plumbing: FaultPlumbing | None = None
        self.storage: StorageEndpoint | None = None
        self.timeline: Timeline | None = None
        self.sampler: MetricsSampler | None = None
        self.stall_watch: StallWatch | None = None
        self.load_start_mono = self.clock.now()
        self.load_start_wall = time.time()
        self._control_http: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._load_started = False

    def emit(self, event: str, fields: dict[str, Any]) -> None:
        assert self.events is not None
        self.events.emit(event, fields)

    @property
    def control_http(self) -> aiohttp.ClientSession:
        """Fault control and probes: never queued behind the calls' requests."""
        assert self._control_http is not None
        return self._control_http

    async def open(self) -> list[Dial]:
        """Check the target, create the run folder, start the embedded stack and wire the faults. An unsafe target is
        refused before anything is created or started. Returns one dial per caller group."""
        scenario = self.scenario
        impaired = [i for i, f in enumerate(scenario.faults) if f.impairment is not None]
        if impaired and not self.callers_here:
            raise ScenarioError(str(self.scenario_path), [(f"faults[{impaired[0]}].impairment", "impairing the WebRTC "
                                "callers' media needs the relay in the process that places the calls: use "
                                "`voicechaos run` (Locust's processes call over a clean path)")])
        if self.callers_here and (impaired or (
                self.faults_on_demand and any(g.transport == "webrtc" for g in scenario.callers.caller_groups()))):
            self.caller_leg = CallerLeg(seed=scenario.seed)
        if scenario.target.embedded is None:
            self.dials = resolve_dials(scenario, None, allow_remote=self.allow_remote, caller_leg=self.caller_leg)
            if scenario.faults or (self.faults_on_demand and scenario.chaos.dependencies):
                self.plumbing = fault_plumbing(scenario, None, None, allow_remote=self.allow_remote)
            if scenario.chaos.storage_url:
                check_target(scenario.chaos.storage_url, allow_remote=self.allow_remote, what="chaos.storage_url")
                self.storage = StorageEndpoint(url=scenario.chaos.storage_url, bucket=scenario.chaos.storage_bucket)
        if self._given_run_dir is not None:
            self._given_run_dir.mkdir(parents=True, exist_ok=True)
            self.run_dir = run_dir = self._given_run_dir
        else:
            self.run_dir = run_dir = new_run_dir(self.runs_dir, scenario.name)
        shutil.copy(self.scenario_path, run_dir / "scenario.yaml")
        self.events = EventLog(run_dir / "events.jsonl")
        self.emit("run_started", {"scenario": scenario.name, "run_dir": str(run_dir), "calls": self.calls_planned,
                                  "mode": self.mode, "config": scenario.model_dump(mode="json")})
        self.out.write(f"voicechaos: run {scenario.name!r} -> {run_dir}\n")
        self._control_http = aiohttp.ClientSession()
        if scenario.target.embedded is not None:
            self.stack = EmbeddedStack(scenario.target.embedded, scenario_dir=self.scenario_path.parent,
                                       run_dir=run_dir, seed=scenario.seed, allow_remote=self.allow_remote,
                                       on_event=self.emit)
            self.out.write("voicechaos: starting the embedded stack (fake providers, reference runtime)...\n")
            self.endpoints = endpoints = await self.stack.start()
            self.emit("stack_started", {
                "runtime_url": endpoints.runtime_url, "providers": endpoints.providers,
                "toxiproxy": endpoints.toxiproxy, "toxiproxy_url": endpoints.toxiproxy_url,
                "dependencies": {k: d.to_json() for k, d in endpoints.dependencies.items()}})
            self.out.write(f"voicechaos: runtime at {endpoints.runtime_url}, providers "
                           f"{', '.join(f'{k} {v}' for k, v in endpoints.providers.items())}\n")
            self.out.write(f"voicechaos: every dependency behind {endpoints.toxiproxy} at "
                           f"{endpoints.toxiproxy_url}\n")
            self.dials = resolve_dials(scenario, endpoints, allow_remote=self.allow_remote, caller_leg=self.caller_leg)
            self.storage = endpoints.storage
            if scenario.faults or self.faults_on_demand:
                self.plumbing = fault_plumbing(scenario, endpoints, self.stack, allow_remote=self.allow_remote)
        elif self.storage is not None:
            await _ensure_bucket(self.storage)
        if scenario.faults:
            assert self.plumbing is not None
            self.out.write(f"voicechaos: fault timeline: {len(scenario.faults)} faults "
                           f"({'; '.join(f'{f.label} at {f.at:g} s' for f in scenario.faults)})\n")
        if self.plumbing is not None:
            self.plumbing.caller_leg = self.caller_leg
        return self.dials

    def _new_timeline(self) -> Timeline:
        scenario = self.scenario
        plumbing = self.plumbing
        http = self.control_http
        assert plumbing is not None
        actions = [(fault, fault_action(index, fault, plumbing, http)) for index, fault in enumerate(scenario.faults)]
        probe = CounterProbe(http, metrics_url=plumbing.metrics_url, stats_urls=_stats_urls(plumbing.controls))
        return Timeline(actions, clock=self.clock, emit=self.emit, probe=probe)

    def start_load(self) -> None:
        """Time zero of the run: the axis every later time is drawn on (turns are timed on the monotonic clock,
        calls on the wall clock). Starts the metrics sampler, the fault timeline and the stall watch."""
        self.load_start_mono, self.load_start_wall = self.clock.now(), time.time()
        self._load_started = True
        self.emit("load_started", {"mono": self.load_start_mono, "wall": self.load_start_wall})
        metrics_url = (f"{self.endpoints.runtime_url}/metrics" if self.endpoints is not None
                       else self.scenario.chaos.runtime_metrics_url)
        if metrics_url:
            start = self.load_start_mono
            assert self.run_dir is not None
            self.sampler = MetricsSampler(self.control_http, metrics_url, self.run_dir / "runtime_metrics.jsonl",
                                          elapsed=lambda: self.clock.now() - start)
            self._tasks.append(asyncio.create_task(self.sampler.run()))
        if self.plumbing is not None:
            self.timeline = self._new_timeline()
            self._tasks.append(asyncio.create_task(self.timeline.run(self.load_start_mono)))
        self.stall_watch = StallWatch(self.emit)  # when the harness itself stops turning, and what it was doing
        self._tasks.append(asyncio.create_task(self.stall_watch.run()))

    @property
    def load_started(self) -> bool:
        return self._load_started

    def elapsed(self) -> float:
        return round(self.clock.now() - self.load_start_mono, 3)

    async def stop_load(self) -> float:
        """Roll back every fault still applied and stop the sampler (after one last reading). Returns when the
        load ended, in seconds after it started."""
        run_end_s = self.elapsed()
        for task in reversed(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.timeline is not None:  # faults applied on demand are not the schedule's: roll them back too
            await self.timeline.rollback_all("the run ended")
        if self.sampler is not None:
            await self.sampler.read_once()  # the state at the end of the load
        return run_end_s

    async def close(self, calls: list[dict[str, Any]], lateness: dict[str, Any], *, interrupted: str = "",
                    run_end_s: float | None = None, extra: dict[str, Any] | None = None,
                    report: bool = True) -> tuple[dict[str, Any], str]:
        """Stop the stack, count recordings, write summary.json, build the report. ``calls`` are the records
        (``CallRecord.to_json()``) of every call of the run, whichever process placed it. Returns the judged summary
        and the line that says where the report is. Before the run folder exists (an unsafe target) there is
        nothing to write."""
        if self.run_dir is None or self.events is None:
            return {}, ""
        if run_end_s is None:
            run_end_s = await self.stop_load() if self._load_started else 0.0
        scenario = self.scenario
        if self._control_http is not None:
            await self._control_http.close()
        stack_cpu: dict[str, float] = {}
        recordings: dict[str, Any] | None = None
        if self.storage is not None and self.events is not None:
            recordings = await count_recordings(self.storage, calls, wait_s=scenario.limits.recordings_wait)
            self.emit("recordings_counted", recordings)
        caller_leg = None
        if self.caller_leg is not None:
            caller_leg = self.caller_leg.stats()
            await self.caller_leg.close()
        if self.stack is not None:
            stack_cpu = self.stack.cpu_seconds()
            await self.stack.stop()
            self.emit("stack_stopped", {"cpu_s": stack_cpu})
        if self.stall_watch is not None:
            lateness = {**lateness, "stalls": self.stall_watch.summary()}
        summary = summarize(calls, lateness, scenario.targets, recordings)
        summary["scenario"] = scenario.name
        summary["run_dir"] = str(self.run_dir)
        summary["calls_planned"] = self.calls_planned
        summary["mode"] = self.mode
        # CPU each process used: on a shared machine, this is what tells a slow agent from a starved one
        summary["cpu_s"] = {"harness": round(time.process_time() - self.cpu_start, 2), **stack_cpu}
        if interrupted:
            summary["interrupted"] = interrupted
        if self.endpoints is not None:
            summary["toxiproxy"] = {"which": self.endpoints.toxiproxy, "url": self.endpoints.toxiproxy_url}
            summary["dependencies"] = {k: d.to_json() for k, d in self.endpoints.dependencies.items()}
        if recordings is not None:
            summary["recordings"] = recordings
        if caller_leg is not None:
            summary["caller_leg_webrtc"] = caller_leg  # what the impairment relays did to the packets, both ways
        if self.sampler is not None:
            summary["runtime_metrics"] = {**self.sampler.summary(), "figures": runtime_figures(self.sampler)}
        if self.stack is not None:
            summary["runtime_restarts"] = self.stack.restarts
        if self.timeline is not None and self.timeline.windows:
            summary["faults"] = fault_effects([w.to_json() for w in self.timeline.windows], calls,
                                              load_start_mono=self.load_start_mono,
                                              load_start_wall=self.load_start_wall, run_end_s=run_end_s)
        summary.update(extra or {})
        summary["config"] = scenario.model_dump(mode="json")
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        self.emit("run_finished", {"verdict": summary["verdict"], "interrupted": interrupted or None})
        self.events.close()
        if not report:
            return summary, ""
        return build_run_report(self.run_dir, summary)
