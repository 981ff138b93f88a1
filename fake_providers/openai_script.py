"""The scripted model behind the fake OpenAI chat completions, and the response bodies (sans-I/O).

A reply is chosen by a script: rules evaluated in order, the first that matches wins, else ``default_reply``.
A rule matches when every condition it sets holds (``re.search``; write ``(?i)`` for case-insensitive):
``if_system`` on the system/developer messages, ``if_last_user`` on the last user message, ``if_last_role`` on
the role of the last message (``tool`` after a tool result). A reply's text may use ``{last_user}``.

Bodies follow shared/protocols/providers.md, "OpenAI chat completions (streaming)": a role chunk, content in
pieces of a few words, each tool call as one chunk with ``id``/``type``/``function.name`` then its
``arguments`` in pieces, a last chunk with ``finish_reason`` and an empty delta, and with ``include_usage`` a
chunk with ``choices: []`` and ``usage`` (every earlier chunk then carries ``usage: null``).
"""

from __future__ import annotations

import json
import math
import random
import re
import string
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SYSTEM_FINGERPRINT = "fp_voicechaos"


class ToolCallSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)


class Rule(BaseModel):
    """One scripted answer and the conditions under which it is given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    if_system: re.Pattern[str] | None = None
    if_last_user: re.Pattern[str] | None = None
    if_last_role: Literal["user", "tool", "assistant", "system", "developer"] | None = None
    reply: str | None = None
    tool_calls: list[ToolCallSpec] | None = None

    @model_validator(mode="after")
    def _answers(self) -> Rule:
        if self.reply is None and not self.tool_calls:
            raise ValueError("a rule needs a reply, tool_calls, or both")
        return self


@dataclass(frozen=True, slots=True)
class Conversation:
    """What the rules look at in a request's messages."""

    system: str
    last_user: str
    last_role: str | None

    @classmethod
    def of(cls, messages: list[dict[str, Any]]) -> Conversation:
        system = "\n".join(
            content_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer")
        )
        users = [m for m in messages if m.get("role") == "user"]
        last_user = content_text(users[-1].get("content")) if users else ""
        last_role = messages[-1].get("role") if messages else None
        return cls(system, last_user, last_role)


def content_text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the API carries it


@dataclass(frozen=True, slots=True)
class Reply:
    content: str | None
    tool_calls: list[ToolCall]

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_calls else "stop"


def choose_reply(
    rules: list[Rule], default_reply: str, conversation: Conversation, rng: random.Random
) -> Reply:
    for rule in rules:
        if _matches(rule, conversation):
            content = rule.reply.replace("{last_user}", conversation.last_user) if rule.reply else None
            calls = [
                ToolCall(_id("call_", 24, rng), spec.name, json.dumps(spec.arguments))
                for spec in rule.tool_calls or []
            ]
            return Reply(content, calls)
    return Reply(default_reply.replace("{last_user}", conversation.last_user), [])


def _matches(rule: Rule, conversation: Conversation) -> bool:
    if rule.if_system is not None and not rule.if_system.search(conversation.system):
        return False
    if rule.if_last_user is not None and not rule.if_last_user.search(conversation.last_user):
        return False
    return rule.if_last_role is None or rule.if_last_role == conversation.last_role


def _id(prefix: str, length: int, rng: random.Random) -> str:
    return prefix + "".join(rng.choices(string.ascii_letters + string.digits, k=length))


def completion_id(rng: random.Random) -> str:
    return _id("chatcmpl-", 29, rng)


# -- usage ---------------------------------------------------------------------------------------------------


def count_tokens(text: str) -> int:
    """A stand-in for a tokenizer: about four characters a token, as OpenAI's rule of thumb says."""
    return math.ceil(len(text) / 4) if text else 0


def usage(messages: list[dict[str, Any]], reply: Reply) -> dict[str, Any]:
    prompt = sum(count_tokens(content_text(m.get("content"))) + 4 for m in messages)
    completion = count_tokens(reply.content or "") + sum(
        count_tokens(c.name) + count_tokens(c.arguments) for c in reply.tool_calls
    )
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


# -- bodies --------------------------------------------------------------------------------------------------


def content_pieces(text: str, words_per_piece: int) -> list[str]:
    """``text`` in pieces of ``words_per_piece`` words; whitespace is kept, so the pieces join to ``text``."""
    tokens = re.findall(r"\s*\S+", text) or ([text] if text else [])
    tail = text[len("".join(tokens)) :]
    pieces = ["".join(tokens[i : i + words_per_piece]) for i in range(0, len(tokens), words_per_piece)]
    if tail and pieces:
        pieces[-1] += tail
    return pieces


def argument_pieces(arguments: str, chars_per_piece: int) -> list[str]:
    return [arguments[i : i + chars_per_piece] for i in range(0, len(arguments), chars_per_piece)] or [""]


@dataclass(frozen=True, slots=True)
class CompletionMeta:
    id: str
    created: int
    model: str


def stream_chunks(
    reply: Reply,
    meta: CompletionMeta,
    *,
    words_per_piece: int,
    include_usage: bool,
    usage_body: dict[str, Any],
) -> list[dict[str, Any]]:
    """Every ``chat.completion.chunk`` of a streamed reply, in order (``[DONE]`` is not a chunk)."""

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": meta.id,
            "object": "chat.completion.chunk",
            "created": meta.created,
            "model": meta.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if include_usage:
            body["usage"] = None
        return body

    role = {"role": "assistant", "content": "" if reply.content is not None else None, "refusal": None}
    chunks = [chunk(role)]
    for piece in content_pieces(reply.content or "", words_per_piece):
        chunks.append(chunk({"content": piece}))
    for index, call in enumerate(reply.tool_calls):
        function = {"name": call.name, "arguments": ""}
        chunks.append(
            chunk({"tool_calls": [{"index": index, "id": call.id, "type": "function", "function": function}]})
        )
        for piece in argument_pieces(call.arguments, 8 * words_per_piece):
            chunks.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
    chunks.append(chunk({}, reply.finish_reason))
    if include_usage:
        chunks.append({**chunk({}), "choices": [], "usage": usage_body})
    return chunks


def completion_body(reply: Reply, meta: CompletionMeta, usage_body: dict[str, Any]) -> dict[str, Any]:
    """The non-streaming ``chat.completion`` object."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.content, "refusal": None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in reply.tool_calls
        ]
    return {
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": reply.finish_reason}],
        "usage": usage_body,
    }
