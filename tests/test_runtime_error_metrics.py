"""What the chaos layer reads in the runtime's ``/metrics``: provider refusals counted by the client that got them
(``runtime_provider_errors_total{service,provider,reason}``, reason ``http_<status>`` for an HTTP refusal),
and workflow and tool failures counted at their seams during a real call, while the call itself carries on.

The providers here are the runtime's own clients, built by the app from its config and reporting to its metrics,
against a stand-in that refuses every request. Nothing sleeps: each wait is on a response or on the call's end.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from harness.audio.formats import AudioFormat
from reference_runtime.app import RUNTIME
from reference_runtime.call import tool_failed
from reference_runtime.dialog import ChatMessage, LlmRequest, ToolCall, ToolResult
from reference_runtime.providers.base import ProviderError, Providers
from tests.test_runtime_app import running
from tests.test_runtime_call import GOODBYE, TwilioSide, metric, serving
from tests.test_runtime_recording_s3 import config_built_stack

PCM_8K = AudioFormat("linear16", 8000)
MULAW_8K = AudioFormat("mulaw", 8000)


def refusing_everything(status: int) -> web.Application:
    """A provider host whose every route (the Deepgram listen handshake included) answers ``status`` with the
    provider's usual JSON error body."""

    async def refuse(request: web.Request) -> web.Response:
        body = {"err_code": "TOO_MANY_REQUESTS" if status == 429 else "INTERNAL", "err_msg": f"status {status}"}
        return web.json_response(body, status=status, headers={"retry-after": "1"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    return app


@asynccontextmanager
async def runtime_against(status: int, *, tts_kind: str) -> AsyncIterator[tuple[str, Providers, Any]]:
    """The runtime app (its providers built from config, reporting to its metrics) pointed at a refusing host."""
    async with serving(refusing_everything(status)) as refusing:
        providers = {
            "stt": {"kind": "deepgram", "base_url": refusing},
            "llm": {"kind": "openai", "base_url": refusing, "timeout_s": 5},
            "tts": {"kind": tts_kind, "base_url": refusing},
        }
        async with running(providers=providers) as (url, app, http):
            built = app[RUNTIME].providers
            assert built is not None
            yield url, built, http


def total(text: str, name: str) -> float:
    """The sum of every sample of ``name``, whatever its labels (a double count would show here)."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


async def metrics_text(url: str, http: Any) -> str:
    async with http.get(f"{url}/metrics") as response:
        assert response.status == 200
        return await response.text()


@pytest.mark.parametrize("status", [429, 503])
async def test_an_stt_handshake_refusal_is_counted_with_its_status(status: int) -> None:
    async with runtime_against(status, tts_kind="elevenlabs") as (url, providers, http):
        with pytest.raises(ProviderError) as caught:
            await providers.stt.open_stream(PCM_8K, call_id="call-1")
        text = await metrics_text(url, http)
    assert caught.value.status == status
    assert metric(text, "runtime_provider_errors_total", service="stt", provider="deepgram",
                  reason=f"http_{status}") == 1.0
    assert total(text, "runtime_provider_errors_total") == 1.0


@pytest.mark.parametrize("status", [429, 500])
async def test_an_llm_refusal_is_counted_with_its_status(status: int) -> None:
    request = LlmRequest((ChatMessage("system", "Objective: ask. Ask."), ChatMessage("user", "hi")))
    async with runtime_against(status, tts_kind="elevenlabs") as (url, providers, http):
        for _ in range(2):  # two turns refused: two counts (no hidden retries in the client)
            with pytest.raises(ProviderError) as caught:
                async for _chunk in providers.llm.stream(request):
                    pass
        text = await metrics_text(url, http)
    assert caught.value.status == status
    assert metric(text, "runtime_provider_errors_total", service="llm", provider="openai",
                  reason=f"http_{status}") == 2.0
    assert total(text, "runtime_provider_errors_total") == 2.0


@pytest.mark.parametrize(
    ("tts_kind", "provider", "status"),
    [("elevenlabs", "elevenlabs", 429), ("elevenlabs", "elevenlabs", 500), ("deepgram", "deepgram-aura", 503)],
)
async def test_a_tts_refusal_is_counted_with_its_status(tts_kind: str, provider: str, status: int) -> None:
    async with runtime_against(status, tts_kind=tts_kind) as (url, providers, http):
        with pytest.raises(ProviderError) as caught:
            async for _chunk in providers.tts.synthesize("Hello there.", MULAW_8K):
                pass
        text = await metrics_text(url, http)
    assert caught.value.status == status
    assert metric(text, "runtime_provider_errors_total", service="tts", provider=provider,
                  reason=f"http_{status}") == 1.0
    assert total(text, "runtime_provider_errors_total") == 1.0  # one refusal, one count


def test_a_tool_result_is_a_failure_when_the_runner_answered_an_error_object() -> None:
    call = ToolCall(id="call_1", name="book_appointment", arguments="{}")
    assert tool_failed(ToolResult(call, json.dumps({"error": "HTTP 503", "detail": "down"})))
    assert not tool_failed(ToolResult(call, json.dumps({"booked": True})))
    assert not tool_failed(ToolResult(call, json.dumps(["error"])))  # not an object: the tool's own data
    assert not tool_failed(ToolResult(call, "not json"))


@asynccontextmanager
async def failing_backend(status: int) -> AsyncIterator[tuple[str, list[str]]]:
    """A CRM/calendar stand-in that answers every workflow event and tool call with ``status``; records paths."""
    seen: list[str] = []

    async def fail(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.json_response({"error": "backend down"}, status=status)

    app = web.Application()
    app.router.add_post("/{tail:.*}", fail)
    async with serving(app) as url:
        yield url, seen


async def test_workflow_and_tool_failures_are_counted_and_the_call_still_completes() -> None:
    async with failing_backend(503) as (backend, seen):
        overrides = {
            "workflow": {"url": f"{backend}/events", "timeout_s": 5},
            "tools": {"url": f"{backend}/tools", "timeout_s": 5},
            # today's way, one attempt inside the turn (the fixed workflow worker retries in the background:
            # tests/test_runtime_workflows.py)
            "safeguards": {"workflows": "broken"},
        }
        async with config_built_stack(**overrides) as s:
            caller = await TwilioSide.dial(s)
            await caller.listen(sentences=2)
            await caller.say("I would like an appointment.")
            await caller.listen(sentences=1)
            await caller.say("Tuesday please.")
            await caller.listen(sentences=3)
            await caller.say("Yes, book it.")
            final = await caller.listen(sentences=2)  # the LLM talks about the tool's result, then goodbye
            assert await caller.hung_up_by_server() == (1000, "call completed")
            await s.idle()
            text = await s.metrics()
    assert final.texts[-1:] == [GOODBYE]
    assert sorted(seen) == ["/events", "/tools"]
    assert metric(text, "runtime_workflow_events_total", outcome="failed") == 1.0
    assert metric(text, "runtime_tool_calls_total", tool="book_appointment", outcome="error") == 1.0
    assert metric(text, "runtime_calls_total", outcome="completed") == 1.0
