"""Provider seams, their clients, and how the runtime builds them per safeguard 4's mode:

- ``broken``: one provider per role (the configured primary), no breaker, no fallback: a rate-limited or down
  provider fails the calls it touches (incident 4, the way it shipped);
- ``fixed``: per role, a chain of the primary then ``providers.fallbacks``, each behind its own circuit breaker
  (:mod:`reference_runtime.providers.resilience`).
"""

from __future__ import annotations

from typing import Literal

import aiohttp

from harness.clock import Clock
from reference_runtime.config import (
    AnthropicLlmConfig,
    AssemblyAISttConfig,
    DeepgramSttConfig,
    DeepgramTtsConfig,
    ElevenLabsTtsConfig,
    OpenAILlmConfig,
    ProvidersConfig,
)
from reference_runtime.providers.anthropic_llm import AnthropicLanguageModel
from reference_runtime.providers.assemblyai_stt import AssemblyAISpeechToText
from reference_runtime.providers.base import (
    LanguageModel,
    ProviderError,
    ProviderObserver,
    Providers,
    Service,
    SpeechToText,
    SttStream,
    TextToSpeech,
)
from reference_runtime.providers.deepgram_stt import DeepgramSpeechToText
from reference_runtime.providers.openai_llm import OpenAILanguageModel
from reference_runtime.providers.resilience import (
    Chain,
    FallbackLanguageModel,
    FallbackSpeechToText,
    FallbackTextToSpeech,
    NullResilienceObserver,
    P,
    ResilienceObserver,
)
from reference_runtime.providers.tts import DeepgramTextToSpeech, ElevenLabsTextToSpeech

__all__ = [
    "LanguageModel",
    "ProviderError",
    "ProviderObserver",
    "Providers",
    "ResilienceObserver",
    "SpeechToText",
    "SttStream",
    "TextToSpeech",
    "build_providers",
]


def _stt(
    config: DeepgramSttConfig | AssemblyAISttConfig,
    session: aiohttp.ClientSession,
    clock: Clock,
    observer: ProviderObserver,
) -> SpeechToText:
    if isinstance(config, AssemblyAISttConfig):
        return AssemblyAISpeechToText(config, session, clock=clock, observer=observer)
    return DeepgramSpeechToText(config, session, clock=clock, observer=observer)


def _llm(
    config: OpenAILlmConfig | AnthropicLlmConfig,
    session: aiohttp.ClientSession,
    clock: Clock,
    observer: ProviderObserver,
) -> LanguageModel:
    if isinstance(config, AnthropicLlmConfig):
        return AnthropicLanguageModel(config, session, clock=clock, observer=observer)
    return OpenAILanguageModel(config, session, clock=clock, observer=observer)


def _tts(
    config: ElevenLabsTtsConfig | DeepgramTtsConfig,
    session: aiohttp.ClientSession,
    clock: Clock,
    observer: ProviderObserver,
) -> TextToSpeech:
    if isinstance(config, DeepgramTtsConfig):
        return DeepgramTextToSpeech(config, session, clock=clock, observer=observer)
    return ElevenLabsTextToSpeech(config, session, clock=clock, observer=observer)


def build_providers(
    config: ProvidersConfig,
    session: aiohttp.ClientSession,
    *,
    clock: Clock,
    observer: ProviderObserver,
    mode: Literal["broken", "fixed"] = "fixed",
    resilience: ResilienceObserver | None = None,
) -> Providers:
    """The ``kind`` of each section picks the client; ``mode`` is ``safeguards.providers``. ``resilience``
    receives breaker and fallback events (the runtime's metrics)."""
    stt = _stt(config.stt, session, clock, observer)
    llm = _llm(config.llm, session, clock, observer)
    tts = _tts(config.tts, session, clock, observer)
    if mode == "broken":
        return Providers(stt=stt, llm=llm, tts=tts)
    events = resilience or NullResilienceObserver()
    fallbacks = config.fallbacks

    def chain(role: Service, providers: list[P]) -> Chain[P]:
        return Chain(
            role,
            providers,
            clock=clock,
            failure_threshold=config.breaker.failure_threshold,
            reset_after_s=config.breaker.reset_after_s,
            observer=events,
        )

    return Providers(
        stt=FallbackSpeechToText(chain("stt", [stt, *(_stt(f, session, clock, observer) for f in fallbacks.stt)])),
        llm=FallbackLanguageModel(chain("llm", [llm, *(_llm(f, session, clock, observer) for f in fallbacks.llm)])),
        tts=FallbackTextToSpeech(chain("tts", [tts, *(_tts(f, session, clock, observer) for f in fallbacks.tts)])),
    )
