"""Fake STT, TTS and LLM providers: real servers on loopback that the official SDKs talk to through a base
URL.

One aiohttp app per provider (HTTP and websockets on one port), each built by an app factory from its typed
config, a seeded ``random.Random`` and an injected clock:

- :func:`create_deepgram_app` (``fake_providers.deepgram``): live STT ``/v1/listen``, Aura TTS ``/v1/speak``;
- :func:`create_elevenlabs_app` (``fake_providers.elevenlabs``): ``/v1/text-to-speech/...`` HTTP and
  websockets;
- :func:`create_openai_app` (``fake_providers.openai_chat``): ``/v1/chat/completions`` (scripted),
  ``/v1/models``.

Audio is phrase audio (``harness.audio.phrase_codec``): the STT transcript is the text the codec hears, and
TTS audio decodes back to the text it was asked to say. Every request passes through the provider's
:class:`~fake_providers.gate.ProviderGate` (latency now, faults later; counters for metrics), and every delay
is drawn from a :class:`~fake_providers.latency.Latency`. Run them with ``python -m fake_providers serve`` or,
in tests, ``async with serve_app(app) as base_url``.
"""

from fake_providers.config import PROVIDERS, FakeProvidersConfig, load_config
from fake_providers.deepgram import DeepgramConfig, create_deepgram_app
from fake_providers.elevenlabs import ElevenLabsConfig, create_elevenlabs_app
from fake_providers.gate import ProviderCounters, ProviderGate, gate_of
from fake_providers.latency import Distribution, Latency
from fake_providers.openai_chat import OpenAIConfig, create_openai_app
from fake_providers.openai_script import Rule, ToolCallSpec
from fake_providers.serve import serve_app

__all__ = [
    "PROVIDERS",
    "DeepgramConfig",
    "Distribution",
    "ElevenLabsConfig",
    "FakeProvidersConfig",
    "Latency",
    "OpenAIConfig",
    "ProviderCounters",
    "ProviderGate",
    "Rule",
    "ToolCallSpec",
    "create_deepgram_app",
    "create_elevenlabs_app",
    "create_openai_app",
    "gate_of",
    "load_config",
    "serve_app",
]
