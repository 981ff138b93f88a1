"""Fake STT, TTS and LLM providers (and a CRM): real servers on loopback that the official SDKs talk to
through a base URL.

One aiohttp app per provider (HTTP and websockets on one port), each built by an app factory from its typed
config, a seeded ``random.Random`` and an injected clock:

- :func:`create_deepgram_app` (``fake_providers.deepgram``): live STT ``/v1/listen``, Aura TTS ``/v1/speak``;
- :func:`create_elevenlabs_app` (``fake_providers.elevenlabs``): ``/v1/text-to-speech/...`` HTTP and
  websockets;
- :func:`create_openai_app` (``fake_providers.openai_chat``): ``/v1/chat/completions`` (scripted),
  ``/v1/models``;
- :func:`create_anthropic_app` (``fake_providers.anthropic_messages``): ``/v1/messages`` (the same script
  as the OpenAI fake, SSE streaming), the LLM of another API family;
- :func:`create_assemblyai_app` (``fake_providers.assemblyai_realtime``): AssemblyAI Universal-Streaming
  ``/v3/ws``, the live STT of another API family;
- :func:`create_crm_app` (``fake_providers.crm``): the CRM/calendar/workflow API the runtime's tool and
  workflow seams call, recording every request.

Audio is phrase audio (``harness.audio.phrase_codec``): the STT transcript is the text the codec hears, and
TTS audio decodes back to the text it was asked to say. Every request passes through the provider's
:class:`~fake_providers.gate.ProviderGate` (latency, application faults and rate limiters; counters for
metrics), and every delay is drawn from a :class:`~fake_providers.latency.Latency`. Every app serves the same
control API under ``/_chaos`` to add and remove faults and limits at run time (fake_providers/FAULTS.md).
Run them with ``python -m fake_providers serve`` or, in tests, ``async with serve_app(app) as base_url``.
"""

from fake_providers.anthropic_messages import AnthropicConfig, create_anthropic_app
from fake_providers.assemblyai_realtime import AssemblyAIConfig, create_assemblyai_app
from fake_providers.config import PROVIDERS, FakeProvidersConfig, load_config, load_faults
from fake_providers.crm import CrmConfig, create_crm_app
from fake_providers.deepgram import DeepgramConfig, create_deepgram_app
from fake_providers.elevenlabs import ElevenLabsConfig, create_elevenlabs_app
from fake_providers.faults import FAULT_KINDS, Fault, FaultError, parse_fault
from fake_providers.gate import ProviderCounters, ProviderGate, gate_of
from fake_providers.latency import Distribution, Latency
from fake_providers.limits import Limits
from fake_providers.openai_chat import OpenAIConfig, create_openai_app
from fake_providers.openai_script import Rule, ToolCallSpec
from fake_providers.serve import serve_app

__all__ = [
    "FAULT_KINDS",
    "PROVIDERS",
    "AnthropicConfig",
    "AssemblyAIConfig",
    "CrmConfig",
    "DeepgramConfig",
    "Distribution",
    "ElevenLabsConfig",
    "FakeProvidersConfig",
    "Fault",
    "FaultError",
    "Latency",
    "Limits",
    "OpenAIConfig",
    "ProviderCounters",
    "ProviderGate",
    "Rule",
    "ToolCallSpec",
    "create_anthropic_app",
    "create_assemblyai_app",
    "create_crm_app",
    "create_deepgram_app",
    "create_elevenlabs_app",
    "create_openai_app",
    "gate_of",
    "load_config",
    "load_faults",
    "parse_fault",
    "serve_app",
]
