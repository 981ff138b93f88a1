"""``python -m fake_providers serve`` as a subprocess: the listening lines, one request to each provider, a
clean exit on SIGTERM; and the config file's validation."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from openai import AsyncOpenAI

from fake_providers.config import ConfigError, load_config
from harness.audio.formats import AudioFormat, from_bytes
from harness.audio.phrase_codec import DecodedPhrase, decode_phrases, normalize_text

CONFIG = """
seed: 7
deepgram:
  tts: {ttfb: 0.01, chunk_interval: 0.0}
elevenlabs:
  latency: {ttfb: {kind: uniform, low: 0.0, high: 0.02}, chunk_interval: 0.0}
openai:
  latency: {ttfb: 0.0}
  script:
    - if_last_user: "(?i)hours"
      reply: "We are open nine to five."
"""


def texts(audio: bytes, fmt: AudioFormat) -> list[str]:
    events = decode_phrases(from_bytes(audio, fmt), fmt.sample_rate)
    return [e.text for e in events if isinstance(e, DecodedPhrase)]


async def start(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fake_providers",
        "serve",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )


async def test_serve_announces_each_provider_serves_and_exits_on_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "providers.yaml"
    config.write_text(CONFIG)
    process = await start(
        "--host", "127.0.0.1", "--port", "0",
        "--provider", "deepgram", "--provider", "elevenlabs", "--provider", "openai",
        "--config", str(config),
    )  # fmt: skip
    assert process.stdout is not None
    try:
        async with asyncio.timeout(60):
            lines = [json.loads(await process.stdout.readline()) for _ in range(3)]
        assert [line["name"] for line in lines] == ["deepgram", "elevenlabs", "openai"]
        assert all(line["event"] == "listening" for line in lines)
        urls = {line["name"]: line["url"] for line in lines}
        assert len({u.rsplit(":", 1)[1] for u in urls.values()}) == 3  # one port each
        assert all(u.startswith("http://127.0.0.1:") for u in urls.values())

        async with asyncio.timeout(30), aiohttp.ClientSession() as session:
            async with session.post(
                f"{urls['deepgram']}/v1/speak?encoding=mulaw&sample_rate=8000&container=none",
                json={"text": "Deepgram speaking."},
                headers={"Authorization": "Token k"},
            ) as response:
                assert response.status == 200
                assert texts(await response.read(), AudioFormat("mulaw", 8000)) == ["Deepgram speaking."]
            async with session.post(
                f"{urls['elevenlabs']}/v1/text-to-speech/voice/stream?output_format=pcm_16000",
                json={"text": "ElevenLabs speaking."},
                headers={"xi-api-key": "k"},
            ) as response:
                assert response.status == 200
                pcm = AudioFormat("linear16", 16000)
                assert texts(await response.read(), pcm) == [normalize_text("ElevenLabs speaking.")]
            llm = AsyncOpenAI(base_url=f"{urls['openai']}/v1", api_key="sk-test", max_retries=0)
            reply = await llm.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "What are your hours?"}]
            )
            assert reply.choices[0].message.content == "We are open nine to five."
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            code = await process.wait()
    assert code == 0
    rest = await process.stdout.read()
    assert rest == b"", "nothing but the listening lines goes to stdout"


async def test_serve_refuses_a_bad_config_naming_the_field(tmp_path: Path) -> None:
    config = tmp_path / "providers.json"
    config.write_text(json.dumps({"openai": {"latency": {"ttfb": {"kind": "fixed", "value": -1}}}}))
    process = await start("--provider", "openai", "--config", str(config))
    async with asyncio.timeout(60):
        stdout, stderr = await process.communicate()
    assert process.returncode == 2
    assert stdout == b""
    assert b"openai.latency.ttfb.fixed.value" in stderr


def test_load_config_yaml_and_json_and_errors(tmp_path: Path) -> None:
    yaml_file = tmp_path / "p.yaml"
    yaml_file.write_text(CONFIG)
    loaded = load_config(yaml_file)
    assert loaded.seed == 7 and loaded.openai.script[0].reply == "We are open nine to five."
    json_file = tmp_path / "p.json"
    json_file.write_text(json.dumps({"deepgram": {"port": 9000, "idle_timeout_s": 5}}))
    assert load_config(json_file).deepgram.port == 9000
    json_file.write_text(json.dumps({"deepgram": {"idle_timeout": 5}}))
    with pytest.raises(ConfigError, match=r"p\.json: deepgram\.idle_timeout: Extra inputs are not permitted"):
        load_config(json_file)
    json_file.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(json_file)
