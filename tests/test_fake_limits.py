"""Rate limits as real limiters: the token bucket and the concurrency cap on an injected clock (no sleeping),
then the same limits emerging from load over loopback, as the official SDKs see them."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from elevenlabs.client import AsyncElevenLabs
from elevenlabs.core.api_error import ApiError
from openai import AsyncOpenAI
from pydantic import ValidationError

from fake_providers import (
    ElevenLabsConfig,
    Limits,
    OpenAIConfig,
    create_elevenlabs_app,
    create_openai_app,
    gate_of,
    serve_app,
)
from fake_providers.disruption import Disruption
from fake_providers.gate import Admission, ProviderGate
from fake_providers.limits import Limiter, TokenBucket
from fake_providers.openai_chat import ROUTES as OPENAI_ROUTES
from fake_providers.refusals import OpenAIErrors
from fake_providers.routes import RequestInfo
from harness.clock import ManualClock


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``condition`` holds (polled: the server runs on this loop)."""
    async with asyncio.timeout(timeout):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


CHAT = RequestInfo("/v1/chat/completions", "chat", "gpt-4o-mini")
MODELS = RequestInfo("/v1/models", "models")


def test_bucket_starts_full_refills_at_its_rate_and_says_how_long_to_wait() -> None:
    bucket = TokenBucket(rate=2.0, size=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.25) == pytest.approx(0.25), "a refused request takes nothing"
    assert bucket.take(0.5) == 0.0
    assert bucket.take(0.5) == pytest.approx(0.5)
    assert [bucket.take(100.0) for _ in range(4)] == [0.0, 0.0, 0.0, pytest.approx(0.5)], "capped at its size"


def test_bucket_admits_exactly_its_rate_over_time() -> None:
    bucket = TokenBucket(rate=10.0, size=1, now=0.0)
    admitted = sum(bucket.take(i * 0.01) == 0.0 for i in range(1000))  # 100 requests a second for 10 s
    assert admitted == 100  # 10 a second (exact at whole tenths: no float drift lost a token)


def test_limits_validation_and_defaults() -> None:
    assert Limits(requests_per_second=5).bucket_size == 5
    assert Limits(requests_per_second=0.2).bucket_size == 1
    assert Limits(requests_per_second=5, burst=2).bucket_size == 2
    with pytest.raises(ValidationError, match="set requests_per_second, concurrent_streams, or both"):
        Limits()
    with pytest.raises(ValidationError, match="burst needs requests_per_second"):
        Limits(concurrent_streams=2, burst=3)
    with pytest.raises(ValidationError, match="requests_per_second"):
        Limits(requests_per_second=0)


def test_limiter_concurrency_before_tokens_and_only_on_its_routes() -> None:
    limiter = Limiter(Limits(requests_per_second=1, concurrent_streams=2, route="chat"), now=0.0)
    assert limiter.check("models", open_streams=99, now=0.0) is None
    full = limiter.check("chat", open_streams=2, now=0.0)
    assert full is not None and full.reason == "concurrency" and full.limit == 2
    assert full.kind == "limit.concurrent_streams"
    assert limiter.check("chat", open_streams=1, now=0.0) is None, "the concurrency refusal took no token"
    limited = limiter.check("chat", open_streams=1, now=0.4)
    assert limited is not None and limited.kind == "limit.requests_per_second"
    assert limited.retry_after_s == pytest.approx(0.6) and limited.limit == 60


def test_gate_refuses_over_the_rate_with_the_providers_429_and_a_manual_clock() -> None:
    clock = ManualClock()
    gate = ProviderGate("openai", rng=random.Random(0), clock=clock, errors=OpenAIErrors(), routes=OPENAI_ROUTES)
    gate.set_limits(Limits(requests_per_second=2, burst=2, route="chat"))

    def refusal(info: RequestInfo) -> Any:
        return gate.admit(Admission(info, Disruption(gate.rng)))

    assert refusal(CHAT) is None and refusal(CHAT) is None
    third = refusal(CHAT)
    assert third is not None and third.status == 429 and third.kind == "limit.requests_per_second"
    assert third.headers["retry-after-ms"] == "500" and third.headers["x-ratelimit-limit-requests"] == "120"
    assert refusal(MODELS) is None, "models is not limited"
    clock.advance(0.5)
    assert refusal(CHAT) is None
    gate.set_limits(None)
    assert all(refusal(CHAT) is None for _ in range(10))


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


# -- limits emerging from load, over loopback ---------------------------------------------------------------


@pytest.fixture
async def openai_url() -> AsyncIterator[str]:
    config = OpenAIConfig.model_validate({"latency": {"ttfb": 0.0, "chunk_interval": 0.0}})
    async with serve_app(create_openai_app(config)) as url:
        yield url


async def test_openai_sdk_retry_honours_the_limiters_retry_after(
    openai_url: str, openai_client: Callable[..., AsyncOpenAI]
) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{openai_url}/_chaos/limits", json={"requests_per_second": 2, "burst": 1, "route": "chat"}
        ) as response:
            assert response.status == 200
            assert (await response.json())["limits"]["requests_per_second"] == 2
        client = openai_client(openai_url, max_retries=2)
        messages: Any = [{"role": "user", "content": "hi"}]
        await client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        started = time.monotonic()
        # the bucket is empty: this one is refused with retry-after-ms ~500, which the SDK waits, then it passes
        reply = await client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        waited = time.monotonic() - started
        assert reply.choices[0].message.content
        assert waited >= 0.35, "the SDK retried no sooner than the limiter said"
        async with session.get(f"{openai_url}/_chaos/stats") as response:
            stats = await response.json()
    assert stats["requests"] == 3
    assert stats["refused"] == {
        "total": 1,
        "by_kind": {"limit.requests_per_second": 1},
        "by_status": {"429": 1},
    }


async def test_elevenlabs_concurrency_cap_refuses_the_extra_stream_while_one_is_open() -> None:
    # a slow first byte keeps the first stream open long enough for the second to find the cap reached
    config = ElevenLabsConfig.model_validate(
        {"latency": {"ttfb": 0.0, "chunk_interval": 0.0}, "limits": {"concurrent_streams": 1}}
    )
    app = create_elevenlabs_app(config)
    client_kwargs: Any = {"request_options": {"max_retries": 0}}
    async with serve_app(app) as url, aiohttp.ClientSession() as session:
        async with session.post(
            f"{url}/_chaos/faults", json={"kind": "slow_first_byte", "delay_ms": 1500, "id": "slow"}
        ) as response:
            assert response.status == 201
        client = AsyncElevenLabs(base_url=url, api_key="xi-test")

        async def speak() -> bytes:
            stream = client.text_to_speech.stream(
                "voice", text="Hello there.", output_format="ulaw_8000", **client_kwargs
            )
            return b"".join([chunk async for chunk in stream])

        first = asyncio.create_task(speak())
        await until(lambda: gate_of(app).counters.active >= 1)
        async with session.delete(f"{url}/_chaos/faults/slow") as response:
            assert response.status == 200
        with pytest.raises(ApiError) as info:
            await speak()
        assert info.value.status_code == 429
        assert info.value.body["detail"]["status"] == "too_many_concurrent_requests"  # type: ignore[index]
        assert len(await first) > 0, "the stream that held the slot completes"
        assert len(await speak()) > 0, "once it ended, a new stream is admitted"
        async with session.get(f"{url}/_chaos/stats") as response:
            stats = await response.json()
    assert stats["refused"]["by_kind"] == {"limit.concurrent_streams": 1}
    assert stats["peak_streams_open"] == 1 and stats["streams_open"] == 0


async def test_limits_control_api_validates_and_removes(
    openai_url: str, openai_client: Callable[..., AsyncOpenAI]
) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{openai_url}/_chaos/limits", json={"burst": 3}) as response:
            assert response.status == 400
            assert "burst needs requests_per_second" in (await response.json())["error"]
        async with session.post(
            f"{openai_url}/_chaos/limits", json={"concurrent_streams": 0, "route": "speak"}
        ) as response:
            assert response.status == 400
            assert (await response.json())["error"].startswith("route: unknown route 'speak'")
        async with session.put(f"{openai_url}/_chaos/limits", json={"concurrent_streams": 0}) as response:
            assert response.status == 200
        client = openai_client(openai_url)
        with pytest.raises(Exception) as refused:
            await client.models.list()
        assert getattr(refused.value, "status_code", None) == 429
        async with session.get(f"{openai_url}/_chaos/limits") as response:
            assert (await response.json())["limits"]["concurrent_streams"] == 0
        async with session.delete(f"{openai_url}/_chaos/limits") as response:
            assert await response.json() == {"limits": None, "removed": True}
        assert [m.id async for m in client.models.list()]
