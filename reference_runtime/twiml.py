"""TwiML answers to the voice webhook (protocol section 1.3). Pure functions: strings in, XML out."""

from __future__ import annotations

from xml.sax.saxutils import escape

XML_HEADER = '<?xml version="1.0" encoding="UTF-8"?>'


def _attr(value: str) -> str:
    """A double-quoted XML attribute value (Twilio's own TwiML library quotes the same way)."""
    return '"' + escape(value, {'"': "&quot;"}) + '"'


def connect_stream(ws_url: str, parameters: dict[str, str]) -> str:
    """``<Connect><Stream>``: bidirectional audio; Twilio drops query strings, so values travel as
    ``<Parameter>``."""
    params = "".join(f"<Parameter name={_attr(k)} value={_attr(v)}/>" for k, v in parameters.items())
    stream = f"<Stream url={_attr(ws_url)}>{params}</Stream>"
    return f"{XML_HEADER}<Response><Connect>{stream}</Connect></Response>"


def reject(reason: str = "busy") -> str:
    """``<Reject>``: the caller hears a busy signal (or "rejected"); the call is never answered nor billed."""
    return f"{XML_HEADER}<Response><Reject reason={_attr(reason)}/></Response>"
