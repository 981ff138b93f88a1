"""The fake providers' configuration file and the registry of providers by name.

A config file (JSON, or YAML which includes JSON) has one optional section per provider::

    {"deepgram": {...DeepgramConfig...}, "elevenlabs": {...ElevenLabsConfig...}, "openai":
    {...OpenAIConfig...}, "crm": {...CrmConfig...}}

Every section may set ``faults: [...]`` and ``limits: {...}`` in force from the start (fake_providers/FAULTS.md).
A faults file (``serve --faults FILE``) holds only those, per provider, and adds to the config's::

    {"openai": {"faults": [{"kind": "rate_limit", "probability": 0.2}], "limits": {"requests_per_second": 5}},
     "deepgram": [{"kind": "stall", "route": "listen", "after_chunks": 2, "stall_ms": 3000}]}

(a list is short for ``{"faults": [...]}``). Both are validated whole before anything starts; an error names
the file, the field path and the reason.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any

import yaml
from aiohttp import web
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from fake_providers.anthropic_messages import AnthropicConfig, create_anthropic_app
from fake_providers.assemblyai_realtime import AssemblyAIConfig, create_assemblyai_app
from fake_providers.chaos import ChaosSettings
from fake_providers.crm import CrmConfig, create_crm_app
from fake_providers.deepgram import DeepgramConfig, create_deepgram_app
from fake_providers.elevenlabs import ElevenLabsConfig, create_elevenlabs_app
from fake_providers.http import describe_errors
from fake_providers.openai_chat import OpenAIConfig, create_openai_app


class FakeProvidersConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: the seed of every provider that does not set its own (each derives its own generator from it)
    seed: int = 0
    deepgram: DeepgramConfig = Field(default_factory=DeepgramConfig)
    elevenlabs: ElevenLabsConfig = Field(default_factory=ElevenLabsConfig)
    openai: OpenAIConfig = Field(default_factory=OpenAIConfig)
    crm: CrmConfig = Field(default_factory=CrmConfig)
    #: the fallbacks of another API family (safeguard 4): Anthropic Messages (LLM), AssemblyAI streaming (STT)
    anthropic: AnthropicConfig = Field(default_factory=AnthropicConfig)
    assemblyai: AssemblyAIConfig = Field(default_factory=AssemblyAIConfig)


#: provider name -> app factory, called with that provider's config section
PROVIDERS: Mapping[str, Callable[..., web.Application]] = MappingProxyType(
    {
        "deepgram": create_deepgram_app,
        "elevenlabs": create_elevenlabs_app,
        "openai": create_openai_app,
        "crm": create_crm_app,
        "anthropic": create_anthropic_app,
        "assemblyai": create_assemblyai_app,
    }
)


# -- the faults file: only ``faults`` and ``limits``, checked against each provider's routes -----------------


class DeepgramChaos(ChaosSettings):
    route_table = DeepgramConfig.route_table


class ElevenLabsChaos(ChaosSettings):
    route_table = ElevenLabsConfig.route_table


class OpenAIChaos(ChaosSettings):
    route_table = OpenAIConfig.route_table


class CrmChaos(ChaosSettings):
    route_table = CrmConfig.route_table


class AnthropicChaos(ChaosSettings):
    route_table = AnthropicConfig.route_table


class AssemblyAIChaos(ChaosSettings):
    route_table = AssemblyAIConfig.route_table


def _list_is_faults(value: Any) -> Any:
    return {"faults": value} if isinstance(value, list) else value


class FaultsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    deepgram: Annotated[DeepgramChaos | None, BeforeValidator(_list_is_faults)] = None
    elevenlabs: Annotated[ElevenLabsChaos | None, BeforeValidator(_list_is_faults)] = None
    openai: Annotated[OpenAIChaos | None, BeforeValidator(_list_is_faults)] = None
    crm: Annotated[CrmChaos | None, BeforeValidator(_list_is_faults)] = None
    anthropic: Annotated[AnthropicChaos | None, BeforeValidator(_list_is_faults)] = None
    assemblyai: Annotated[AssemblyAIChaos | None, BeforeValidator(_list_is_faults)] = None


def with_faults(config: FakeProvidersConfig, extra: FaultsFile) -> FakeProvidersConfig:
    """``config`` with the faults of ``extra`` added after its own, and its limits where ``extra`` sets them."""
    update: dict[str, Any] = {}
    for name in PROVIDERS:
        added: ChaosSettings | None = getattr(extra, name)
        if added is None:
            continue
        section: ChaosSettings = getattr(config, name)
        update[name] = section.model_copy(
            update={
                "faults": [*section.faults, *added.faults],
                "limits": added.limits if added.limits is not None else section.limits,
            }
        )
    return config.model_copy(update=update)


def provider_rng(config: FakeProvidersConfig, name: str) -> random.Random:
    """Provider ``name``'s seeded generator: its own ``seed``, else one derived from the top-level seed."""
    own = getattr(config, name).seed
    return random.Random(own if own is not None else f"{config.seed}:{name}")


class ConfigError(Exception):
    """A config file that cannot be used; the message says where and why."""


def _read(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        return json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {exc}"
        ) from exc


def load_config(path: Path) -> FakeProvidersConfig:
    data = _read(path)
    try:
        return FakeProvidersConfig.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_errors(exc)}") from exc


def load_faults(path: Path) -> FaultsFile:
    """A faults file (``serve --faults``): per provider, faults and limits in force from the start."""
    data = _read(path)
    try:
        return FaultsFile.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_errors(exc)}") from exc
