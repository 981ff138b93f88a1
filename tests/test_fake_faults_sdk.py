"""Each provider's faults as its official SDK sees them: the exception the real service's error raises, with
its status, body and headers (openai, deepgram-sdk 7.x, elevenlabs 2.x), faults set through the control API.
SDK retries are off (``max_retries=0``) so that each refusal is seen once and the tests stay fast."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import openai
import pytest
from deepgram import AsyncDeepgramClient, DeepgramClientEnvironment
from deepgram.core.api_error import ApiError as DeepgramApiError
from elevenlabs.client import AsyncElevenLabs
from elevenlabs.core.api_error import ApiError as ElevenLabsApiError
from openai import AsyncOpenAI

from fake_providers import (
    DeepgramConfig,
    ElevenLabsConfig,
    OpenAIConfig,
    create_deepgram_app,
    create_elevenlabs_app,
    create_openai_app,
    serve_app,
)

FAST = {"ttfb": 0.0, "chunk_interval": 0.0}
NO_RETRY: Any = {"max_retries": 0}
MESSAGES: Any = [{"role": "user", "content": "hi"}]


async def add_fault(base_url: str, fault: dict[str, Any]) -> str:
    async with aiohttp.ClientSession() as session, session.post(f"{base_url}/_chaos/faults", json=fault) as r:
        body = await r.json()
        assert r.status == 201, body
        return str(body["id"])


async def stats(base_url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{base_url}/_chaos/stats") as r:
        result: dict[str, Any] = await r.json()
        return result


@pytest.fixture
async def openai_client() -> AsyncIterator[Callable[..., AsyncOpenAI]]:
    """Makes OpenAI clients for a base URL and closes them after the test (no pool left to the GC)."""
    made: list[AsyncOpenAI] = []

    def make(base_url: str, max_retries: int = 0) -> AsyncOpenAI:
        made.append(AsyncOpenAI(base_url=f"{base_url}/v1", api_key="sk-test", max_retries=max_retries))
        return made[-1]

    yield make
    for client in made:
        await client.close()


# -- OpenAI ------------------------------------------------------------------------------------------------


@pytest.fixture
async def openai_url() -> AsyncIterator[str]:
    async with serve_app(create_openai_app(OpenAIConfig.model_validate({"latency": FAST}))) as url:
        yield url


async def test_openai_rate_limit_is_a_rate_limit_error_with_the_real_headers(
    openai_url: str, openai_client: Callable[..., AsyncOpenAI]
) -> None:
    fault_id = await add_fault(openai_url, {"kind": "rate_limit", "route": "chat", "retry_after_s": 2})
    client = openai_client(openai_url)
    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    error = info.value
    assert error.status_code == 429 and error.code == "rate_limit_exceeded" and error.type == "requests"
    assert error.param is None
    assert "Rate limit reached for gpt-4o-mini" in error.message and "Please try again in 2s." in error.message
    headers = error.response.headers
    assert headers["retry-after"] == "2" and headers["retry-after-ms"] == "2000"
    assert headers["x-ratelimit-remaining-requests"] == "0" and headers["x-ratelimit-reset-requests"] == "2s"
    for name in ("limit-requests", "limit-tokens", "remaining-tokens", "reset-tokens"):
        assert f"x-ratelimit-{name}" in headers
    assert headers["x-request-id"].startswith("req_") and error.request_id == headers["x-request-id"]
    # the route filter: the models route still answers
    assert [m.id async for m in client.models.list()]
    counted = await stats(openai_url)
    assert counted["faults_applied"] == {fault_id: 1}
    assert counted["refused"]["by_kind"] == {"rate_limit": 1}


@pytest.mark.parametrize(
    ("status", "exception"),
    [(500, openai.InternalServerError), (503, openai.InternalServerError), (502, openai.InternalServerError)],
)
async def test_openai_server_errors(
    openai_url: str, status: int, exception: type[Exception], openai_client: Callable[..., AsyncOpenAI]
) -> None:
    await add_fault(openai_url, {"kind": "error", "status": status})
    client = openai_client(openai_url)
    with pytest.raises(exception) as info:
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    assert isinstance(info.value, openai.APIStatusError) and info.value.status_code == status
    assert info.value.type == "server_error"


async def test_openai_sdk_retries_through_a_fault_drawn_with_a_probability(
    openai_url: str, openai_client: Callable[..., AsyncOpenAI]
) -> None:
    # With p = 0.5 and 6 attempts per call, a call fails only if all 6 draws refuse (1/64); the seeded
    # generator makes the outcome fixed, and both refusals and successes must appear over 8 calls.
    await add_fault(openai_url, {"kind": "rate_limit", "probability": 0.5, "retry_after_s": 0.01})
    client = openai_client(openai_url, max_retries=5)
    for _ in range(8):
        reply = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert reply.choices[0].message.content
    counted = await stats(openai_url)
    assert counted["refused"]["total"] >= 1 and counted["requests"] == 8 + counted["refused"]["total"]


# -- Deepgram ----------------------------------------------------------------------------------------------


@pytest.fixture
async def deepgram_url() -> AsyncIterator[str]:
    config = DeepgramConfig.model_validate({"stt": FAST, "tts": FAST})
    async with serve_app(create_deepgram_app(config)) as url:
        yield url


def deepgram(base_url: str) -> AsyncDeepgramClient:
    ws = "ws" + base_url.removeprefix("http")
    environment = DeepgramClientEnvironment(base=base_url, production=ws, agent=ws, agent_rest=base_url)
    return AsyncDeepgramClient(api_key="dg-test-key", environment=environment)


async def test_deepgram_live_websocket_is_refused_at_the_handshake_with_429(deepgram_url: str) -> None:
    await add_fault(deepgram_url, {"kind": "rate_limit", "route": "listen"})
    with pytest.raises(DeepgramApiError) as info:
        async with deepgram(deepgram_url).listen.v1.connect(model="nova-3", encoding="linear16", sample_rate="16000"):
            pass
    assert info.value.status_code == 429
    # what the SDK does not show: the refusal is HTTP before the upgrade, with Deepgram's body
    url = f"{deepgram_url}/v1/listen?encoding=linear16&sample_rate=16000"
    async with aiohttp.ClientSession(headers={"Authorization": "Token k"}) as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as handshake:
            await session.ws_connect(url)
        assert handshake.value.status == 429
        async with session.get(url) as response:
            assert response.status == 429
            body = await response.json()
    assert body["err_code"] == "TOO_MANY_REQUESTS"
    assert body["err_msg"] == "Too many requests. Please try again later"
    assert response.headers["dg-request-id"] == body["request_id"]
    assert (await stats(deepgram_url))["refused"]["by_status"] == {"429": 3}


async def test_deepgram_speak_rest_429_and_500_bodies_are_parsed_by_the_sdk(deepgram_url: str) -> None:
    client = deepgram(deepgram_url)
    limit_id = await add_fault(deepgram_url, {"kind": "rate_limit", "route": "speak"})
    with pytest.raises(DeepgramApiError) as info:
        async for _ in client.speak.v1.audio.generate(
            text="Hello.", encoding="mulaw", sample_rate=8000, container="none", request_options=NO_RETRY
        ):
            pass
    assert info.value.status_code == 429
    assert isinstance(info.value.body, dict) and info.value.body["err_code"] == "TOO_MANY_REQUESTS"
    async with aiohttp.ClientSession() as session:
        async with session.delete(f"{deepgram_url}/_chaos/faults/{limit_id}") as response:
            assert response.status == 200
    await add_fault(deepgram_url, {"kind": "error", "status": 500, "route": "speak.rest"})
    with pytest.raises(DeepgramApiError) as info:
        async for _ in client.speak.v1.audio.generate(
            text="Hello.", encoding="mulaw", sample_rate=8000, container="none", request_options=NO_RETRY
        ):
            pass
    assert info.value.status_code == 500
    assert isinstance(info.value.body, dict) and info.value.body["err_code"] == "INTERNAL_SERVER_ERROR"


# -- ElevenLabs --------------------------------------------------------------------------------------------


@pytest.fixture
async def elevenlabs_url() -> AsyncIterator[str]:
    config = ElevenLabsConfig.model_validate({"latency": FAST})
    async with serve_app(create_elevenlabs_app(config)) as url:
        yield url


@pytest.mark.parametrize(
    ("reason", "status"), [("concurrency", "too_many_concurrent_requests"), ("busy", "system_busy")]
)
async def test_elevenlabs_sdk_raises_its_api_error_with_the_detail_status(
    elevenlabs_url: str, reason: str, status: str
) -> None:
    await add_fault(elevenlabs_url, {"kind": "rate_limit", "reason": reason, "route": "http"})
    client = AsyncElevenLabs(base_url=elevenlabs_url, api_key="xi-test")
    with pytest.raises(ElevenLabsApiError) as info:
        async for _ in client.text_to_speech.stream(
            "voice", text="Hello there.", output_format="ulaw_8000", request_options=NO_RETRY
        ):
            pass
    assert info.value.status_code == 429
    detail = info.value.body["detail"]  # type: ignore[index]
    assert detail["status"] == status and detail["message"]
    assert "retry-after" not in (info.value.headers or {}), "ElevenLabs does not document a Retry-After"


async def test_elevenlabs_error_on_convert_and_websocket_handshake(elevenlabs_url: str) -> None:
    await add_fault(elevenlabs_url, {"kind": "error", "status": 503})
    client = AsyncElevenLabs(base_url=elevenlabs_url, api_key="xi-test")
    with pytest.raises(ElevenLabsApiError) as info:
        async for _ in client.text_to_speech.convert(
            "voice", text="Hello.", output_format="ulaw_8000", request_options=NO_RETRY
        ):
            pass
    assert info.value.status_code == 503
    assert info.value.body["detail"]["status"] == "service_unavailable"  # type: ignore[index]
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as handshake:
            await session.ws_connect(
                f"{elevenlabs_url}/v1/text-to-speech/voice/multi-stream-input?output_format=ulaw_8000"
            )
    assert handshake.value.status == 503
