"""One Locust process of a voicechaos load: local (one process does everything), master, or worker.

- **local / master** speak for the run: the launcher owns it (:mod:`harness.load.control`: run folder, embedded stack,
  faults, report) and they send it every call event, start its clock at the first test, forward the Chaos tab's
  faults, and at the end send the run's pacing lateness and get the verdict, which becomes Locust's exit code; they
  also keep the live :class:`~harness.load.voice_stats.VoiceStats` and serve the Voice/Chaos web routes;
- **local / worker** place calls: each Locust user hands its call to the :class:`~harness.load.engine.CallEngine`;
  the records come back as events, which fire one Locust request per turn and per call (never per frame);
- a **worker** sends its call events and its cumulative pacing lateness to the master with ``report_to_master``
  (every few seconds) and once more when its users have stopped (``voicechaos_final``), so that the master's run
  folder has every call whichever machine placed it. Turn times are the worker's monotonic clock: the master moves
  them onto its own through both hosts' wall clocks.

Locust-only (gevent): imported by the locustfile, never by ``voicechaos run``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import gevent
import requests
from locust.env import Environment
from locust.runners import STATE_RUNNING, STATE_SPAWNING, MasterRunner, WorkerRunner

from harness.caller import Dial
from harness.lateness import LatenessHistogram, lateness_from_json, lateness_to_json
from harness.load.bridge import Hub, original_selector, start_real_thread
from harness.load.engine import CallEngine
from harness.load.settings import LoadSettings, dial_from_json
from harness.load.voice_stats import VoiceStats
from harness.load.webui import ChaosError, install
from harness.records import Outcome
from harness.run import EXIT_FAIL
from harness.safety import UnsafeTargetError, check_target, is_loopback_host
from harness.scenario import Scenario

#: the engine's events the Locust side acts on (a worker forwards every event to the master)
CALL_EVENTS = frozenset({"call_started", "call_connected", "turn", "call_ended"})
#: monotonic-clock fields of a turn (seconds), moved onto the master's clock
_TURN_TIMES = ("listen_from", "caller_speech_start", "first_audio_at", "last_audio_end", "closed_at")
DRAIN_GRACE_S = 15.0
#: how long a load process waits, at its end, for the records of calls it hung up
SETTLE_S = 15.0
SEND_EVERY_S = 0.5


class CallFailed(Exception):
    """A Locust failure entry: the outcome and why (grouped by message in Locust's Failures tab)."""


@dataclass
class WorkerView:
    """What the master knows of one worker."""

    index: int = -1
    lateness: LatenessHistogram = field(default_factory=LatenessHistogram)
    gc: dict[str, Any] = field(default_factory=dict)
    placed: int = 0
    ended: int = 0
    clock_offset: float | None = None  # worker mono - master mono, the smallest seen (the least transit delay)
    final_at: float = 0.0  # when its last records after its users stopped arrived (master's monotonic clock)
    idle_at: float = 0.0  # when it last reported no users and no call in progress

    def done_since(self, moment: float) -> bool:
        return self.final_at >= moment or self.idle_at >= moment


class LoadNode:
    def __init__(self, environment: Environment, settings: LoadSettings, scenario: Scenario) -> None:
        self.environment = environment
        self.settings = settings
        self.scenario = scenario
        runner = environment.runner
        self.role = ("master" if isinstance(runner, MasterRunner) else
                     "worker" if isinstance(runner, WorkerRunner) else "local")
        self.hub = Hub()
        self.engine: CallEngine | None = None
        self.control: RunControlClient | None = None
        self.stats: VoiceStats | None = None
        self.outbox: list[tuple[str, dict[str, Any]]] = []  # worker: for the master; local/master: for the run
        self.workers: dict[str, WorkerView] = {}
        self.dials: list[Dial] | None = dial_from_json(settings.dial) if settings.dial else None
        self._calls_placed = 0
        self.calls_ended = 0
        self.records_out = 0  # call_ended events put in the outbox (worker -> master)
        self.load_started = False
        self.tests = 0  # tests started in this process (the web UI can start several)
        self.closed = False
        self.stop_requested_at = 0.0
        self.exit_code: int | None = None

    # --- start --------------------------------------------------------------------------------------------------------

    def start(self) -> None:
        events = self.environment.events
        if self.role != "master":  # a master places no calls
            self.engine = CallEngine(self.scenario, process_index=0, emit=self._on_engine_event,
                                     start_thread=start_real_thread, selector_factory=original_selector,
                                     max_calls=self.settings.max_calls,
                                     seed_salt=getattr(self.environment.runner, "client_id", "local"))
            self.engine.start(sleep=gevent.sleep)
        if self.role == "worker":
            events.report_to_master.add_listener(self._report_to_master)
            events.test_stop.add_listener(self._send_final)
            return
        if not self.settings.control_url or self.dials is None:
            raise RuntimeError("a voicechaos master needs its launcher: start it with `voicechaos ui|soak`")
        self.control = RunControlClient(self.settings.control_url)
        if self.environment.parsed_options is not None:  # workers get it with every spawn message
            self.environment.parsed_options.voicechaos_dial = self.settings.dial
        self.stats = VoiceStats(lateness_limit_ms=self.scenario.targets.harness_lateness_p99_ms,
                                clock=time.monotonic, dead_air_ms=self.scenario.targets.dead_air_ms)
        events.test_start.add_listener(self._on_test_start)
        events.quitting.add_listener(self._on_quitting)
        if self.role == "master":
            events.worker_report.add_listener(self._on_worker_report)
            self.environment.runner.register_message("voicechaos_final", self._on_worker_final)
        else:
            gevent.spawn(self._local_lateness_loop)
        gevent.spawn(self._send_loop)
        web_ui = self.environment.web_ui
        if web_ui is not None:
            install(web_ui.app, stats=self._stats_snapshot, chaos=self.control, web_ui=web_ui)

    def _stats_snapshot(self) -> dict[str, Any]:
        assert self.stats is not None
        return {**self.stats.snapshot(), "role": self.role}

    # --- calls (local, worker) ----------------------------------------------------------------------------------------

    def place_call(self) -> tuple[int, Any] | None:
        """Start a call for a user: its id and a gevent AsyncResult of its record; None once max_calls were placed."""
        assert self.engine is not None
        if self.dials is None:  # a worker: the master's target, which this host must be allowed to call too
            options = self.environment.parsed_options
            dials = dial_from_json(getattr(options, "voicechaos_dial", ""))
            check_worker_dials(dials, master_host=str(getattr(options, "master_host", "127.0.0.1")),
                               allow_remote=self.settings.allow_remote)
            self.dials = dials
        runner = self.environment.runner
        if self.role == "worker":  # the master numbers its workers from 0; ids stay unique across the run
            self.engine.process_index = max(0, runner.worker_index) + 1
        # each process deals its calls to the caller groups in the scenario's proportions
        dial = self.dials[self.scenario.callers.group_of(self._calls_placed) % len(self.dials)]
        self._calls_placed += 1
        placed = self.engine.place_call(dial)
        if placed is None:
            return None
        call_id, future = placed
        return call_id, self.hub.result_of(future)

    def hang_up(self, call_id: int, reason: str) -> None:
        if self.engine is not None:
            self.engine.hang_up(call_id, reason)

    def _on_engine_event(self, name: str, fields: dict[str, Any]) -> None:
        """On the engine's thread: hand the event to the main thread, in order."""
        self.hub.call_soon(self._on_call_event, name, fields)

    def _on_call_event(self, name: str, fields: dict[str, Any]) -> None:
        """On the main thread: Locust's request events, the live figures, and the event on its way to the run."""
        _fire_requests(self.environment, name, fields, dead_air_ms=self.scenario.targets.dead_air_ms)
        self.outbox.append((name, fields))
        if name == "call_ended":
            self.records_out += 1
        if self.role == "local" and name in CALL_EVENTS:
            self._observe("local", name, fields)

    def _observe(self, worker: str, name: str, fields: dict[str, Any]) -> None:
        assert self.stats is not None
        if name == "call_started":
            self.stats.call_started(worker)
        elif name == "turn":
            self.stats.turn(fields)
        elif name == "call_ended":
            self.stats.call_ended(fields, worker)
            self.calls_ended += 1

    def _local_lateness_loop(self) -> None:
        while not self.closed:
            histogram, _ = self._lateness()
            if self.stats is not None:
                self.stats.lateness("local", lateness_to_json(histogram))
            gevent.sleep(2.0)

    def _lateness(self) -> tuple[LatenessHistogram, dict[str, Any]]:
        assert self.engine is not None
        return self.hub.wait(self.engine.run(self.engine.lateness_snapshot()), timeout=30)

    # --- to the run (local, master) -----------------------------------------------------------------------------------

    def _send_loop(self) -> None:
        while not self.closed:
            gevent.sleep(SEND_EVERY_S)
            self._send_events()

    def _send_events(self) -> None:
        if not self.outbox or self.control is None:
            return
        events, self.outbox = self.outbox, []
        try:
            self.control.post_events(events)
        except requests.RequestException as exc:  # kept for the next try: nothing recorded is dropped
            self.outbox = events + self.outbox
            print(f"voicechaos: the run's control API did not take {len(events)} events ({exc}); retrying",
                  flush=True)

    # --- worker -> master ---------------------------------------------------------------------------------------------

    def _payload(self) -> dict[str, Any]:
        assert self.engine is not None
        histogram, gc_summary = self._lateness()
        events, self.outbox = self.outbox, []
        return {"index": self.environment.runner.worker_index, "events": events,
                "lateness": lateness_to_json(histogram), "gc": gc_summary, "placed": self.engine.placed,
                # calls whose record is on its way (in this payload or an earlier one), not the engine's own count:
                # a call can end on the engine's thread before its record reaches the outbox, and a master told
                # "every call ended" stops waiting for records
                "ended": self.records_out, "users": self.environment.runner.user_count,
                "clock": [time.monotonic(), time.time()]}

    def _report_to_master(self, client_id: str, data: dict[str, Any], **_: Any) -> None:
        data["voicechaos"] = self._payload()

    def _send_final(self, **_: Any) -> None:
        """Every user has stopped, and each one waited for its call's record: send what is left now."""
        self._settle_calls()
        self.environment.runner.send_message("voicechaos_final", self._payload())

    def _settle_calls(self) -> None:
        """Before this process's last records go out, every call it placed has its record in the outbox: a call
        still in progress (its user killed mid-call, a record slow to come after the hang-up) is hung up and waited
        for, for a bounded time. Otherwise its record would come after the run closed, and the run would lack it."""
        engine = self.engine
        if engine is None or self.records_out >= engine.placed:
            return
        engine.hang_up_all("the load stopped (its process was ending)")
        deadline = time.monotonic() + SETTLE_S
        while self.records_out < engine.placed and time.monotonic() < deadline:
            gevent.sleep(0.1)
        if self.records_out < engine.placed:
            print(f"voicechaos: {engine.placed - self.records_out} call(s) had no record {SETTLE_S:g} s after "
                  "their hang-up; they are not in the run", flush=True)

    def _on_worker_report(self, client_id: str, data: dict[str, Any], **_: Any) -> None:
        if "voicechaos" in data:
            self._receive(client_id, data["voicechaos"], final=False)

    def _on_worker_final(self, environment: Environment, msg: Any, **_: Any) -> None:
        self._receive(msg.node_id, msg.data, final=True)

    def _receive(self, worker_id: str, payload: dict[str, Any], *, final: bool) -> None:
        view = self.workers.setdefault(worker_id, WorkerView())
        worker_mono, worker_wall = payload["clock"]
        offset = (worker_mono - worker_wall) - (time.monotonic() - time.time())
        if view.clock_offset is None or abs(offset) < abs(view.clock_offset):
            view.clock_offset = offset
        view.index = payload["index"]
        name_of_worker = f"worker {view.index}"
        for name, fields in payload["events"]:
            if abs(view.clock_offset) > 0.05:  # another host: its monotonic clock is not ours
                _shift_times(name, fields, -view.clock_offset)
            fields = {**fields, "worker": view.index}
            if name in CALL_EVENTS:
                self._observe(name_of_worker, name, fields)
            self.outbox.append((name, fields))
        view.lateness = lateness_from_json(payload["lateness"])
        view.gc = payload["gc"]
        view.placed, view.ended = payload["placed"], payload["ended"]
        assert self.stats is not None
        self.stats.lateness(name_of_worker, payload["lateness"])
        if final:
            view.final_at = time.monotonic()
        if payload.get("users") == 0 and view.placed == view.ended:
            view.idle_at = time.monotonic()

    # --- the run's clock and its end (local, master) ------------------------------------------------------------------

    def _on_test_start(self, **_: Any) -> None:
        if not self.load_started:
            self.load_started = True
            assert self.control is not None
            self.control.load_started()
            if self.stats is not None:
                self.stats.load_started()
        self.tests += 1
        if self.settings.duration_s is not None:
            gevent.spawn(self._time_limit, self.settings.duration_s, self.tests)

    def _time_limit(self, seconds: float, test: int) -> None:
        """Every load stops by itself: a soak ends here (after its calls finished); a test started from the web UI
        is stopped after the longest time it may run."""
        runner = self.environment.runner
        gevent.sleep(seconds)
        if self.tests != test or self.closed:
            return  # that test was stopped and another started: it has its own limit
        if self.settings.mode == "soak":
            print(f"voicechaos: the soak reached its length ({seconds:g} s); letting calls in progress finish",
                  flush=True)
            self.drain()
            runner.quit()
        elif runner.state in (STATE_RUNNING, STATE_SPAWNING):
            print(f"voicechaos: this test reached its time limit ({seconds:g} s); stopping it", flush=True)
            self.drain()

    def drain(self) -> None:
        """Stop the users (each call in progress finishes, up to Locust's stop timeout) and wait until every worker
        has sent its last records.

        A headless master does not stop its runner: in Locust that ends the shape, whose end makes the master quit
        and stop listening to its workers at once. Its shape holds zero users after its end instead, and the master
        waits for every worker to report no users and no call in progress."""
        runner = self.environment.runner
        self.stop_requested_at = time.monotonic()
        soak_master = self.role == "master" and self.settings.mode == "soak"
        if not soak_master and runner.state in (STATE_RUNNING, STATE_SPAWNING):
            runner.stop()
        if self.role != "master":
            return
        limit = time.monotonic() + (self.environment.stop_timeout or 0) + DRAIN_GRACE_S
        while time.monotonic() < limit:
            if all(view.done_since(self.stop_requested_at) for view in self.workers.values()):
                return
            gevent.sleep(0.2)
        late = [f"worker {v.index}" for v in self.workers.values() if not v.done_since(self.stop_requested_at)]
        print(f"voicechaos: no last records from {', '.join(late)}; their calls in progress are not in the run",
              flush=True)

    def _on_quitting(self, environment: Environment, **_: Any) -> None:
        if self.closed or self.control is None:
            return
        if self.role == "master":
            if self.load_started and (not self.stop_requested_at or
                                      not all(v.done_since(self.stop_requested_at) for v in self.workers.values())):
                self.drain()
            merged = LatenessHistogram()
            for view in self.workers.values():
                merged.merge(view.lateness)
            lateness = {**merged.summary_ms(),
                        "workers": {f"worker {v.index}": {**v.lateness.summary_ms(), "gc": v.gc,
                                                          "calls": v.ended}
                                    for v in self.workers.values()}}
        else:
            self.drain()
            self._settle_calls()
            histogram, gc_summary = self._lateness()
            lateness = {**histogram.summary_ms(), "gc": gc_summary}
        self._send_events()
        extra = {"locust": {"role": self.role, "workers": len(self.workers),
                            "calls_by_worker": {f"worker {v.index}": v.ended for v in self.workers.values()}
                            if self.workers else {"local": self.calls_ended}}}
        self.closed = True
        try:
            verdict = self.control.finish(lateness, extra)
        except requests.RequestException as exc:
            print(f"voicechaos: the run could not be closed by its launcher: {exc}", flush=True)
            environment.process_exit_code = EXIT_FAIL
            return
        finally:
            if self.engine is not None:
                self.engine.stop()
        self.exit_code = int(verdict["exit_code"])
        environment.process_exit_code = self.exit_code
        print(f"\nvoicechaos: {verdict['calls']} calls; verdict {str(verdict['verdict']).upper()}: "
              f"{verdict['verdict_reason']}", flush=True)
        print(verdict["report_line"], end="", flush=True)


class RunControlClient:
    """The launcher's run control API (:mod:`harness.load.control`), from greenlets (requests on gevent's sockets).
    Also the Chaos tab's :class:`~harness.load.webui.ChaosControl`."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.http = requests.Session()

    def post_events(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        self.http.post(f"{self.url}/events", json={"events": events}, timeout=60).raise_for_status()

    def load_started(self) -> None:
        self.http.post(f"{self.url}/load-started", timeout=30).raise_for_status()

    def finish(self, lateness: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(f"{self.url}/finish", json={"lateness": lateness, "extra": extra}, timeout=900)
        response.raise_for_status()
        return dict(response.json())

    def dependencies(self) -> list[dict[str, Any]]:
        return list(self._state()["dependencies"])

    def faults(self) -> list[dict[str, Any]]:
        return list(self._state()["faults"])

    def _state(self) -> dict[str, Any]:
        response = self.http.get(f"{self.url}/chaos", timeout=30)
        response.raise_for_status()
        return dict(response.json())

    def apply(self, fault: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(f"{self.url}/chaos/faults", json=fault, timeout=60)
        if response.status_code == 400:
            raise ChaosError(response.json().get("error", "refused"))
        response.raise_for_status()
        return dict(response.json())

    def remove(self, index: int) -> dict[str, Any]:
        response = self.http.delete(f"{self.url}/chaos/faults/{index}", timeout=60)
        if response.status_code == 404:
            raise KeyError(index)
        response.raise_for_status()
        return dict(response.json())


def check_worker_dials(dials: list[Dial], *, master_host: str, allow_remote: bool) -> None:
    """A worker calls the master's target: refused off loopback without ``--allow-remote``, and refused on loopback
    when the master is on another machine (its loopback is not this one's: the call would reach whatever listens
    here)."""
    for dial in dials:
        url = dial.webhook_url or dial.websocket_url or dial.offer_url or ""
        check_target(url, allow_remote=allow_remote, what="the master's target")
        if is_loopback_host(urlsplit(url).hostname or "") and not is_loopback_host(master_host):
            raise UnsafeTargetError(
                f"the master's target {url!r} is on the master's own loopback; this worker runs on another machine "
                f"(master {master_host}) and would call its own. Point the scenario at a `webhook:` or `websocket:` "
                "target both machines reach (README: workers on several machines)")


def _shift_times(name: str, fields: dict[str, Any], delta: float) -> None:
    def shift(turn: dict[str, Any]) -> None:
        for key in _TURN_TIMES:
            if turn.get(key) is not None:
                turn[key] = turn[key] + delta

    if name == "turn":
        shift(fields)
    elif name == "call_ended":
        for turn in fields.get("turns", []):
            shift(turn)


def _calls_by_worker(calls: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for call in calls:
        key = f"worker {call['worker']}" if "worker" in call else "local"
        counts[key] = counts.get(key, 0) + 1
    return counts


def _waited_ms(turn: dict[str, Any]) -> float:
    """How long the caller waited for a reply it never got: from the end of its speech to the turn's close."""
    closed, since = turn.get("closed_at"), turn.get("listen_from")
    return max(0.0, (closed - since) * 1000) if closed is not None and since is not None else 0.0


def _fire_requests(environment: Environment, name: str, fields: dict[str, Any], *, dead_air_ms: float) -> None:
    """One Locust request per connect, per turn (latency and longest silence) and per call; never per frame.

    A request that failed carries the time it took to fail (a turn with no reply: the caller's wait until it gave
    up; a connect that failed: the call's time until then), as Locust does for an HTTP timeout, so that failures
    lengthen Locust's percentiles instead of shortening them with zeros."""
    fire = environment.events.request.fire
    if name == "call_connected":
        fire(request_type="WS", name="connect", response_time=fields.get("connect_ms") or 0.0, response_length=0,
             exception=None, context={})
    elif name == "turn":
        status = fields.get("status")
        kind = fields.get("kind", "reply")
        latency = fields.get("response_latency_ms")
        fire(request_type="TURN", name=f"{kind} latency",
             response_time=latency if latency is not None else _waited_ms(fields),
             response_length=len(fields.get("heard") or []), context={},
             exception=None if status == "ok" else CallFailed(f"{kind} turn {status}"))
        if fields.get("first_audio_at") is not None:
            gap = fields.get("max_gap_ms") or 0.0
            fire(request_type="AUDIO", name="max silence gap", response_time=gap, response_length=0, context={},
                 exception=CallFailed(f"dead air over {dead_air_ms:g} ms") if gap > dead_air_ms else None)
    elif name == "call_ended":
        outcome = fields.get("outcome")
        call_ms = (fields.get("duration_s") or 0.0) * 1000
        if fields.get("connect_ms") is None:
            fire(request_type="WS", name="connect", response_time=call_ms, response_length=0, context={},
                 exception=CallFailed(f"{outcome}: {str(fields.get('reason', ''))[:80]}"))
        fire(request_type="CALL", name="call", response_time=call_ms,
             response_length=len(fields.get("turns") or []), context={},
             exception=None if outcome == Outcome.COMPLETED else
             CallFailed(f"{outcome}: {str(fields.get('reason', ''))[:80]}"))
