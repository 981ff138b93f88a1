"""Provider resilience (safeguard 4, incident 4: Vapi, Jan 2026): a circuit breaker per provider and an ordered
fallback chain per role, behind the same :class:`SpeechToText` / :class:`LanguageModel` / :class:`TextToSpeech`
seams the call already uses.

Why: with one provider per role, a rate-limited (429) or down provider fails every call it touches; retrying it
harder makes it worse. With a chain, a request goes to the first provider whose breaker lets it through; a
refusal, a 5xx, a connect error or a timeout *before anything was streamed* is that provider's failure and the
request moves on to the next one at once. After ``failure_threshold`` consecutive failures the provider's breaker
opens and the chain skips it without calling it, until ``reset_after_s`` has passed and one trial request
(half-open) decides whether it is back.

What counts, per role:

- LLM and TTS: the first streamed chunk is the provider's success (it accepted and is answering). A failure
  before it falls back; a failure after it (a stream cut mid-sentence) is the provider's failure too, but the
  error goes to the call: the caller has already heard part of that reply, and starting it over elsewhere would
  repeat it.
- STT: opening the stream is the success. A stream that fails mid-call (dropped, a send refused, an ``Error``)
  is the provider's failure and the stream is reopened on the next provider (the failed one last), with the
  caller's audio of the meantime (up to ``BUFFER_S``) replayed, so the call keeps listening.
- Cancellation (a barge-in drops the LLM and TTS requests) is neither: a breaker waiting on a half-open trial
  that was cancelled before its first chunk is re-opened, so it never waits on a trial that will not report.

Exported through the :class:`ResilienceObserver` (the runtime's metrics): breaker state changes and trips, and
each fallback ``(role, from, to)``: a request that moved from one provider (failed, or skipped while its breaker
is open) to the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from harness.audio.formats import AudioFormat
from harness.clock import Clock
from reference_runtime.breaker import BreakerState, CircuitBreaker
from reference_runtime.dialog import LlmRequest
from reference_runtime.providers.base import (
    LanguageModel,
    LlmChunk,
    ProviderError,
    Service,
    SpeechToText,
    SttEvent,
    SttStream,
    TextToSpeech,
)

log = logging.getLogger(__name__)

#: seconds of caller audio kept while an STT stream is being reopened, replayed to the new one
BUFFER_S = 5.0


class ResilienceObserver(Protocol):
    """Where breakers and chains report (implemented by the runtime's metrics)."""

    def breaker_registered(self, role: Service, provider: str, state: Callable[[], BreakerState]) -> None:
        """A breaker exists; ``state`` reads it (open turns half-open by time alone, with no event to report)."""
        ...

    def breaker_changed(self, role: Service, provider: str, old: BreakerState, new: BreakerState) -> None: ...

    def fallback_used(self, role: Service, from_provider: str, to_provider: str) -> None: ...


class NullResilienceObserver:
    def breaker_registered(self, role: Service, provider: str, state: Callable[[], BreakerState]) -> None:
        return None

    def breaker_changed(self, role: Service, provider: str, old: BreakerState, new: BreakerState) -> None:
        return None

    def fallback_used(self, role: Service, from_provider: str, to_provider: str) -> None:
        return None


P = TypeVar("P", SpeechToText, LanguageModel, TextToSpeech)


@dataclass(frozen=True, slots=True)
class Member(Generic[P]):
    """One provider of a chain, with its breaker."""

    provider: P
    breaker: CircuitBreaker

    @property
    def name(self) -> str:
        return str(self.provider.name)


def abandon(member: Member[P]) -> None:
    """A request cancelled before its provider answered: no verdict. Only a half-open trial needs one (the
    breaker lets no other request through until it gets it): re-open it, the next trial comes after the reset."""
    if member.breaker.state is BreakerState.HALF_OPEN:
        member.breaker.failure()


class Chain(Generic[P]):
    """An ordered list of providers of one role, each behind its own breaker."""

    def __init__(
        self,
        role: Service,
        providers: Sequence[P],
        *,
        clock: Clock,
        failure_threshold: int,
        reset_after_s: float,
        observer: ResilienceObserver,
    ) -> None:
        if not providers:
            raise ValueError(f"{role}: a chain needs at least one provider")
        self.role = role
        self.observer = observer

        def changed(name: str, old: BreakerState, new: BreakerState) -> None:
            log.info("breaker %s: %s -> %s", name, old, new)
            observer.breaker_changed(role, name.split("/", 1)[1], old, new)

        self.members: list[Member[P]] = []
        for provider in providers:
            breaker = CircuitBreaker(
                f"{role}/{provider.name}",
                clock=clock,
                failure_threshold=failure_threshold,
                reset_after_s=reset_after_s,
                on_change=changed,
            )
            observer.breaker_registered(role, str(provider.name), lambda breaker=breaker: breaker.state)
            self.members.append(Member(provider, breaker))
        self.name = ">".join(m.name for m in self.members)

    def order(self, last: Member[P] | None = None) -> list[Member[P]]:
        """The chain's order; ``last`` (a provider that just failed this request) moves to the end."""
        if last is None:
            return list(self.members)
        return [m for m in self.members if m is not last] + [last]

    def exhausted(self, errors: list[ProviderError]) -> ProviderError:
        """The error a request gets when no provider served it: the one failure itself when there was one (a
        chain of one provider fails exactly as that provider does), else all of them, with the last status."""
        if len(errors) == 1:
            return errors[0]
        if errors:
            detail = "; ".join(str(e) for e in errors)
            return ProviderError(
                self.role, self.name, f"every provider failed or is open: {detail}", status=errors[-1].status
            )
        return ProviderError(self.role, self.name, "every provider's breaker is open")


class _Walk(Generic[P]):
    """One request's walk down a chain: which providers may be tried, and the fallbacks it takes."""

    def __init__(self, chain: Chain[P], last: Member[P] | None = None, moved_from: str | None = None) -> None:
        self.chain = chain
        self.last = last
        self.moved_from = moved_from
        self.errors: list[ProviderError] = []

    def members(self) -> list[Member[P]]:
        return self.chain.order(self.last)

    def admit(self, member: Member[P]) -> bool:
        """Whether to try ``member`` now; a skipped (open) provider is one the request moves away from."""
        if not member.breaker.allow():
            self.moved_from = member.name
            return False
        if self.moved_from is not None and self.moved_from != member.name:
            self.chain.observer.fallback_used(self.chain.role, self.moved_from, member.name)
        self.moved_from = None
        return True

    def failed(self, member: Member[P], error: ProviderError) -> None:
        member.breaker.failure()
        self.errors.append(error)
        self.moved_from = member.name
        log.warning("%s: %s failed (%s), trying the next provider", self.chain.role, member.name, error.reason)


# --- language model -----------------------------------------------------------------------------------------


class FallbackLanguageModel:
    def __init__(self, chain: Chain[LanguageModel]) -> None:
        self.chain = chain
        self.name = chain.name

    async def stream(self, request: LlmRequest) -> AsyncIterator[LlmChunk]:
        walk = _Walk(self.chain)
        for member in walk.members():
            if not walk.admit(member):
                continue
            answered = False
            try:
                async with contextlib.aclosing(member.provider.stream(request)) as chunks:
                    async for chunk in chunks:
                        if not answered:
                            answered = True
                            member.breaker.success()
                        yield chunk
                return
            except ProviderError as error:
                if answered:
                    member.breaker.failure()
                    raise
                walk.failed(member, error)
            except (asyncio.CancelledError, GeneratorExit):
                if not answered:
                    abandon(member)
                raise
        raise self.chain.exhausted(walk.errors)


# --- text-to-speech -----------------------------------------------------------------------------------------


class FallbackTextToSpeech:
    def __init__(self, chain: Chain[TextToSpeech]) -> None:
        self.chain = chain
        self.name = chain.name

    async def synthesize(self, text: str, audio_format: AudioFormat) -> AsyncIterator[bytes]:
        walk = _Walk(self.chain)
        for member in walk.members():
            if not walk.admit(member):
                continue
            answered = False
            try:
                async with contextlib.aclosing(member.provider.synthesize(text, audio_format)) as audio:
                    async for chunk in audio:
                        if not answered:
                            answered = True
                            member.breaker.success()
                        yield chunk
                if not answered:
                    member.breaker.success()  # a text with nothing to say: an empty, successful answer
                return
            except ProviderError as error:
                if answered:
                    member.breaker.failure()
                    raise
                walk.failed(member, error)
            except (asyncio.CancelledError, GeneratorExit):
                if not answered:
                    abandon(member)
                raise
        raise self.chain.exhausted(walk.errors)


# --- speech-to-text -----------------------------------------------------------------------------------------


class FallbackSpeechToText:
    def __init__(self, chain: Chain[SpeechToText]) -> None:
        self.chain = chain
        self.name = chain.name

    async def open_stream(self, audio_format: AudioFormat, *, call_id: str) -> ResilientSttStream:
        member, stream = await self.open_on_chain(audio_format, call_id=call_id)
        return ResilientSttStream(self, member, stream, audio_format, call_id)

    async def open_on_chain(
        self,
        audio_format: AudioFormat,
        *,
        call_id: str,
        last: Member[SpeechToText] | None = None,
        moved_from: str | None = None,
    ) -> tuple[Member[SpeechToText], SttStream]:
        walk = _Walk(self.chain, last=last, moved_from=moved_from)
        for member in walk.members():
            if not walk.admit(member):
                continue
            try:
                stream = await member.provider.open_stream(audio_format, call_id=call_id)
            except ProviderError as error:
                walk.failed(member, error)
                continue
            except asyncio.CancelledError:
                abandon(member)
                raise
            member.breaker.success()
            return member, stream
        raise self.chain.exhausted(walk.errors)


class ResilientSttStream:
    """A call's STT stream that survives its provider: a mid-call failure reopens it on the chain."""

    def __init__(
        self,
        stt: FallbackSpeechToText,
        member: Member[SpeechToText],
        stream: SttStream,
        audio_format: AudioFormat,
        call_id: str,
    ) -> None:
        self._stt = stt
        self._member = member
        self._stream = stream
        self._format = audio_format
        self._call_id = call_id
        self._lock = asyncio.Lock()
        self._reopening = False
        self._backlog = bytearray()
        self._backlog_max = int(audio_format.bytes_per_second * BUFFER_S)
        self._closing = False
        self._dead: ProviderError | None = None

    @property
    def provider(self) -> str:
        """The provider serving the stream now."""
        return self._member.name

    def _keep(self, audio: bytes) -> None:
        self._backlog += audio
        excess = len(self._backlog) - self._backlog_max
        if excess > 0:
            excess += excess % self._format.bytes_per_sample
            del self._backlog[:excess]

    async def send_audio(self, audio: bytes) -> None:
        if self._dead is not None:
            raise self._dead
        if self._closing:
            raise ProviderError("stt", self._stt.name, "stream is closed")
        if self._reopening:
            self._keep(audio)  # replayed to the new stream once it is open
            return
        stream = self._stream
        try:
            await stream.send_audio(audio)
        except ProviderError as error:
            self._keep(audio)
            await self._reopen(stream, error)

    async def events(self) -> AsyncIterator[SttEvent]:
        while True:
            stream = self._stream
            try:
                async for event in stream.events():
                    yield event
            except ProviderError as error:
                if self._closing:
                    return
                await self._reopen(stream, error)
                continue
            # the stream ended as closed by us: at the end of the call, or replaced by a reopen
            if self._closing:
                return
            async with self._lock:
                pass  # a reopen in progress (it closed this stream) finishes first
            if self._dead is not None:
                raise self._dead
            if stream is self._stream:
                return

    async def _reopen(self, failed: SttStream, error: ProviderError) -> None:
        """Replace ``failed`` with a stream on the chain (the failed provider last); raises ProviderError (the
        call then fails, as without the safeguard) when no provider can take it."""
        async with self._lock:
            if self._dead is not None:
                raise self._dead
            if failed is not self._stream or self._closing:
                return  # already reopened (send_audio and events() both saw the failure)
            self._reopening = True
            member = self._member
            member.breaker.failure()
            log.warning("call %s: stt %s failed mid-call (%s), reopening", self._call_id, member.name, error.reason)
            try:
                with contextlib.suppress(ProviderError):
                    await failed.close()
                try:
                    self._member, self._stream = await self._stt.open_on_chain(
                        self._format, call_id=self._call_id, last=member, moved_from=member.name
                    )
                except ProviderError as exhausted:
                    self._dead = exhausted
                    raise
                while self._backlog:  # audio may arrive while the backlog is being replayed
                    backlog, self._backlog = bytes(self._backlog), bytearray()
                    # a new stream that fails at once shows it in its events() too, which reopens again
                    with contextlib.suppress(ProviderError):
                        await self._stream.send_audio(backlog)
            finally:
                self._reopening = False

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        async with self._lock:
            with contextlib.suppress(ProviderError):
                await self._stream.close()
