"""Small helpers the HTTP adapters of every fake share: reading requests, naming what was wrong with them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from pydantic import ValidationError


def describe_errors(error: ValidationError, *, whole: str = "(top level)") -> str:
    """``field.path: reason; other: reason``: what needs fixing, naming each field (``whole`` if none)."""
    # pydantic prefixes a validator's own message with "Value error, ": noise to whoever reads it
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or whole}: {e['msg'].removeprefix('Value error, ')}"
        for e in error.errors()
    )


def query_dict(request: web.Request) -> dict[str, str]:
    """The query as a plain dict (a repeated parameter keeps its last value, as most servers do)."""
    return {key: request.query.getall(key)[-1] for key in request.query}


async def read_json(request: web.Request) -> Any:
    """The request body as JSON; raises ValueError with a readable message if it is not JSON."""
    raw = await request.read()
    try:
        return json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"request body is not valid JSON: {exc}") from exc


def bearer_or_scheme(headers: Mapping[str, str], *schemes: str) -> str | None:
    """The credential of an ``Authorization: <scheme> <key>`` header whose scheme is one of ``schemes``."""
    scheme, _, key = headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() in schemes and key.strip():
        return key.strip()
    return None


def integral(value: Any) -> Any:
    """``"16000.0"`` -> ``16000``: SDKs that type a sample rate as float send it that way in a query."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return int(number) if number.is_integer() else value
    return value
