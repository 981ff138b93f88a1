"""The fake providers' configuration file and the registry of providers by name.

A config file (JSON, or YAML which includes JSON) has one optional section per provider::

    {"deepgram": {...DeepgramConfig...}, "elevenlabs": {...ElevenLabsConfig...}, "openai":
    {...OpenAIConfig...}}

It is validated whole before anything starts; an error names the file, the field path and the reason.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


#: provider name -> app factory, called with that provider's config section
PROVIDERS: Mapping[str, Callable[..., web.Application]] = MappingProxyType(
    {"deepgram": create_deepgram_app, "elevenlabs": create_elevenlabs_app, "openai": create_openai_app}
)


def provider_rng(config: FakeProvidersConfig, name: str) -> random.Random:
    """Provider ``name``'s seeded generator: its own ``seed``, else one derived from the top-level seed."""
    own = getattr(config, name).seed
    return random.Random(own if own is not None else f"{config.seed}:{name}")


class ConfigError(Exception):
    """A config file that cannot be used; the message says where and why."""


def load_config(path: Path) -> FakeProvidersConfig:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        data: Any = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {exc}"
        ) from exc
    try:
        return FakeProvidersConfig.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_errors(exc)}") from exc
