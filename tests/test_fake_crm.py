"""The fake CRM / calendar / workflow API: the canned tools (pure), the routes the reference runtime's seams
call (driven by its own ``HttpWorkflowClient`` and ``HttpToolRunner``), latency and failures through the
``/_chaos`` API, and the request log a report measures failure rate and delivery latency from."""

from __future__ import annotations

import json
import random
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from fake_providers import CrmConfig, create_crm_app, gate_of, serve_app
from fake_providers.crm import request_log_of
from fake_providers.crm_tools import CANNED_TOOLS, book_appointment, check_calendar, lookup_customer
from harness.clock import ManualClock
from reference_runtime.dialog import ToolCall, WorkflowEvent
from reference_runtime.tools import HttpToolRunner
from reference_runtime.workflow import CallContext, HttpWorkflowClient, WorkflowError

FAST = {"workflow_latency": 0.0, "tool_latency": 0.0}
CALL = CallContext(call_sid="CA123", stream_sid="MZ456", caller="+15550001111")


# -- the canned tools ----------------------------------------------------------------------------------------


def test_canned_tools_are_plausible_and_deterministic() -> None:
    customer = lookup_customer({"phone": "+15550001111"}, "CA1")
    assert customer["found"] is True and customer["customer"]["phone"] == "+15550001111"
    assert customer == lookup_customer({"phone": "+15550001111"}, "CA2"), "keyed by phone, not by call"
    assert customer != lookup_customer({"phone": "+15550002222"}, "CA1")
    slots = check_calendar({"day": "Tuesday"}, "CA1")
    assert slots["day"] == "Tuesday" and 3 <= len(slots["slots"]) <= 5 and slots["available"] is True
    assert check_calendar({"date": "tuesday"}, "CA9") | {"day": "Tuesday"} == slots, "any case, any call"
    booking = book_appointment({"day": "Tuesday", "time": "10:00", "name": "Ann"}, "CA1")
    assert booking["booked"] is True and booking["time"] == "10:00" and booking["confirmation"].startswith("APT-")
    assert book_appointment({"day": "Tuesday"}, "CA1")["time"] == slots["slots"][0], "no time: the first slot"
    assert CANNED_TOOLS["crm_lookup"] is lookup_customer and CANNED_TOOLS["check_availability"] is check_calendar


# -- the routes, through the runtime's own clients -----------------------------------------------------------


@pytest.fixture
async def crm() -> AsyncIterator[tuple[str, web.Application]]:
    app = create_crm_app(CrmConfig.model_validate({**FAST, "results": {"transfer_call": {"transferred": True}}}))
    async with serve_app(app) as url:
        yield url, app


async def test_runtime_workflow_client_and_tool_runner_against_the_fake(crm: tuple[str, web.Application]) -> None:
    url, app = crm
    async with aiohttp.ClientSession() as session:
        workflow = HttpWorkflowClient(f"{url}/workflow/events", session, timeout_s=5)
        await workflow.emit(WorkflowEvent("appointment_booked", "book", {"caller_said": "ten is fine"}), CALL)
        runner = HttpToolRunner(f"{url}/tools", session, timeout_s=5)
        call = ToolCall("call_1", "book_appointment", json.dumps({"day": "Tuesday", "time": "10:00"}))
        result = json.loads((await runner.run(call, CALL)).content)
        assert result["booked"] is True and result["day"] == "Tuesday" and result["time"] == "10:00"
        fixed = await runner.run(ToolCall("call_2", "transfer_call", "{}"), CALL)
        assert json.loads(fixed.content) == {"transferred": True}
        unknown = json.loads((await runner.run(ToolCall("call_3", "launch_rocket", "{}"), CALL)).content)
        assert unknown["error"] == "HTTP 404" and "launch_rocket" in unknown["detail"]
        async with session.post(f"{url}/tools/check_calendar", json={"arguments": {"day": "Friday"}}) as r:
            assert r.status == 200 and (await r.json())["day"] == "Friday"
        async with session.get(f"{url}/tools") as r:
            assert {"book_appointment", "check_calendar", "lookup_customer", "transfer_call"} <= set(
                (await r.json())["tools"]
            )
        async with session.post(f"{url}/workflow/events", json={"objective": "x"}) as r:
            assert r.status == 400 and "event: Field required" in (await r.json())["error"]["message"]
    log = request_log_of(app)
    assert log.by_route["workflow"] == 2 and log.by_route["tools.book_appointment"] == 1
    first = log.kept()[0]
    assert first.body == {
        "event": "appointment_booked",
        "objective": "book",
        "data": {"caller_said": "ten is fine"},
        "call_sid": "CA123",
        "stream_sid": "MZ456",
        "caller": "+15550001111",
    }
    assert first.status == 200 and first.route == "workflow"


async def test_failures_and_latency_through_the_control_api(crm: tuple[str, web.Application]) -> None:
    url, app = crm
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{url}/_chaos/faults", json={"kind": "error", "status": 503, "route": "workflow", "id": "down"}
        ) as r:
            assert r.status == 201
        async with session.post(
            f"{url}/_chaos/faults",
            json={"kind": "slow_first_byte", "delay_ms": 400, "max_delay_ms": 600, "route": "tools.check_calendar"},
        ) as r:
            assert r.status == 201
        workflow = HttpWorkflowClient(f"{url}/workflow/events", session, timeout_s=5)
        with pytest.raises(WorkflowError, match="HTTP 503"):
            await workflow.emit(WorkflowEvent("appointment_booked", "book", {}), CALL)
        runner = HttpToolRunner(f"{url}/tools", session, timeout_s=5)
        started = time.monotonic()
        slow = json.loads((await runner.run(ToolCall("c1", "check_calendar", "{}"), CALL)).content)
        assert time.monotonic() - started >= 0.35 and slow["slots"]
        started = time.monotonic()
        await runner.run(ToolCall("c2", "lookup_customer", "{}"), CALL)
        assert time.monotonic() - started < 0.35, "only check_calendar is slow"
        async with session.get(f"{url}/_chaos/requests?route=tools") as r:
            report = await r.json()
        async with session.get(f"{url}/_chaos/stats") as r:
            stats = await r.json()
    assert report["by_status"] == {"200": 2, "503": 1}
    assert report["by_route_status"]["workflow"] == {"503": 1}
    assert [e["route"] for e in report["requests"]] == ["tools.check_calendar", "tools.lookup_customer"]
    slow_entry = report["requests"][0]
    assert slow_entry["latency_ms"] >= 350 and slow_entry["faults"] == ["slow_first_byte-1"]
    assert stats["faults_applied"] == {"down": 1, "slow_first_byte-1": 1}
    assert gate_of(app).counters.refused_by_status == {503: 1}


async def test_configured_latency_distribution_and_failure_rate() -> None:
    config = CrmConfig.model_validate(
        {
            "workflow_latency": {"kind": "uniform", "low": 0.2, "high": 0.3},
            "faults": [{"kind": "error", "probability": 0.3, "route": "workflow"}],
        }
    )
    app = create_crm_app(config, rng=random.Random(5))
    async with serve_app(app) as url, aiohttp.ClientSession() as session:
        statuses = []
        for i in range(20):
            async with session.post(f"{url}/workflow/events", json={"event": f"e{i}", "call_sid": "CA1"}) as r:
                statuses.append(r.status)
    log = request_log_of(app)
    failures = statuses.count(500)
    assert 0 < failures < 20 and statuses.count(200) == 20 - failures
    assert log.by_status == {200: 20 - failures, 500: failures}
    served = [e for e in log.kept() if e.status == 200]
    assert all(e.latency_ms >= 190 for e in served), "drawn from 0.2-0.3 s"
    assert all(e.latency_ms < 100 for e in log.kept() if e.status == 500), "a refusal is answered at once"


async def test_request_log_is_bounded_and_timestamped() -> None:
    clock = ManualClock(1000.0)
    app = create_crm_app(CrmConfig.model_validate({**FAST, "keep_last": 3}), clock=clock, wall=lambda: 1.7e9)
    async with serve_app(app) as url, aiohttp.ClientSession() as session:
        for i in range(5):
            clock.advance(1.0)
            async with session.post(f"{url}/workflow/events", json={"event": f"e{i}"}) as r:
                assert r.status == 200
        async with session.post(f"{url}/workflow/events", data=b"not json") as r:
            assert r.status == 400
        async with session.get(f"{url}/_chaos/requests") as r:
            everything = await r.json()
        async with session.get(f"{url}/_chaos/requests?since=5") as r:
            after = await r.json()
        async with session.get(f"{url}/_chaos/requests?since=x") as r:
            assert r.status == 400
        async with session.delete(f"{url}/_chaos/requests") as r:
            assert await r.json() == {"forgotten": 3, "total": 6}
        async with session.get(f"{url}/_chaos/requests") as r:
            emptied = await r.json()
    assert everything["total"] == 6 and everything["kept"] == 3
    assert everything["by_route"] == {"workflow": 6} and everything["by_status"] == {"200": 5, "400": 1}
    assert [e["seq"] for e in everything["requests"]] == [4, 5, 6]
    assert [e["body"] for e in everything["requests"]] == [{"event": "e3"}, {"event": "e4"}, "not json"]
    assert [e["received_monotonic"] for e in everything["requests"]] == [1004.0, 1005.0, 1005.0]
    assert everything["requests"][0]["received_wall"] == 1.7e9
    assert [e["seq"] for e in after["requests"]] == [6]
    assert emptied["total"] == 6 and emptied["requests"] == [], "counts are kept for ever"
