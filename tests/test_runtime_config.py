"""Runtime config (reference_runtime.config): defaults, YAML/JSON loading, errors that name the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.audio.formats import TWILIO_MULAW_8K, AudioFormat
from reference_runtime.config import ConfigError, load_config, parse_config

MINIMAL = {
    "providers": {
        "stt": {"kind": "deepgram", "base_url": "http://127.0.0.1:1"},
        "llm": {"kind": "openai", "base_url": "http://127.0.0.1:2"},
        "tts": {"kind": "elevenlabs", "base_url": "http://127.0.0.1:3"},
    }
}


def test_minimal_config_has_telephony_defaults() -> None:
    config = parse_config(MINIMAL)
    assert config.telephony_audio.to_format() == TWILIO_MULAW_8K
    assert config.stt_audio.to_format() == AudioFormat("linear16", 8000)  # no resampling on the hot path
    assert config.tts_audio.to_format() == TWILIO_MULAW_8K
    assert config.providers.tts.kind == "elevenlabs"
    assert config.twilio.auth_token is None
    # every safeguard is on unless a scenario asks for the broken way (the incident library does)
    assert config.safeguards.model_dump() == {name: "fixed" for name in
                                              ("recording", "encoding", "workflows", "providers", "memory", "tools")}


def test_tts_kind_selects_the_provider_model() -> None:
    data = json.loads(json.dumps(MINIMAL))
    data["providers"]["tts"] = {"kind": "deepgram", "base_url": "http://x", "model": "aura-2-thalia-en"}
    assert parse_config(data).providers.tts.kind == "deepgram"


def _error(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="runtime.yaml")
    return str(info.value)


def test_unknown_key_is_rejected_with_its_path() -> None:
    data = json.loads(json.dumps(MINIMAL))
    data["providers"]["stt"]["endpointing"] = 300  # the real field is endpointing_ms
    message = _error(data)
    assert "runtime.yaml" in message
    assert "providers.stt.endpointing" in message


def test_wrong_type_names_the_field() -> None:
    data = {**MINIMAL, "capacity": "lots"}
    assert "capacity" in _error(data)
    data = {**MINIMAL, "vad": {"threshold_dbfs": 6}}
    assert "vad.threshold_dbfs" in _error(data)


def test_missing_provider_is_named() -> None:
    data = {"providers": {"stt": MINIMAL["providers"]["stt"], "llm": MINIMAL["providers"]["llm"]}}
    assert "providers.tts" in _error(data)


def test_objective_graph_must_be_closed() -> None:
    data = {**MINIMAL, "dialog": {"objectives": [{"name": "ask", "instruction": "x", "next": "nowhere"}]}}
    message = _error(data)
    assert "dialog" in message and "nowhere" in message


def test_safeguards_section_is_reserved() -> None:
    assert parse_config({**MINIMAL, "safeguards": {}}).safeguards is not None
    assert "safeguards.spool" in _error({**MINIMAL, "safeguards": {"spool": True}})


def test_load_yaml_and_json_with_overrides(tmp_path: Path) -> None:
    yaml_path = tmp_path / "runtime.yaml"
    yaml_path.write_text(
        "port: 9000\n"
        "capacity: 2\n"
        "providers:\n"
        "  stt: {kind: deepgram, base_url: 'http://127.0.0.1:1', endpointing_ms: 250}\n"
        "  llm: {kind: openai, base_url: 'http://127.0.0.1:2'}\n"
        "  tts: {kind: elevenlabs, base_url: 'http://127.0.0.1:3'}\n"
        "dialog:\n"
        "  greeting: Hello.\n"
        "  objectives:\n"
        "    - {name: ask, instruction: Ask., next: null}\n",
        encoding="utf-8",
    )
    config = load_config(yaml_path, overrides={"port": 0})
    assert config.port == 0 and config.capacity == 2
    assert config.providers.stt.endpointing_ms == 250
    assert config.dialog.objectives[0].name == "ask"

    json_path = tmp_path / "runtime.json"
    json_path.write_text(json.dumps({**MINIMAL, "capacity": 3}), encoding="utf-8")
    assert load_config(json_path).capacity == 3

    bad = tmp_path / "bad.yaml"
    bad.write_text("capacity: [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml"):
        load_config(bad)


def test_the_shipped_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[1] / "reference_runtime" / "example-config.yaml"
    config = load_config(example)
    assert [o.name for o in config.dialog.objectives] == ["ask", "confirm", "book"]
    assert config.providers.tts.kind == "elevenlabs"
