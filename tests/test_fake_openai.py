"""The fake OpenAI chat completions, driven with the official ``openai`` SDK over loopback (and the scripted
model's pure parts with literal messages)."""

from __future__ import annotations

import json
import random
import time
from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI

from fake_providers import OpenAIConfig, create_openai_app, gate_of, serve_app
from fake_providers.gate import Refusal
from fake_providers.latency import Fixed, Latency
from fake_providers.openai_script import (
    CompletionMeta,
    Conversation,
    Reply,
    Rule,
    ToolCall,
    choose_reply,
    content_pieces,
    stream_chunks,
)

FAST = Latency(ttfb=Fixed(value=0.0), chunk_interval=Fixed(value=0.0))
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "check_calendar",
            "description": "Free slots on a day",
            "parameters": {"type": "object", "properties": {"day": {"type": "string"}}},
        },
    }
]

SCRIPT = [
    {"if_last_role": "tool", "reply": "Tuesday at ten is free. Shall I book it?"},
    {
        "if_last_user": "(?i)book",
        "tool_calls": [{"name": "check_calendar", "arguments": {"day": "Tuesday", "party": 2}}],
    },
    {"if_system": "Objective: greet", "reply": "Hello, thanks for calling Acme Dental. How can I help?"},
    {"if_last_user": "(?i)repeat", "reply": "You said: {last_user}"},
]


def config(**overrides: object) -> OpenAIConfig:
    return OpenAIConfig.model_validate(
        {"latency": FAST, "script": SCRIPT, "default_reply": "Sorry, could you say that again?", **overrides}
    )


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    async with serve_app(create_openai_app(config())) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{base_url}/v1", api_key="sk-test", max_retries=0)


async def test_streamed_reply_follows_the_script_with_usage_last(client: AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "You are a receptionist. Objective: greet"},
            {"role": "user", "content": "hi"},
        ],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    *body, last = chunks
    text = "".join(c.choices[0].delta.content or "" for c in body if c.choices)
    assert text == "Hello, thanks for calling Acme Dental. How can I help?"
    assert body[0].choices[0].delta.role == "assistant"
    content_chunks = [c for c in body if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) >= 3  # streamed in small pieces, not in one
    assert body[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in body[:-1])
    assert last.choices == []
    assert last.usage is not None and last.usage.completion_tokens > 0
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert {c.id for c in chunks} == {chunks[0].id} and chunks[0].model == "gpt-4o-mini"


async def test_non_streaming_reply_and_default(client: AsyncOpenAI) -> None:
    echoed = await client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Please repeat after me"}]
    )
    assert echoed.choices[0].message.content == "You said: Please repeat after me"
    assert echoed.choices[0].finish_reason == "stop"
    assert echoed.usage is not None and echoed.usage.prompt_tokens > 0
    fallback = await client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": [{"type": "text", "text": "mumble"}]}]
    )
    assert fallback.choices[0].message.content == "Sorry, could you say that again?"


async def test_tool_call_streams_and_reassembles(client: AsyncOpenAI) -> None:
    messages: list[dict[str, object]] = [{"role": "user", "content": "I want to book a cleaning"}]
    async with client.chat.completions.stream(
        model="gpt-4o-mini",
        messages=messages,  # type: ignore[arg-type]
        tools=TOOLS,  # type: ignore[arg-type]
    ) as stream:
        raw = []
        async for event in stream:
            if event.type == "chunk":
                raw.append(event.chunk)
        completion = await stream.get_final_completion()
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "check_calendar"
    assert json.loads(call.function.arguments) == {"day": "Tuesday", "party": 2}
    assert call.id.startswith("call_")
    # providers.md: id and name in the first chunk of the call, then the arguments in several pieces
    deltas = [c.choices[0].delta.tool_calls[0] for c in raw if c.choices and c.choices[0].delta.tool_calls]
    assert deltas[0].id == call.id and deltas[0].function.name == "check_calendar"
    assert all(d.id is None and d.function.name is None for d in deltas[1:])
    assert len(deltas) > 2

    # the tool result comes back: the script answers the last role "tool"
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"free": ["10:00"]}'},
    ]
    after = await client.chat.completions.create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]
    assert after.choices[0].message.content == "Tuesday at ten is free. Shall I book it?"


async def test_models_list(client: AsyncOpenAI) -> None:
    models = [m.id async for m in client.models.list()]
    assert models == ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini"]


async def test_missing_key_is_401_and_bad_body_400(base_url: str, client: AsyncOpenAI) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base_url}/v1/chat/completions", json={"model": "m", "messages": []}) as r:
            assert r.status == 401
            assert (await r.json())["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model="gpt-4o", messages=[])
    assert "messages" in str(info.value)


async def test_time_to_first_byte_respects_the_configured_latency() -> None:
    slow = config(latency={"ttfb": 0.3, "chunk_interval": 0.0})
    app = create_openai_app(slow)
    async with serve_app(app) as url:
        client = AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-test", max_retries=0)
        started = time.monotonic()
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        first = await anext(aiter(stream))
        elapsed = time.monotonic() - started
        assert first.choices[0].delta.role == "assistant"
        assert elapsed >= 0.3
        async for _ in stream:
            pass
    counters = gate_of(app).counters
    assert counters.requests == 1 and counters.active == 0
    assert counters.by_route["/v1/chat/completions"] == 1


async def test_the_gate_is_the_seam_for_faults() -> None:
    """A refusal decided by the gate reaches the client as the HTTP error it describes."""
    app = create_openai_app(config())
    gate = gate_of(app)
    body = {
        "error": {
            "message": "Rate limit reached",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    gate.admit = lambda route: Refusal(429, body, {"retry-after-ms": "10"})  # type: ignore[method-assign]
    async with serve_app(app) as url:
        client = AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-test", max_retries=0)
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert info.value.code == "rate_limit_exceeded"
    assert gate.counters.refused == 1 and gate.counters.active == 0


# -- the scripted model, no sockets ------------------------------------------------------------------------


def test_first_matching_rule_wins_and_conditions_combine() -> None:
    rules = [
        Rule.model_validate({"if_system": "Objective: ask", "if_last_role": "tool", "reply": "after tool"}),
        Rule.model_validate({"if_system": "Objective: ask", "reply": "ask"}),
        Rule.model_validate({"reply": "catch-all"}),
    ]
    rng = random.Random(0)
    ask = Conversation.of([{"role": "system", "content": "Objective: ask"}, {"role": "user", "content": "x"}])
    assert choose_reply(rules, "default", ask, rng).content == "ask"
    tool = Conversation.of(
        [{"role": "system", "content": "Objective: ask"}, {"role": "tool", "content": "{}"}]
    )
    assert choose_reply(rules, "default", tool, rng).content == "after tool"
    other = Conversation.of([{"role": "user", "content": "x"}])
    assert choose_reply(rules, "default", other, rng).content == "catch-all"
    assert choose_reply([], "default {last_user}", other, rng).content == "default x"


def test_rule_needs_an_answer_and_a_valid_pattern() -> None:
    with pytest.raises(ValueError, match="reply, tool_calls"):
        Rule.model_validate({"if_last_user": "x"})
    with pytest.raises(ValueError, match="if_system"):
        Rule.model_validate({"if_system": "(", "reply": "x"})


def test_content_pieces_rejoin_exactly() -> None:
    text = "  Hello there,   how are\nyou today?  "
    pieces = content_pieces(text, 2)
    assert "".join(pieces) == text and len(pieces) == 3


def test_chunks_with_usage_carry_null_usage_until_the_last() -> None:
    reply = Reply("One two three four", [ToolCall("call_1", "f", '{"a": 1}')])
    meta_chunks = stream_chunks(
        reply,
        CompletionMeta("id", 1, "m"),
        words_per_piece=2,
        include_usage=True,
        usage_body={"total_tokens": 3},
    )
    assert all(c["usage"] is None for c in meta_chunks[:-1])
    assert meta_chunks[-1]["choices"] == [] and meta_chunks[-1]["usage"] == {"total_tokens": 3}
    assert meta_chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
