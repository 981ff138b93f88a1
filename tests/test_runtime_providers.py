"""Provider wire formats, sans-I/O: SSE decoding, chat-completion chunks and tool calls, Deepgram messages."""

from __future__ import annotations

import json

import pytest

from harness.audio.formats import PCM_16K, TWILIO_MULAW_8K
from reference_runtime.config import DeepgramSttConfig, ElevenLabsTtsConfig, OpenAILlmConfig
from reference_runtime.dialog import ChatMessage, LlmReply, LlmRequest, ToolCall, ToolSpec
from reference_runtime.providers.base import Transcript, UtteranceEnd
from reference_runtime.providers.deepgram_stt import listen_url, parse_listen_message
from reference_runtime.providers.openai_llm import (
    ReplyAccumulator,
    SseDecoder,
    SseEvent,
    completions_url,
    request_body,
)
from reference_runtime.providers.tts import ElevenLabsTextToSpeech


def chunk(delta: dict, finish: str | None = None) -> dict:
    return {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def test_sse_decoder_handles_split_lines_crlf_comments_and_named_events() -> None:
    decoder = SseDecoder()
    stream = (
        b': keep-alive\r\ndata: {"a":1}\r\n\r\n'
        b'data: {"b"\ndata: :2}\n\n'
        b'event: error\ndata: {"error":{}}\n\n'
        b"data: [DONE]\n\n"
    )
    events = [e for i in range(0, len(stream), 7) for e in decoder.feed(stream[i : i + 7])]
    assert events == [
        SseEvent("message", '{"a":1}'),
        SseEvent("message", '{"b"\n:2}'),
        SseEvent("error", '{"error":{}}'),
        SseEvent("message", "[DONE]"),
    ]


def test_accumulator_text_and_tool_calls_keyed_by_index() -> None:
    acc = ReplyAccumulator()
    assert acc.feed(chunk({"role": "assistant", "content": ""})) == ("", False)
    assert acc.feed(chunk({"content": "Let me "})) == ("Let me ", True)
    assert acc.feed(chunk({"content": "check."})) == ("check.", True)
    call0 = {"index": 0, "id": "call_a", "type": "function", "function": {"name": "lookup", "arguments": ""}}
    assert acc.feed(chunk({"tool_calls": [call0]}))[1]
    acc.feed(chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"day":'}}]}))
    acc.feed(
        chunk({"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "book", "arguments": "{}"}}]})
    )
    acc.feed(chunk({"tool_calls": [{"index": 0, "function": {"arguments": ' "tue"}'}}]}))
    acc.feed(chunk({}, finish="tool_calls"))
    acc.feed({"choices": [], "usage": {"total_tokens": 3}})
    assert acc.finish_reason == "tool_calls"
    reply = acc.reply()
    assert reply == LlmReply(
        "Let me check.",
        (ToolCall("call_a", "lookup", '{"day": "tue"}'), ToolCall("call_b", "book", "{}")),
    )
    assert reply.tool_calls[0].parsed_arguments() == {"day": "tue"}
    assert ToolCall("x", "y", "not json").parsed_arguments() == {}


def test_request_body_messages_tools_and_url() -> None:
    config = OpenAILlmConfig(base_url="http://127.0.0.1:9", model="gpt-test")
    call = ToolCall("call_a", "lookup", '{"day":"tue"}')
    request = LlmRequest(
        (
            ChatMessage("system", "Objective: ask. Ask."),
            ChatMessage("user", "hi"),
            ChatMessage("assistant", None, tool_calls=(call,)),
            ChatMessage("tool", '{"ok":true}', tool_call_id="call_a"),
        ),
        (ToolSpec("lookup", "Look up."),),
    )
    body = request_body(config, request)
    assert body["model"] == "gpt-test" and body["stream"] is True
    assert body["messages"][2] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "lookup", "arguments": '{"day":"tue"}'}}
        ],
    }
    assert body["messages"][3] == {"role": "tool", "content": '{"ok":true}', "tool_call_id": "call_a"}
    assert body["tools"][0]["function"]["name"] == "lookup"
    assert completions_url("http://h:1") == "http://h:1/v1/chat/completions"
    assert completions_url("https://api.openai.com/v1/") == "https://api.openai.com/v1/chat/completions"


def test_deepgram_results_and_utterance_end() -> None:
    results = {
        "type": "Results",
        "channel_index": [0, 1],
        "duration": 1.5,
        "start": 2.0,
        "is_final": True,
        "speech_final": True,
        "channel": {"alternatives": [{"transcript": "book me in", "confidence": 0.99, "words": []}]},
    }
    assert parse_listen_message(json.dumps(results)) == Transcript("book me in", True, True, 2.0, 1.5)
    assert parse_listen_message(
        '{"type":"UtteranceEnd","channel":[0,1],"last_word_end":3.5}'
    ) == UtteranceEnd(3.5)
    assert parse_listen_message('{"type":"Metadata","request_id":"x"}') is None
    assert parse_listen_message('{"type":"SpeechStarted","channel":[0],"timestamp":1}') is None
    with pytest.raises(ValueError):
        parse_listen_message("[]")


def test_deepgram_listen_url_declares_the_stt_format() -> None:
    config = DeepgramSttConfig(base_url="https://api.deepgram.com", model="nova-3", endpointing_ms=250)
    url = listen_url(config, PCM_16K)
    assert url.startswith("wss://api.deepgram.com/v1/listen?")
    for part in (
        "encoding=linear16",
        "sample_rate=16000",
        "interim_results=true",
        "endpointing=250",
        "utterance_end_ms=1000",
        "model=nova-3",
    ):
        assert part in url
    assert "encoding=mulaw&sample_rate=8000" in listen_url(config, TWILIO_MULAW_8K)


def test_elevenlabs_url_uses_the_requested_output_format() -> None:
    tts = ElevenLabsTextToSpeech(
        ElevenLabsTtsConfig(kind="elevenlabs", base_url="http://h:1/", voice_id="v1"),
        None,  # type: ignore[arg-type]  (no request is made)
        clock=None,  # type: ignore[arg-type]
        observer=None,  # type: ignore[arg-type]
    )
    assert tts.url(TWILIO_MULAW_8K) == "http://h:1/v1/text-to-speech/v1/stream?output_format=ulaw_8000"
    assert tts.url(PCM_16K).endswith("output_format=pcm_16000")
