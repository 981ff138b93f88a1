"""The voice webhook Twilio POSTs when a call comes in, and the TwiML the server answers with (doc 1).

Sans-I/O like the rest of :mod:`harness.twilio`: :func:`build_voice_webhook` builds the request (URL, form
body, headers with a valid ``X-Twilio-Signature``) for an adapter to send, and :func:`parse_twiml` reads the
reply into one instruction the caller can act on. Section numbers ("doc 1.2") refer to
``/work/shared/protocols/twilio-media-streams.md``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit, urlunsplit

__all__ = [
    "ConnectStream",
    "Hangup",
    "Reject",
    "TwimlError",
    "TwimlInstruction",
    "VoiceWebhookRequest",
    "build_voice_webhook",
    "parse_twiml",
    "twilio_signature",
]

USER_AGENT = "TwilioProxy/1.1"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


# --- signing (doc 1.2) --------------------------------------------------------------------------------------


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str | Sequence[str]]) -> str:
    """``X-Twilio-Signature``: base64(HMAC-SHA1(auth_token, url + name+value of every POST param, names
    sorted; a repeated name contributes each of its values, sorted)) (doc 1.2).

    ``url`` is signed exactly as given (scheme, host, port if any, path and query); validators try it with and
    without the port. Note: Twilio's Python ``RequestValidator`` also collapses *identical* repeated values
    (it sorts a set); a voice webhook never repeats a name, so the difference never shows on a real request.
    """
    parts = [url]
    for name in sorted(params):
        value = params[name]
        values = [value] if isinstance(value, str) else sorted(value)
        parts.extend(name + v for v in values)
    mac = hmac.new(auth_token.encode("utf-8"), "".join(parts).encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


# --- the webhook request (doc 1.1) --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VoiceWebhookRequest:
    """One POST of the Voice URL, ready to send: ``body`` is the form encoding of ``fields``."""

    url: str
    fields: dict[str, str]
    body: bytes
    headers: dict[str, str]
    method: str = field(default="POST")


def build_voice_webhook(
    url: str,
    auth_token: str,
    *,
    call_sid: str,
    account_sid: str,
    from_number: str,
    to_number: str,
    extra: Mapping[str, str] | None = None,
    idempotency_token: str | None = None,
) -> VoiceWebhookRequest:
    """The incoming-call webhook Twilio sends to ``url``, signed with ``auth_token`` (doc 1.1, 1.2).

    Always sends CallSid, AccountSid, From, To, CallStatus=ringing, ApiVersion=2010-04-01, Direction=inbound,
    and Caller/Called (same as From/To) with the usual geographic fields, empty unless given in ``extra``.
    ``extra`` overrides a field in place or appends a new one. Field order follows captured Twilio requests
    (not alphabetical); it carries no meaning and the signature sorts anyway.

    ``I-Twilio-Idempotency-Token`` is the same for a retry of the same call to the same URL, so by default it
    is derived from both (a UUID); pass ``idempotency_token`` to set it.
    """
    fields: dict[str, str] = {
        "Called": to_number,
        "ToState": "",
        "CallerCountry": "",
        "Direction": "inbound",
        "CallerState": "",
        "ToZip": "",
        "CallSid": call_sid,
        "To": to_number,
        "CallerZip": "",
        "ToCountry": "",
        "CalledZip": "",
        "ApiVersion": "2010-04-01",
        "CalledCity": "",
        "CallStatus": "ringing",
        "From": from_number,
        "AccountSid": account_sid,
        "CalledCountry": "",
        "CallerCity": "",
        "ToCity": "",
        "FromCountry": "",
        "Caller": from_number,
        "FromCity": "",
        "CalledState": "",
        "FromZip": "",
        "FromState": "",
    }
    for name, value in (extra or {}).items():
        if not isinstance(value, str):
            raise TypeError(f"webhook field {name!r} must be a string, got {value!r}")
        fields[name] = value
    if idempotency_token is None:
        idempotency_token = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{url}#{call_sid}"))
    headers = {
        "Content-Type": FORM_CONTENT_TYPE,
        "User-Agent": USER_AGENT,
        "X-Twilio-Signature": twilio_signature(auth_token, url, fields),
        "I-Twilio-Idempotency-Token": idempotency_token,
    }
    body = urlencode(fields).encode("ascii")
    return VoiceWebhookRequest(url=url, fields=fields, body=body, headers=headers)


# --- TwiML (doc 1.3) ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectStream:
    """``<Connect><Stream url=...>``: open a bidirectional Media Stream to ``url`` and send ``parameters`` in
    ``start.customParameters`` (doc 1.3). ``url`` has had its query string removed, as Twilio does."""

    url: str
    parameters: dict[str, str]
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Reject:
    """``<Reject>``: the call is refused without being answered; ``reason`` is ``rejected`` or ``busy``."""

    reason: str = "rejected"


@dataclass(frozen=True, slots=True)
class Hangup:
    """``<Hangup>``: the call ends."""


TwimlInstruction = ConnectStream | Reject | Hangup


class TwimlError(ValueError):
    """The server's TwiML cannot set up a call voicechaos can simulate; the message says why, and where."""


#: verbs that only play something to the caller and then let the document continue
_SKIPPED_VERBS = frozenset({"Say", "Play", "Pause"})
_REJECT_REASONS = frozenset({"rejected", "busy"})
_EXCERPT_CHARS = 120


def _excerpt(text: str, around: int = 0) -> str:
    start = max(0, around - _EXCERPT_CHARS // 2)
    piece = " ".join(text[start : start + _EXCERPT_CHARS].split())
    prefix = "..." if start > 0 else ""
    suffix = "..." if start + _EXCERPT_CHARS < len(text) else ""
    return f"{prefix}{piece}{suffix}"


def _element_excerpt(element: ET.Element) -> str:
    return _excerpt(ET.tostring(element, encoding="unicode"))


def _local(tag: object) -> str:
    # TwiML carries no namespace, but tolerate one rather than report a confusing "unknown verb {ns}Connect".
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _offset(text: str, line: int, column: int) -> int:
    lines = text.splitlines(keepends=True)
    return sum(len(x) for x in lines[: max(0, line - 1)]) + column


def parse_twiml(text: str) -> TwimlInstruction:
    """Read the server's answer to the voice webhook into the one instruction that decides the call.

    The verbs of ``<Response>`` are followed in order, as Twilio would execute them:

    - ``<Say>``, ``<Play>`` and ``<Pause>`` are skipped: they only play something to the caller, which
      voicechaos does not simulate, and the document continues after them.
    - ``<Start>`` without a ``<Stream>`` is skipped (it starts something in the background and the document
      continues). ``<Start><Stream>`` forks a one-way, listen-only stream; it is also skipped if a
      ``<Connect><Stream>`` follows, but is the error reported if none does.
    - ``<Connect><Stream>`` returns :class:`ConnectStream`, ``<Reject>`` returns :class:`Reject`, ``<Hangup>``
      returns :class:`Hangup`. Verbs after these are not read: ``<Connect>`` blocks until the socket closes,
      and what follows then is not simulated.
    - Any other verb (``<Dial>``, ``<Gather>``, ``<Redirect>``, ...) raises :class:`TwimlError`.

    Raises :class:`TwimlError` (a ``ValueError``) for malformed XML, a root other than ``<Response>``, no
    supported verb, a ``<Stream>`` without ``url`` or with a url that is not ``ws://`` / ``wss://``, a
    ``<Parameter>`` without ``name``, and an unknown ``<Reject reason>``.
    """
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        line, column = exc.position
        raise TwimlError(
            f"malformed TwiML ({exc}) near: {_excerpt(text, _offset(text, line, column))!r}"
        ) from None
    if _local(root.tag) != "Response":
        raise TwimlError(
            f"TwiML must have a <Response> root element, got <{_local(root.tag)}>: {_excerpt(text)!r}"
        )

    one_way_stream: ET.Element | None = None
    for verb in root:
        tag = _local(verb.tag)
        if tag in _SKIPPED_VERBS:
            continue
        if tag == "Start":
            stream = _child(verb, "Stream")
            if stream is not None and one_way_stream is None:
                one_way_stream = verb
            continue
        if tag == "Connect":
            stream = _child(verb, "Stream")
            if stream is None:
                inner = ", ".join(f"<{_local(c.tag)}>" for c in verb) or "nothing"
                raise TwimlError(
                    f"<Connect> holds {inner}; voicechaos supports only <Connect><Stream>: "
                    f"{_element_excerpt(verb)!r}"
                )
            return _connect_stream(stream)
        if tag == "Reject":
            reason = verb.get("reason", "rejected")
            if reason not in _REJECT_REASONS:
                raise TwimlError(
                    f"<Reject reason={reason!r}>: the reason is 'rejected' or 'busy': "
                    f"{_element_excerpt(verb)!r}"
                )
            return Reject(reason)
        if tag == "Hangup":
            return Hangup()
        raise TwimlError(
            f"unsupported verb <{tag}>: voicechaos follows <Say>, <Play>, <Pause> and <Start>, and needs "
            f"<Connect><Stream>, <Reject> or <Hangup>: {_element_excerpt(verb)!r}"
        )

    if one_way_stream is not None:
        raise TwimlError(
            "<Start><Stream> opens a one-way (listen-only) stream; voicechaos needs a bidirectional "
            f"<Connect><Stream> to talk with the agent: {_element_excerpt(one_way_stream)!r}"
        )
    raise TwimlError(
        "no supported verb in <Response> (expected <Connect><Stream>, <Reject> or <Hangup>): "
        f"{_excerpt(text)!r}"
    )


def _child(element: ET.Element, tag: str) -> ET.Element | None:
    for child in element:
        if _local(child.tag) == tag:
            return child
    return None


def _connect_stream(stream: ET.Element) -> ConnectStream:
    url = stream.get("url")
    if url is None or not url.strip():
        raise TwimlError(f"<Stream> has no url attribute: {_element_excerpt(stream)!r}")
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("ws", "wss") or not parts.netloc:
        raise TwimlError(
            f"<Stream url={url!r}> must be an absolute ws:// or wss:// URL: {_element_excerpt(stream)!r}"
        )
    # doc 1.3: Twilio drops the query string of the Stream URL (values travel as <Parameter> and arrive in
    # start.customParameters). Do the same, so a server that relies on the query fails here as it would in
    # production. The path is kept; a fragment never reaches a server either.
    url = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    parameters: dict[str, str] = {}
    for child in stream:
        if _local(child.tag) != "Parameter":
            continue
        name = child.get("name")
        if not name:
            raise TwimlError(f"<Parameter> without a name: {_element_excerpt(child)!r}")
        parameters[name] = child.get("value", "")
    return ConnectStream(url=url, parameters=parameters, name=stream.get("name"))
