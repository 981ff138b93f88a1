"""Safeguard 3, workflows (incident 3, Voiceflow): broken = the turn awaits the CRM/calendar call (dead air for
its whole latency); fixed = the turn emits an event into the workflow worker's queue and keeps talking, the
worker delivers it with retries and backoff behind a breaker, and a workflow failure never reaches the caller.

The worker tests run on a manual clock with a virtual sleep (backoff moves the clock, nothing waits); the turn
tests drive one call of a real runtime (tests/test_runtime_tools_kit.py), where the workflow API is a gate the
test opens.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import pytest

from harness.clock import ManualClock, MonotonicClock
from reference_runtime.app import RUNTIME
from reference_runtime.breaker import BreakerState
from reference_runtime.dialog import WorkflowEvent
from reference_runtime.metrics import RuntimeMetrics
from reference_runtime.workflow import CallContext, WorkflowError, WorkflowWorker
from tests.test_runtime_tools_kit import (
    CallDriver,
    Gate,
    GatedWorkflow,
    ScriptedLlm,
    agent_config,
    call_of,
    crm_stack,
    listen_timed,
)

AGENT = "dental-workflows"
EVENT = WorkflowEvent("appointment_booked", "book", {"caller_said": "yes"})
CONTEXT = CallContext(call_sid="CA1", stream_sid="MZ1", caller="+15550001111")
#: the CRM's latency: the incident's 1-3 s
CRM_S = 1.5
CONFIRM = ["Tuesday at ten is free.", "Shall I book it?"]


def metrics() -> RuntimeMetrics:
    return RuntimeMetrics(active_calls=lambda: 0.0, capacity=lambda: 1.0, ready=lambda: 1.0)


def sample(m: RuntimeMetrics, name: str, **labels: str) -> float:
    value = m.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


class VirtualSleep:
    """The worker's backoff on the manual clock: each wait moves the clock and is recorded."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(seconds)


class ScriptedApi:
    """A WorkflowClient answering from a list: ``None`` delivers, a reason raises ``WorkflowError`` (then it
    delivers); each attempt takes ``latency_s`` on the clock."""

    def __init__(self, clock: ManualClock, outcomes: list[str | None], latency_s: float = 0.0) -> None:
        self.clock = clock
        self.outcomes = list(outcomes)
        self.latency_s = latency_s
        self.attempts = 0
        self.delivered: list[WorkflowEvent] = []

    async def emit(self, event: WorkflowEvent, call: CallContext) -> None:
        self.attempts += 1
        self.clock.advance(self.latency_s)
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome == "crash":
            raise RuntimeError("a client breaking its contract")
        if outcome is not None:
            raise WorkflowError(f"failed: {outcome}", reason=outcome)
        self.delivered.append(event)


def worker(client: Any, clock: ManualClock, m: RuntimeMetrics, **settings: Any) -> WorkflowWorker:
    return WorkflowWorker(client, clock=clock, observer=m, sleep=VirtualSleep(clock), **settings)


# --- the worker -------------------------------------------------------------------------------------------------


async def test_emit_only_enqueues_and_the_worker_delivers_in_the_background() -> None:
    clock, m = ManualClock(), metrics()
    gate = Gate(clock, CRM_S)
    api = GatedWorkflow(gate)
    w = worker(api, clock, m)
    w.start()
    assert w.emit(EVENT, CONTEXT)
    assert gate.calls == 0  # emission did no I/O: the API is called later, by the worker's task
    assert sample(m, "runtime_workflow_queue_depth") == 1
    await gate.wait_entered()
    assert (sample(m, "runtime_workflow_queue_depth"), sample(m, "runtime_workflow_in_flight")) == (0, 1)
    gate.open()
    await w.join()
    assert api.delivered == [(EVENT, CONTEXT)]
    assert sample(m, "runtime_workflow_events_total", outcome="ok") == 1
    assert sample(m, "runtime_workflow_delivery_seconds_sum", outcome="ok") == pytest.approx(CRM_S)
    assert sample(m, "runtime_workflow_in_flight") == 0
    assert await w.stop(1.0) == 0


async def test_failed_attempts_are_retried_with_doubling_backoff_until_delivered() -> None:
    clock, m = ManualClock(), metrics()
    api = ScriptedApi(clock, ["http_503", "timeout", "connection", None], latency_s=0.1)
    w = worker(api, clock, m, backoff_s=0.5, backoff_max_s=1.5)
    w.start()
    w.emit(EVENT, CONTEXT)
    await w.join()
    assert w._sleep.waits == [0.5, 1.0, 1.5]  # type: ignore[attr-defined]
    assert api.delivered == [EVENT]
    assert sample(m, "runtime_workflow_retries_total") == 3
    for reason in ("http_503", "timeout", "connection"):
        assert sample(m, "runtime_workflow_attempt_failures_total", reason=reason) == 1
    assert (sample(m, "runtime_workflow_events_total", outcome="ok"), sample(m, "runtime_workflow_events_total",
                                                                               outcome="failed")) == (1, 0)
    # emitted -> delivered: four attempts of 0.1 s and three waits
    assert sample(m, "runtime_workflow_delivery_seconds_sum", outcome="ok") == pytest.approx(0.4 + 3.0)
    await w.stop(1.0)


async def test_an_event_is_given_up_after_its_last_attempt_and_the_open_breaker_spares_the_api() -> None:
    clock, m = ManualClock(), metrics()
    api = ScriptedApi(clock, ["http_503"] * 10)
    w = worker(api, clock, m, max_attempts=4, backoff_s=0.5, breaker_failures=2, breaker_reset_s=60.0)
    w.start()
    w.emit(EVENT, CONTEXT)
    await w.join()
    assert api.attempts == 2  # the breaker opened after two failures: attempts 3 and 4 made no request
    assert sample(m, "runtime_workflow_attempt_failures_total", reason="http_503") == 2
    assert sample(m, "runtime_workflow_attempt_failures_total", reason="breaker_open") == 2
    assert sample(m, "runtime_workflow_events_total", outcome="failed") == 1
    assert sample(m, "runtime_workflow_delivery_seconds_count", outcome="failed") == 1
    assert (sample(m, "runtime_workflow_breaker_open"), sample(m, "runtime_workflow_breaker_trips_total")) == (1, 1)

    # later, the API is back: the breaker's trial request goes through and closes it
    clock.advance(60.0)
    api.outcomes.clear()
    w.emit(EVENT, CONTEXT)
    await w.join()
    assert api.delivered == [EVENT] and w.breaker.state is BreakerState.CLOSED
    assert sample(m, "runtime_workflow_breaker_open") == 0
    await w.stop(1.0)


async def test_a_client_that_raises_anything_else_fails_that_event_only() -> None:
    clock, m = ManualClock(), metrics()
    api = ScriptedApi(clock, ["crash"])
    w = worker(api, clock, m, max_attempts=3)
    w.start()
    w.emit(EVENT, CONTEXT)
    w.emit(EVENT, CONTEXT)
    await w.join()
    assert api.delivered == [EVENT]
    assert sample(m, "runtime_workflow_events_total", outcome="failed") == 1
    assert sample(m, "runtime_workflow_attempt_failures_total", reason="error") == 1
    await w.stop(1.0)


async def test_a_full_queue_drops_the_new_event_and_counts_it() -> None:
    clock, m = ManualClock(), metrics()
    w = worker(ScriptedApi(clock, []), clock, m, queue_size=2)  # not started: nothing is taken off the queue
    assert [w.emit(EVENT, CONTEXT) for _ in range(3)] == [True, True, False]
    assert sample(m, "runtime_workflow_dropped_total", reason="queue_full") == 1
    assert sample(m, "runtime_workflow_queue_depth") == 2


async def test_shutdown_delivers_what_is_queued_within_the_timeout() -> None:
    clock, m = ManualClock(), metrics()
    api = ScriptedApi(clock, [], latency_s=0.2)
    w = worker(api, clock, m, concurrency=2)
    w.start()
    for _ in range(5):
        w.emit(EVENT, CONTEXT)
    assert await w.stop(5.0) == 0
    assert len(api.delivered) == 5
    assert sample(m, "runtime_workflow_dropped_total", reason="shutdown") == 0


async def test_shutdown_counts_and_reports_the_events_it_could_not_deliver() -> None:
    clock, m = ManualClock(), metrics()
    gate = Gate(clock, CRM_S)  # never opened: the API hangs
    w = worker(GatedWorkflow(gate), clock, m, concurrency=1)
    w.start()
    w.emit(EVENT, CONTEXT)
    w.emit(EVENT, CONTEXT)
    await gate.wait_entered()
    assert await w.stop(0.0) == 2  # one in flight, one queued
    assert sample(m, "runtime_workflow_dropped_total", reason="shutdown") == 2
    assert not w.emit(EVENT, CONTEXT)  # stopped: refused, and counted
    assert sample(m, "runtime_workflow_dropped_total", reason="shutdown") == 3
    assert (sample(m, "runtime_workflow_queue_depth"), sample(m, "runtime_workflow_in_flight")) == (0, 0)


async def test_emission_p95_is_far_under_10_ms_on_the_real_clock() -> None:
    w = WorkflowWorker(ScriptedApi(ManualClock(), []), clock=MonotonicClock(), observer=metrics(), queue_size=5000)
    took = []
    for _ in range(2000):
        started = time.perf_counter()
        w.emit(EVENT, CONTEXT)
        took.append(time.perf_counter() - started)
    assert statistics.quantiles(took, n=20)[-1] < 0.010  # the mission's target; it is microseconds


# --- the turn -----------------------------------------------------------------------------------------------------


def workflow_config(mode: str, **workflow: Any) -> Any:
    return agent_config(AGENT, safeguards={"workflows": mode}, workflow=workflow)


async def details_turn(driver: CallDriver) -> tuple[int, float]:
    """The caller asks for a cleaning (no event), then gives the day: the ``confirm`` turn emits
    ``caller_details_captured``. Returns (sentences heard before that turn, its start)."""
    await driver.say_and_wait("I would like a cleaning.")
    heard, started = len(driver.link.heard), driver.clock.now()
    driver.caller_says("Tuesday morning would be great.")
    return heard, started


async def test_broken_the_reply_waits_for_the_workflow_api() -> None:
    clock = ManualClock()
    gate = Gate(clock, CRM_S)
    llm = ScriptedLlm.of_agent(AGENT)
    async with call_of(workflow_config("broken"), llm, clock=clock, workflow=GatedWorkflow(gate)) as d:
        heard, started = await details_turn(d)
        await gate.wait_entered()
        asked = len(llm.requests)
        gate.open()
        await d.turn_done()
        assert len(llm.requests) == asked + 1  # the LLM was asked only once the CRM had answered
        reply = d.link.heard[heard:]
        assert [h.text for h in reply] == CONFIRM
        assert reply[0].at - started == pytest.approx(CRM_S)  # dead air: the CRM's whole latency
        assert d.sample("runtime_workflow_emit_seconds_sum") == pytest.approx(CRM_S)
        assert d.sample("runtime_workflow_events_total", outcome="ok") == 1


async def test_fixed_the_reply_is_spoken_while_the_workflow_api_is_still_busy() -> None:
    clock = ManualClock()
    gate = Gate(clock, CRM_S)
    api = GatedWorkflow(gate)
    async with call_of(workflow_config("fixed"), ScriptedLlm.of_agent(AGENT), clock=clock, workflow=api) as d:
        heard, started = await details_turn(d)
        await d.turn_done()  # the whole reply, with the CRM still working on the event
        await gate.wait_entered()
        assert api.delivered == []
        reply = d.link.heard[heard:]
        assert [h.text for h in reply] == CONFIRM and reply[0].at == started
        assert d.sample("runtime_workflow_emit_seconds_count") == 1
        assert d.sample("runtime_workflow_emit_seconds_bucket", le="0.01") == 1  # emission under 10 ms

        gate.open()
        assert d.runtime.workflow_worker is not None
        await d.runtime.workflow_worker.join()
        assert [(e.name, c.caller) for e, c in api.delivered] == [("caller_details_captured", "+15550001111")]
        assert d.sample("runtime_workflow_events_total", outcome="ok") == 1
        assert d.sample("runtime_workflow_delivery_seconds_sum", outcome="ok") == pytest.approx(CRM_S)


@pytest.mark.parametrize("reason", ["http_503", "timeout"])
async def test_fixed_a_failing_workflow_api_changes_nothing_the_caller_hears(reason: str) -> None:
    heard: dict[str, list[str]] = {}
    for case, failures in (("healthy", 0), ("failing", 99)):
        clock = ManualClock()
        gate = Gate(clock, CRM_S)
        gate.open()
        api = GatedWorkflow(gate, failures=failures, reason=reason)
        config = workflow_config(
            "fixed", max_attempts=3, retry_backoff_s=0.001, breaker={"failure_threshold": 100}
        )
        async with call_of(config, ScriptedLlm.of_agent(AGENT), clock=clock, workflow=api) as d:
            await details_turn(d)
            await d.turn_done()
            await d.say_and_wait("Yes, please.")  # the book turn: appointment_booked, then goodbye
            assert d.runtime.workflow_worker is not None
            await d.runtime.workflow_worker.join()
            heard[case] = d.texts()
            if case == "failing":
                assert api.attempts == 6
                assert d.sample("runtime_workflow_events_total", outcome="failed") == 2
                assert d.sample("runtime_workflow_retries_total") == 4
                assert d.sample("runtime_workflow_attempt_failures_total", reason=reason) == 6
            else:
                assert d.sample("runtime_workflow_events_total", outcome="ok") == 2
    assert heard["failing"] == heard["healthy"]
    assert heard["healthy"][-2:] == ["You are booked for Tuesday at ten.", "Thanks for calling Acme Dental. Goodbye!"]


async def test_fixed_at_shutdown_the_events_the_api_never_took_are_counted_dropped() -> None:
    clock = ManualClock()
    gate = Gate(clock, CRM_S)  # never opened: the CRM hangs
    config = workflow_config("fixed", drain_timeout_s=0.05)
    async with call_of(config, ScriptedLlm.of_agent(AGENT), clock=clock, workflow=GatedWorkflow(gate)) as d:
        await details_turn(d)
        await d.turn_done()
        await gate.wait_entered()
        runtime = d.runtime
    # the app has shut down (the kit cleans its runner up): the worker gave the event its drain time, then gave up
    m = runtime.metrics
    assert sample(m, "runtime_workflow_dropped_total", reason="shutdown") == 1
    assert sample(m, "runtime_workflow_events_total", outcome="ok") == 0
    assert (sample(m, "runtime_workflow_queue_depth"), sample(m, "runtime_workflow_in_flight")) == (0, 0)


# --- end to end: the fake CRM behind HTTP, through create_app ---------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["broken", "fixed"])
async def test_end_to_end_slow_crm_the_reply_waits_when_broken_and_not_when_fixed(mode: str) -> None:
    async with crm_stack(AGENT, safeguards={"workflows": mode}, crm={"workflow_latency": 2.0}) as s:
        caller = await s.dial()
        await listen_timed(caller, sentences=2)  # the greeting
        await caller.say("I would like a cleaning.")
        await listen_timed(caller, sentences=2)
        await caller.say("Tuesday morning would be great.")
        reply = await listen_timed(caller, sentences=2)
        workflow_worker = s.app[RUNTIME].workflow_worker
        assert workflow_worker is not None
        await workflow_worker.join()
        answered = s.crm_answered("workflow")
        await caller.hang_up()
        await s.idle()
        delivered = s.sample("runtime_workflow_events_total", outcome="ok")
        emitted = s.sample("runtime_workflow_emit_seconds_sum")
    assert [text for _, text in reply] == CONFIRM
    assert len(answered) == 1 and delivered == 1
    if mode == "broken":
        assert reply[0][0] > answered[0]  # the caller heard nothing until the CRM had answered
        assert emitted >= 2.0
    else:
        assert reply[0][0] < answered[0]  # the reply while the CRM was still working
        assert emitted < 0.010
