"""Safeguard 4 end to end: calls through the runtime against the fake providers, the primary of one role refused
(429/503 through the fakes' fault machinery) or dropped mid-call, with a fallback of another API family (Anthropic
for OpenAI, AssemblyAI for Deepgram, Deepgram Aura for ElevenLabs). Fixed: the call goes on and the caller hears
the reply; broken: the incident (silence, or the call closed). Waits are on messages and events, never sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from fake_providers import (
    AnthropicConfig,
    AssemblyAIConfig,
    DeepgramConfig,
    ElevenLabsConfig,
    OpenAIConfig,
    create_anthropic_app,
    create_assemblyai_app,
    create_deepgram_app,
    create_elevenlabs_app,
    create_openai_app,
    gate_of,
    serve_app,
)
from reference_runtime.app import create_app
from reference_runtime.config import parse_config
from reference_runtime.tools import StaticToolRunner
from reference_runtime.workflow import LoggingWorkflowClient
from tests.in_process import with_pytest_memory
from tests.test_runtime_call import (
    FAST,
    GOODBYE,
    GREETING,
    OBJECTIVES,
    SCRIPT,
    STEP_TIMEOUT_S,
    RecordingBox,
    Stack,
    TwilioSide,
    decode,
    errors_reported,
    metric,
)

pytestmark = pytest.mark.e2e

GREETING_HEARD = ["Hello, this is the clinic.", "How can I help?"]


@asynccontextmanager
async def fallback_stack(
    mode: str, *, faults: dict[str, list[dict[str, Any]]] | None = None, threshold: int = 3
) -> AsyncIterator[tuple[Stack, dict[str, web.Application]]]:
    """The runtime with a primary and a fallback per role; ``faults`` puts faults in force on a fake from the start."""
    faults = faults or {}
    apps = {
        "deepgram": create_deepgram_app(
            DeepgramConfig.model_validate({"stt": FAST, "tts": FAST, "faults": faults.get("deepgram", [])})
        ),
        "elevenlabs": create_elevenlabs_app(
            ElevenLabsConfig.model_validate({"latency": FAST, "faults": faults.get("elevenlabs", [])})
        ),
        "openai": create_openai_app(
            OpenAIConfig.model_validate({"script": SCRIPT, "latency": FAST, "faults": faults.get("openai", [])})
        ),
        "anthropic": create_anthropic_app(AnthropicConfig.model_validate({"script": SCRIPT, "latency": FAST})),
        "assemblyai": create_assemblyai_app(AssemblyAIConfig.model_validate({"stt": FAST})),
    }
    async with (
        serve_app(apps["deepgram"]) as deepgram,
        serve_app(apps["elevenlabs"]) as elevenlabs,
        serve_app(apps["openai"]) as openai,
        serve_app(apps["anthropic"]) as anthropic,
        serve_app(apps["assemblyai"]) as assemblyai,
    ):
        config = parse_config(
            with_pytest_memory({
                "capacity": 4,
                "providers": {
                    "stt": {"kind": "deepgram", "base_url": deepgram, "endpointing_ms": 100},
                    "llm": {"kind": "openai", "base_url": openai, "timeout_s": 5},
                    "tts": {"kind": "elevenlabs", "base_url": elevenlabs, "voice_id": "test-voice"},
                    "fallbacks": {
                        "stt": [{"kind": "assemblyai", "base_url": assemblyai, "min_end_of_turn_silence_ms": 100}],
                        "llm": [{"kind": "anthropic", "base_url": anthropic, "timeout_s": 5}],
                        "tts": [{"kind": "deepgram", "base_url": deepgram}],
                    },
                    "breaker": {"failure_threshold": threshold, "reset_after_s": 600},
                },
                "dialog": {"greeting": GREETING, "objectives": OBJECTIVES, "goodbye": GOODBYE},
                "safeguards": {"providers": mode},
            })
        )
        recordings, workflow = RecordingBox(), LoggingWorkflowClient()
        tools = StaticToolRunner({"book_appointment": {"booked": True}})
        app = create_app(config, recording_sink=recordings, workflow_client=workflow, tool_runner=tools)
        async with serve_app(app) as url, aiohttp.ClientSession() as http:
            yield Stack(url, app, http, recordings, workflow, tools), apps


def fallbacks(text: str, role: str, source: str, target: str) -> float:
    return metric(text, "runtime_provider_fallbacks_total", role=role, **{"from": source, "to": target})


async def test_fixed_llm_rate_limited_the_fallback_answers_and_the_open_breaker_skips_the_primary() -> None:
    faults = {"openai": [{"kind": "rate_limit", "route": "chat"}]}
    async with fallback_stack("fixed", faults=faults, threshold=1) as (s, apps):
        caller = await TwilioSide.dial(s)
        assert (await caller.listen(sentences=2)).texts == GREETING_HEARD
        await caller.say("I would like an appointment.")
        assert (await caller.listen(sentences=1)).texts == ["Which day works for you?"]  # from Anthropic
        await caller.say("Tuesday please.")
        assert (await caller.listen(sentences=3)).texts[:1] == ["Tuesday at ten in the morning."]
        text = await s.metrics()
        await caller.hang_up()
        await s.recordings.next()
        await s.idle()
    # the breaker opened on the first 429 (threshold 1): the second turn did not call OpenAI at all
    assert gate_of(apps["openai"]).counters.by_name["chat"] == 1
    assert gate_of(apps["anthropic"]).counters.by_name["messages"] == 2
    assert fallbacks(text, "llm", "openai", "anthropic") == 2
    assert metric(text, "runtime_breaker_state", provider="openai", role="llm") == 2
    assert metric(text, "runtime_breaker_trips_total", provider="openai", role="llm") == 1
    assert metric(text, "runtime_provider_errors_total", service="llm", provider="openai", reason="http_429") == 1
    assert metric(text, "runtime_llm_first_token_seconds_count", provider="anthropic") == 2


async def test_broken_llm_rate_limited_means_silence() -> None:
    faults = {"openai": [{"kind": "rate_limit", "route": "chat"}]}
    async with fallback_stack("broken", faults=faults) as (s, apps):
        reported = errors_reported(s.app)
        caller = await TwilioSide.dial(s)
        assert (await caller.listen(sentences=2)).texts == GREETING_HEARD
        await caller.say("I would like an appointment.")
        async with asyncio.timeout(STEP_TIMEOUT_S):
            await reported.wait()
        await caller.hang_up()
        recording = await s.recordings.next()
        await s.idle()
        text = await s.metrics()
    assert decode(recording.agent_audio) == GREETING_HEARD  # the turn was lost: nothing after the greeting
    assert gate_of(apps["anthropic"]).counters.requests == 0
    assert "runtime_breaker_state{" not in text and "runtime_provider_fallbacks_total{" not in text


@pytest.mark.parametrize("mode", ["fixed", "broken"])
async def test_stt_refused_at_the_handshake(mode: str) -> None:
    faults = {"deepgram": [{"kind": "rate_limit", "route": "listen"}]}
    async with fallback_stack(mode, faults=faults) as (s, apps):
        caller = await TwilioSide.dial(s)
        if mode == "broken":  # incident 4: one provider, the call fails
            assert await caller.hung_up_by_server() == (1011, "speech-to-text unavailable")
            assert (await s.recordings.next()).outcome == "stt_error"
            await s.idle()
            return
        assert (await caller.listen(sentences=2)).texts == GREETING_HEARD
        await caller.say("I would like an appointment.")  # heard by AssemblyAI
        assert (await caller.listen(sentences=1)).texts == ["Which day works for you?"]
        text = await s.metrics()
        await caller.hang_up()
        await s.idle()
    assert fallbacks(text, "stt", "deepgram", "assemblyai") == 1
    assert metric(text, "runtime_stt_final_latency_seconds_count", provider="assemblyai") >= 1
    assert metric(text, "runtime_stt_first_result_seconds_count", provider="assemblyai") >= 1
    assert gate_of(apps["assemblyai"]).counters.by_name["stream"] == 1


async def test_fixed_stt_dropped_mid_call_reopens_on_the_fallback_and_the_call_goes_on() -> None:
    # the Deepgram socket is dropped (no close frame) 300 ms into the stream, while the caller is quiet
    faults = {"deepgram": [{"kind": "truncate", "route": "listen", "after_ms": 300}]}
    async with fallback_stack("fixed", faults=faults) as (s, apps):
        dropped = errors_reported(s.app)
        caller = await TwilioSide.dial(s)
        assert (await caller.listen(sentences=2)).texts == GREETING_HEARD
        async with asyncio.timeout(STEP_TIMEOUT_S):
            await dropped.wait()
        await caller.say("I would like an appointment.")  # to the reopened stream (or its backlog)
        assert (await caller.listen(sentences=1)).texts == ["Which day works for you?"]
        text = await s.metrics()
        await caller.hang_up()
        await s.idle()
    assert fallbacks(text, "stt", "deepgram", "assemblyai") == 1
    assert metric(text, "runtime_provider_errors_total", service="stt", provider="deepgram", reason="dropped") == 1
    assert gate_of(apps["assemblyai"]).counters.by_name["stream"] == 1
    assert metric(text, "runtime_turns_total") == 1


@pytest.mark.parametrize("mode", ["fixed", "broken"])
async def test_tts_down_the_greeting_is_spoken_by_aura(mode: str) -> None:
    faults = {"elevenlabs": [{"kind": "error", "status": 503}]}
    async with fallback_stack(mode, faults=faults) as (s, _apps):
        reported = errors_reported(s.app)
        caller = await TwilioSide.dial(s)
        if mode == "fixed":
            assert (await caller.listen(sentences=2)).texts == GREETING_HEARD
        else:
            async with asyncio.timeout(STEP_TIMEOUT_S):
                await reported.wait()
        text = await s.metrics()
        await caller.hang_up()
        recording = await s.recordings.next()
        await s.idle()
    if mode == "fixed":
        assert fallbacks(text, "tts", "elevenlabs", "deepgram-aura") >= 1
        assert metric(text, "runtime_tts_first_byte_seconds_count", provider="deepgram-aura") >= 1
    else:
        assert decode(recording.agent_audio) == []  # the caller heard nothing at all
