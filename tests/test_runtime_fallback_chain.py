"""Safeguard 4, the chain itself (sans sockets): a circuit breaker per provider and an ordered fallback per role,
with in-test providers that count their calls and a manual clock (no sleeps). The metrics are the runtime's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.audio.formats import AudioFormat
from harness.clock import ManualClock
from reference_runtime.dialog import ChatMessage, LlmReply, LlmRequest
from reference_runtime.metrics import RuntimeMetrics
from reference_runtime.providers.base import (
    LlmChunk,
    ProviderError,
    ReplyDone,
    SttEvent,
    TextDelta,
    Transcript,
)
from reference_runtime.providers.resilience import (
    Chain,
    FallbackLanguageModel,
    FallbackSpeechToText,
    FallbackTextToSpeech,
)

REQUEST = LlmRequest((ChatMessage("system", "Objective: ask."), ChatMessage("user", "hi")))
PCM_8K = AudioFormat("linear16", 8000)
THRESHOLD, RESET_S = 3, 10.0


def metrics() -> RuntimeMetrics:
    return RuntimeMetrics(active_calls=lambda: 0, capacity=lambda: 1, ready=lambda: 1)


def value(m: RuntimeMetrics, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(m.exposition().decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    raise AssertionError(f"{name}{labels} not exported")


@dataclass
class Llm:
    """An LLM that refuses (429) while ``down``; counts every request it receives."""

    name: str
    down: bool = False
    calls: int = 0
    fail_after_text: bool = False

    async def stream(self, request: LlmRequest) -> AsyncIterator[LlmChunk]:
        self.calls += 1
        if self.down:
            raise ProviderError("llm", self.name, "HTTP 429: rate limited", status=429)
        yield TextDelta(f"from {self.name}.")
        if self.fail_after_text:
            raise ProviderError("llm", self.name, "stream ended before [DONE]")
        yield ReplyDone(LlmReply(f"from {self.name}."))


@dataclass
class Tts:
    name: str
    down: bool = False
    calls: int = 0

    async def synthesize(self, text: str, audio_format: AudioFormat) -> AsyncIterator[bytes]:
        self.calls += 1
        if self.down:
            raise ProviderError("tts", self.name, "HTTP 503", status=503)
        yield self.name.encode()


async def ask(model: FallbackLanguageModel) -> str:
    text = ""
    async for chunk in model.stream(REQUEST):
        if isinstance(chunk, TextDelta):
            text += chunk.text
    return text


def llm_chain(*providers: Llm, clock: ManualClock, m: RuntimeMetrics) -> FallbackLanguageModel:
    return FallbackLanguageModel(
        Chain("llm", list(providers), clock=clock, failure_threshold=THRESHOLD, reset_after_s=RESET_S, observer=m)
    )


async def test_a_rate_limited_primary_falls_back_then_its_breaker_skips_it_then_half_open_recovers() -> None:
    clock, m = ManualClock(), metrics()
    primary, fallback = Llm("openai", down=True), Llm("anthropic")
    model = llm_chain(primary, fallback, clock=clock, m=m)
    assert value(m, "runtime_breaker_state", provider="openai", role="llm") == 0
    assert value(m, "runtime_breaker_trips_total", provider="openai", role="llm") == 0

    # each request is completed by the fallback; the primary is tried until its breaker opens
    for _ in range(THRESHOLD):
        assert await ask(model) == "from anthropic."
    assert primary.calls == THRESHOLD
    assert value(m, "runtime_breaker_state", provider="openai", role="llm") == 2
    assert value(m, "runtime_breaker_trips_total", provider="openai", role="llm") == 1

    # open: the primary is skipped without being called
    for _ in range(5):
        assert await ask(model) == "from anthropic."
    assert primary.calls == THRESHOLD
    assert value(m, "runtime_provider_fallbacks_total", role="llm", **{"from": "openai", "to": "anthropic"}) == 8

    # after reset_after_s one trial goes through (half-open); still down: open again, a second trip
    clock.advance(RESET_S)
    assert await ask(model) == "from anthropic."
    assert primary.calls == THRESHOLD + 1
    assert value(m, "runtime_breaker_trips_total", provider="openai", role="llm") == 2
    assert await ask(model) == "from anthropic."
    assert primary.calls == THRESHOLD + 1

    # recovered: the next trial succeeds and closes the breaker; the primary serves again
    primary.down = False
    clock.advance(RESET_S)
    assert value(m, "runtime_breaker_state", provider="openai", role="llm") == 1  # half-open, waiting for a trial
    assert await ask(model) == "from openai."
    assert value(m, "runtime_breaker_state", provider="openai", role="llm") == 0
    assert await ask(model) == "from openai."
    assert fallback.calls == 3 + 5 + 2
    assert value(m, "runtime_breaker_state", provider="anthropic", role="llm") == 0


async def test_every_provider_down_fails_the_request_with_the_last_status() -> None:
    clock, m = ManualClock(), metrics()
    model = llm_chain(Llm("openai", down=True), Llm("anthropic", down=True), clock=clock, m=m)
    with pytest.raises(ProviderError) as caught:
        await ask(model)
    assert caught.value.status == 429 and "every provider failed" in str(caught.value)
    for _ in range(THRESHOLD - 1):
        with pytest.raises(ProviderError):
            await ask(model)
    with pytest.raises(ProviderError, match="breaker is open"):  # both open: refused at once, nothing called
        await ask(model)


async def test_a_failure_after_text_was_streamed_is_not_replayed_elsewhere() -> None:
    clock, m = ManualClock(), metrics()
    primary, fallback = Llm("openai", fail_after_text=True), Llm("anthropic")
    model = llm_chain(primary, fallback, clock=clock, m=m)
    with pytest.raises(ProviderError, match=r"\[DONE\]"):
        await ask(model)
    assert fallback.calls == 0  # the caller heard the start of that reply already


async def test_a_cancelled_half_open_trial_does_not_leave_the_breaker_stuck() -> None:
    clock, m = ManualClock(), metrics()

    class Slow(Llm):
        async def stream(self, request: LlmRequest) -> AsyncIterator[LlmChunk]:
            self.calls += 1
            if self.down:
                raise ProviderError("llm", self.name, "HTTP 429", status=429)
            await asyncio.Event().wait()  # never answers: the caller barges in
            yield TextDelta("")

    primary = Slow("openai", down=True)
    model = llm_chain(primary, Llm("anthropic"), clock=clock, m=m)
    for _ in range(THRESHOLD):
        await ask(model)
    primary.down = False
    clock.advance(RESET_S)
    task = asyncio.create_task(ask(model))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert primary.calls == THRESHOLD + 1  # the half-open trial is in flight
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert value(m, "runtime_breaker_state", provider="openai", role="llm") == 2  # re-opened, not stuck
    clock.advance(RESET_S)
    assert value(m, "runtime_breaker_state", provider="openai", role="llm") == 1


async def test_tts_falls_back_before_the_first_byte() -> None:
    clock, m = ManualClock(), metrics()
    primary, fallback = Tts("elevenlabs", down=True), Tts("deepgram-aura")
    tts = FallbackTextToSpeech(
        Chain("tts", [primary, fallback], clock=clock, failure_threshold=2, reset_after_s=RESET_S, observer=m)
    )
    for _ in range(4):
        audio = b"".join([chunk async for chunk in tts.synthesize("Hello.", PCM_8K)])
        assert audio == b"deepgram-aura"
    assert primary.calls == 2
    assert value(m, "runtime_breaker_trips_total", provider="elevenlabs", role="tts") == 1
    assert (
        value(m, "runtime_provider_fallbacks_total", role="tts", **{"from": "elevenlabs", "to": "deepgram-aura"}) == 4
    )


# --- speech-to-text: open-time fallback, and a stream that fails mid-call -------------------------------------


@dataclass
class Stream:
    name: str
    sent: bytearray = field(default_factory=bytearray)
    queue: asyncio.Queue[SttEvent | ProviderError | None] = field(default_factory=asyncio.Queue)
    closed: bool = False

    async def send_audio(self, audio: bytes) -> None:
        if self.closed:
            raise ProviderError("stt", self.name, "stream is closed")
        self.sent += audio

    async def events(self) -> AsyncIterator[SttEvent]:
        while (item := await self.queue.get()) is not None:
            if isinstance(item, ProviderError):
                self.closed = True
                raise item
            yield item

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)


@dataclass
class Stt:
    name: str
    down: bool = False
    opened: list[Stream] = field(default_factory=list)
    calls: int = 0
    was_opened: asyncio.Event = field(default_factory=asyncio.Event)

    async def open_stream(self, audio_format: AudioFormat, *, call_id: str) -> Stream:
        self.calls += 1
        if self.down:
            raise ProviderError("stt", self.name, "handshake refused: 429", status=429)
        stream = Stream(self.name)
        self.opened.append(stream)
        self.was_opened.set()
        return stream


def said(text: str) -> Transcript:
    return Transcript(text, is_final=True, speech_final=True, start=0.0, duration=1.0)


async def test_stt_opens_on_the_fallback_when_the_primary_refuses() -> None:
    clock, m = ManualClock(), metrics()
    primary, fallback = Stt("deepgram", down=True), Stt("assemblyai")
    stt = FallbackSpeechToText(
        Chain("stt", [primary, fallback], clock=clock, failure_threshold=1, reset_after_s=RESET_S, observer=m)
    )
    first = await stt.open_stream(PCM_8K, call_id="c1")
    second = await stt.open_stream(PCM_8K, call_id="c2")
    assert (first.provider, second.provider) == ("assemblyai", "assemblyai")
    assert primary.calls == 1  # threshold 1: the second call skipped it
    assert value(m, "runtime_provider_fallbacks_total", role="stt", **{"from": "deepgram", "to": "assemblyai"}) == 2


async def test_a_stream_dropped_mid_call_is_reopened_on_the_next_provider_and_keeps_listening() -> None:
    clock, m = ManualClock(), metrics()
    primary, fallback = Stt("deepgram"), Stt("assemblyai")
    stt = FallbackSpeechToText(
        Chain("stt", [primary, fallback], clock=clock, failure_threshold=3, reset_after_s=RESET_S, observer=m)
    )
    stream = await stt.open_stream(PCM_8K, call_id="c1")
    heard: asyncio.Queue[str] = asyncio.Queue()

    async def read() -> None:
        async for event in stream.events():
            if isinstance(event, Transcript):
                heard.put_nowait(event.text)

    reader = asyncio.create_task(read())
    await stream.send_audio(b"\x01\x00")
    primary.opened[0].queue.put_nowait(said("hello"))
    primary.opened[0].queue.put_nowait(ProviderError("stt", "deepgram", "stream closed by the provider (code 1006)"))
    async with asyncio.timeout(5):
        assert await heard.get() == "hello"
        await fallback.was_opened.wait()
    assert stream.provider == "assemblyai"
    await stream.send_audio(b"\x02\x00")
    fallback.opened[0].queue.put_nowait(said("tuesday please"))
    async with asyncio.timeout(5):
        assert await heard.get() == "tuesday please"
    await stream.close()
    async with asyncio.timeout(5):
        await reader
    assert bytes(fallback.opened[0].sent) == b"\x02\x00"
    assert value(m, "runtime_provider_fallbacks_total", role="stt", **{"from": "deepgram", "to": "assemblyai"}) == 1
    assert value(m, "runtime_breaker_state", provider="deepgram", role="stt") == 0  # one failure, under threshold


async def test_audio_sent_while_the_stream_is_gone_is_replayed_to_the_new_one() -> None:
    clock, m = ManualClock(), metrics()
    primary, fallback = Stt("deepgram"), Stt("assemblyai")
    stt = FallbackSpeechToText(
        Chain("stt", [primary, fallback], clock=clock, failure_threshold=3, reset_after_s=RESET_S, observer=m)
    )
    stream = await stt.open_stream(PCM_8K, call_id="c1")
    primary.opened[0].closed = True  # the socket died: the next send fails
    await stream.send_audio(b"\x03\x00\x04\x00")
    assert stream.provider == "assemblyai"
    assert bytes(fallback.opened[0].sent) == b"\x03\x00\x04\x00"


async def test_no_provider_left_mid_call_fails_the_stream() -> None:
    clock, m = ManualClock(), metrics()
    primary = Stt("deepgram")
    stt = FallbackSpeechToText(
        Chain("stt", [primary], clock=clock, failure_threshold=1, reset_after_s=RESET_S, observer=m)
    )
    stream = await stt.open_stream(PCM_8K, call_id="c1")
    primary.down = True
    primary.opened[0].queue.put_nowait(ProviderError("stt", "deepgram", "dropped"))
    with pytest.raises(ProviderError):
        async with asyncio.timeout(5):
            async for _ in stream.events():
                pass
    assert primary.calls == 1  # its breaker opened on the drop (threshold 1): not even a reconnect attempt
