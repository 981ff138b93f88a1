"""The fake Anthropic Messages API, driven with the official ``anthropic`` SDK over loopback (and its stream
events with literal messages). It shares the fake OpenAI's script format."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import anthropic
import pytest
from anthropic import AsyncAnthropic

from fake_providers import AnthropicConfig, create_anthropic_app, gate_of, serve_app
from fake_providers.anthropic_messages import conversation_of, message_events
from fake_providers.latency import Fixed, Latency
from fake_providers.openai_script import Reply, ToolCall

FAST = Latency(ttfb=Fixed(value=0.0), chunk_interval=Fixed(value=0.0))
SCRIPT = [
    {"if_last_role": "tool", "reply": "Tuesday at ten is free. Shall I book it?"},
    {"if_last_user": "(?i)book", "tool_calls": [{"name": "check_calendar", "arguments": {"day": "Tuesday"}}]},
    {"if_system": "Objective: greet", "reply": "Hello, thanks for calling Acme Dental. How can I help?"},
]
TOOLS = [
    {
        "name": "check_calendar",
        "description": "Free slots on a day",
        "input_schema": {"type": "object", "properties": {"day": {"type": "string"}}},
    }
]


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    app = create_anthropic_app(AnthropicConfig.model_validate({"latency": FAST, "script": SCRIPT}))
    async with serve_app(app) as url:
        yield url


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[AsyncAnthropic]:
    sdk = AsyncAnthropic(base_url=base_url, api_key="test-key", max_retries=0)
    yield sdk
    await sdk.close()


async def test_streamed_text_follows_the_script(client: AsyncAnthropic) -> None:
    async with client.messages.stream(
        model="claude-3-5-haiku-latest",
        max_tokens=200,
        system="Objective: greet the caller.",
        messages=[{"role": "user", "content": "hi"}],
    ) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert len(pieces) > 1
    assert "".join(pieces) == "Hello, thanks for calling Acme Dental. How can I help?"
    assert final.stop_reason == "end_turn"
    assert final.content[0].type == "text"
    assert final.usage.output_tokens > 0


async def test_tool_use_streams_and_the_tool_result_is_answered(client: AsyncAnthropic) -> None:
    async with client.messages.stream(
        model="claude-3-5-haiku-latest",
        max_tokens=200,
        tools=TOOLS,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "I want to book a visit"}],
    ) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    (call,) = [block for block in final.content if block.type == "tool_use"]
    assert call.name == "check_calendar" and call.input == {"day": "Tuesday"}
    assert call.id.startswith("toolu_")

    answer = await client.messages.create(
        model="claude-3-5-haiku-latest",
        max_tokens=200,
        messages=[
            {"role": "user", "content": "I want to book a visit"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": call.id, "name": call.name, "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "10:00"}]},
        ],
    )
    assert answer.content[0].type == "text"
    assert answer.content[0].text == "Tuesday at ten is free. Shall I book it?"


async def test_rate_limit_fault_is_a_rate_limit_error_for_the_sdk(base_url: str, client: AsyncAnthropic) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base_url}/_chaos/faults", json={"kind": "rate_limit", "route": "messages"}) as r:
            assert r.status == 201
        with pytest.raises(anthropic.RateLimitError) as caught:
            await client.messages.create(
                model="claude-3-5-haiku-latest", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
            )
        assert caught.value.status_code == 429
        assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
        async with http.delete(f"{base_url}/_chaos/faults") as r:
            assert r.status == 200
        async with http.post(f"{base_url}/_chaos/faults", json={"kind": "error", "status": 503}) as r:
            assert r.status == 201
        with pytest.raises(anthropic.InternalServerError):
            await client.messages.create(
                model="claude-3-5-haiku-latest", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
            )
        async with http.get(f"{base_url}/_chaos/stats") as r:
            stats = await r.json()
    assert stats["provider"] == "anthropic"
    assert stats["refused"]["by_status"] == {"429": 1, "503": 1}


async def test_missing_key_version_or_max_tokens_are_refused(base_url: str) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base_url}/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"}) as r:
            assert r.status == 401
            assert (await r.json())["error"]["type"] == "authentication_error"
        async with http.post(f"{base_url}/v1/messages", json=body, headers={"x-api-key": "k"}) as r:
            assert r.status == 400
        headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
        async with http.post(f"{base_url}/v1/messages", json={**body, "max_tokens": None}, headers=headers) as r:
            assert r.status == 400
            assert "max_tokens" in (await r.json())["error"]["message"]


async def test_models_list(client: AsyncAnthropic) -> None:
    page = await client.models.list()
    assert [m.id for m in page.data][:1] == ["claude-3-5-haiku-latest"]


def test_stream_events_in_order_and_tool_results_read_as_role_tool() -> None:
    reply = Reply("Let me check.", [ToolCall("call_abc", "check_calendar", '{"day": "Tuesday"}')])
    events = message_events(reply, "msg_1", "m", words_per_piece=2, usage=(10, 5))
    kinds = [e.decode().split("\n", 1)[0].removeprefix("event: ") for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    datas = [json.loads(e.decode().split("data: ", 1)[1]) for e in events]
    tool_start = next(d for d in datas if d.get("content_block", {}).get("type") == "tool_use")
    assert tool_start["index"] == 1 and tool_start["content_block"]["id"] == "toolu_abc"
    partial = "".join(d["delta"]["partial_json"] for d in datas if d.get("delta", {}).get("type") == "input_json_delta")
    assert json.loads(partial) == {"day": "Tuesday"}
    assert datas[-2]["delta"]["stop_reason"] == "tool_use"

    from fake_providers.anthropic_messages import MessagesRequest

    request = MessagesRequest.model_validate(
        {
            "model": "m",
            "max_tokens": 5,
            "system": [{"type": "text", "text": "Objective: book."}],
            "messages": [
                {"role": "user", "content": "book it"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "x", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]},
            ],
        }
    )
    conversation = conversation_of(request)
    assert (conversation.system, conversation.last_user, conversation.last_role) == (
        "Objective: book.",
        "book it",
        "tool",
    )


async def test_the_gate_counts_messages_requests() -> None:
    app = create_anthropic_app(AnthropicConfig.model_validate({"latency": FAST}))
    async with serve_app(app) as url:
        sdk = AsyncAnthropic(base_url=url, api_key="k", max_retries=0)
        message = await sdk.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        await sdk.close()
    assert message.content[0].text == "Sure, I can help with that."  # type: ignore[union-attr]
    assert gate_of(app).counters.by_name["messages"] == 1
