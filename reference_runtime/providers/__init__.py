"""Provider seams and today's plain implementations (one provider each, no fallback, no breaker)."""

from __future__ import annotations

import aiohttp

from harness.clock import Clock
from reference_runtime.config import DeepgramTtsConfig, ProvidersConfig
from reference_runtime.providers.base import (
    LanguageModel,
    ProviderError,
    ProviderObserver,
    Providers,
    SpeechToText,
    SttStream,
    TextToSpeech,
)
from reference_runtime.providers.deepgram_stt import DeepgramSpeechToText
from reference_runtime.providers.openai_llm import OpenAILanguageModel
from reference_runtime.providers.tts import DeepgramTextToSpeech, ElevenLabsTextToSpeech

__all__ = [
    "LanguageModel",
    "ProviderError",
    "ProviderObserver",
    "Providers",
    "SpeechToText",
    "SttStream",
    "TextToSpeech",
    "build_providers",
]


def build_providers(
    config: ProvidersConfig, session: aiohttp.ClientSession, *, clock: Clock, observer: ProviderObserver
) -> Providers:
    """The ``kind`` of each section picks the implementation (the safeguards issue wraps these in chains)."""
    tts: TextToSpeech
    if isinstance(config.tts, DeepgramTtsConfig):
        tts = DeepgramTextToSpeech(config.tts, session, clock=clock, observer=observer)
    else:
        tts = ElevenLabsTextToSpeech(config.tts, session, clock=clock, observer=observer)
    return Providers(
        stt=DeepgramSpeechToText(config.stt, session, clock=clock, observer=observer),
        llm=OpenAILanguageModel(config.llm, session, clock=clock, observer=observer),
        tts=tts,
    )
