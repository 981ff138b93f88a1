"""The Toxiproxy v2 API's messages, sans-I/O: request bodies in, typed inputs or :class:`ApiError` out, and the JSON
objects the server answers with. The contract is ``shared/protocols/toxiproxy.md`` (measured against the real 2.12.0);
the section names below refer to it.

Go's ``encoding/json`` decides what a body means, so its rules are kept: the first JSON value of the body is used
(trailing bytes are ignored), an empty body is ``EOF``, unknown fields are ignored, keys match case-insensitively,
``null`` leaves a field as it was, and a value of the wrong type is ``json: cannot unmarshal ...``.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from harness.chaos.toxiproxy.toxics.base import BadAttribute, Toxic, ToxicRegistry

VERSION = "2.12.0"
VERSION_BODY = b'{"version": "2.12.0"}\n'  # "/version answers exactly ... and a newline"


class ApiError(Exception):
    """An error answer: ``{"error": message, "status": status}`` (Conventions)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def as_json(self) -> dict[str, Any]:
        return {"error": self.message, "status": self.status}


def bad_body(reason: str) -> ApiError:
    return ApiError(f"bad request body: {reason}", 400)


PROXY_NOT_FOUND = ApiError("proxy not found", 404)
PROXY_EXISTS = ApiError("proxy already exists", 409)
TOXIC_NOT_FOUND = ApiError("toxic not found", 404)
TOXIC_EXISTS = ApiError("toxic already exists", 409)
INVALID_TOXIC_TYPE = ApiError("invalid toxic type", 400)
INVALID_STREAM = ApiError("stream was invalid, can be either upstream or downstream", 400)


def missing_field(what: str) -> ApiError:
    return ApiError(f"missing required field: {what}", 400)


class Stream(enum.Enum):
    UPSTREAM = "upstream"  # client -> server
    DOWNSTREAM = "downstream"  # server -> client

    @classmethod
    def parse(cls, text: str) -> Stream:
        """Case-insensitive, as Go's ``stream.ParseDirection``."""
        try:
            return cls(text.lower())
        except ValueError:
            raise INVALID_STREAM from None


# --- Go's json.Decoder.Decode, as far as the API can tell ---------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def decode_body(body: bytes) -> Any:
    """The first JSON value of ``body``; :class:`ApiError` 400 ``bad request body: ...`` when there is none."""
    text = body.decode("utf-8", errors="replace").lstrip(" \t\r\n")
    if not text:
        raise bad_body("EOF")
    try:
        value, _ = _DECODER.raw_decode(text)
    except json.JSONDecodeError as exc:
        if exc.pos >= len(text):
            raise bad_body("unexpected EOF") from None
        raise bad_body(f"invalid character {text[exc.pos]!r} looking for beginning of value") from None
    except ValueError as exc:
        raise bad_body(f"invalid character {str(exc)[:1]!r} looking for beginning of value") from None
    return value


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _field(obj: Mapping[str, Any], name: str) -> tuple[bool, Any]:
    """Go matches JSON keys to fields exactly first, then case-insensitively; ``null`` counts as absent."""
    if name in obj:
        value = obj[name]
    else:
        for key, candidate in obj.items():
            if key.lower() == name:
                value = candidate
                break
        else:
            return False, None
    return value is not None, value


def _str_field(obj: Mapping[str, Any], name: str, struct: str, default: str) -> str:
    found, value = _field(obj, name)
    if not found:
        return default
    if not isinstance(value, str):
        raise bad_body(f"json: cannot unmarshal {_kind(value)} into Go struct field {struct}.{name} of type string")
    return value


def _bool_field(obj: Mapping[str, Any], name: str, struct: str, default: bool) -> bool:
    found, value = _field(obj, name)
    if not found:
        return default
    if not isinstance(value, bool):
        raise bad_body(f"json: cannot unmarshal {_kind(value)} into Go struct field {struct}.{name} of type bool")
    return value


def _float_field(obj: Mapping[str, Any], name: str, struct: str, default: float) -> float:
    found, value = _field(obj, name)
    if not found:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_body(f"json: cannot unmarshal {_kind(value)} into Go struct field {struct}.{name} of type float32")
    return float(value)


def _object(value: Any, go_type: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise bad_body(f"json: cannot unmarshal {_kind(value)} into Go value of type {go_type}")
    return value


# --- proxies ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProxyInput:
    """``name``, ``listen``, ``upstream``, ``enabled`` as a request gives them (missing fields: defaults or current)."""

    name: str
    listen: str
    upstream: str
    enabled: bool


def parse_proxy_create(body: bytes) -> ProxyInput:
    """POST /proxies: ``name`` and ``upstream`` required, ``enabled`` defaults to true."""
    obj = _object(decode_body(body), "toxiproxy.Proxy")
    proxy = ProxyInput(
        name=_str_field(obj, "name", "Proxy", ""),
        listen=_str_field(obj, "listen", "Proxy", ""),
        upstream=_str_field(obj, "upstream", "Proxy", ""),
        enabled=_bool_field(obj, "enabled", "Proxy", True),
    )
    if not proxy.name:
        raise missing_field("name")
    if not proxy.upstream:
        raise missing_field("upstream")
    return proxy


def parse_proxy_update(body: bytes, current: ProxyInput) -> ProxyInput:
    """POST or PATCH /proxies/{p}: any of ``listen``, ``upstream``, ``enabled``; missing fields keep their values."""
    obj = _object(decode_body(body), "toxiproxy.Proxy")
    return ProxyInput(
        name=current.name,
        listen=_str_field(obj, "listen", "Proxy", current.listen),
        upstream=_str_field(obj, "upstream", "Proxy", current.upstream),
        enabled=_bool_field(obj, "enabled", "Proxy", current.enabled),
    )


def parse_populate(body: bytes) -> list[ProxyInput]:
    """POST /populate: an array of proxies, all validated before anything is created (``... at proxy N``)."""
    value = decode_body(body)
    if not isinstance(value, list):
        raise bad_body(f"json: cannot unmarshal {_kind(value)} into Go value of type []toxiproxy.Proxy")
    proxies = []
    for i, item in enumerate(value, start=1):
        obj = _object(item, "toxiproxy.Proxy")
        proxy = ProxyInput(
            name=_str_field(obj, "name", "Proxy", ""),
            listen=_str_field(obj, "listen", "Proxy", ""),
            upstream=_str_field(obj, "upstream", "Proxy", ""),
            enabled=_bool_field(obj, "enabled", "Proxy", True),
        )
        if not proxy.name:
            raise missing_field(f"name at proxy {i}")
        if not proxy.upstream:
            raise missing_field(f"upstream at proxy {i}")
        proxies.append(proxy)
    return proxies


# --- addresses ----------------------------------------------------------------------------------------------------


def split_host_port(address: str) -> tuple[str, str]:
    """Go's ``net.SplitHostPort``: ``host:port`` or ``[v6]:port``."""
    if address.startswith("["):
        end = address.find("]")
        if end < 0:
            raise ValueError(f"address {address}: missing ']' in address")
        if address[end + 1 : end + 2] != ":":
            raise ValueError(f"address {address}: missing port in address")
        return address[1:end], address[end + 2 :]
    if ":" not in address:
        raise ValueError(f"address {address}: missing port in address")
    host, port = address.rsplit(":", 1)
    if ":" in host:
        raise ValueError(f"address {address}: too many colons in address")
    return host, port


def format_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _parse_port(text: str) -> int:
    if text == "":
        return 0
    if not text.isdigit():
        raise ValueError(f"lookup tcp/{text}: unknown port")
    port = int(text)
    if port > 65535:
        raise ValueError(f"address {text}: invalid port")
    return port


def _resolve_host(host: str) -> str:
    """An IP literal as Go prints it; a name resolved to its first address (``localhost`` -> ``127.0.0.1``)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except socket.gaierror:
        raise ValueError(f"lookup {host}: no such host") from None
    v4 = [info[4][0] for info in infos if info[0] == socket.AF_INET]
    return str(v4[0] if v4 else infos[0][4][0])


def resolve_listen(listen: str, *, allow_remote: bool) -> tuple[str, int]:
    """Where to bind for a proxy's ``listen``; :class:`ApiError` 500 ``listen tcp: ...`` when it cannot be.

    An empty host means "every interface" to the real server; this one binds loopback instead unless remote use was
    allowed, and refuses an explicit non-loopback address (project rule: chaos traffic stays on loopback).
    """
    try:
        host, port_text = split_host_port(listen) if listen else ("", "0")
        port = _parse_port(port_text)
        if host == "":
            host = "::" if allow_remote else "127.0.0.1"
        else:
            host = _resolve_host(host)
    except ValueError as exc:
        raise ApiError(f"listen tcp: {exc}", 500) from None
    if not allow_remote and not ipaddress.ip_address(host).is_loopback:
        raise ApiError(
            f"listen tcp {format_host_port(host, port)}: refused: the embedded toxiproxy listens on loopback only "
            "(start it with --allow-remote to allow other addresses)",
            500,
        )
    return host, port


def same_listen(stored: str, requested: str) -> bool:
    """Does ``requested`` name the address a proxy already listens on? Port 0 never does (populate semantics)."""
    try:
        host, port_text = split_host_port(requested)
        port = _parse_port(port_text)
        if port == 0:
            return False
        return format_host_port(_resolve_host(host) if host else host, port) == stored
    except ValueError:
        return False


def parse_upstream(upstream: str) -> tuple[str, int] | None:
    """Where to dial for a proxy's ``upstream`` (None: not a ``host:port``; every connection is then closed)."""
    try:
        host, port_text = split_host_port(upstream)
        port = _parse_port(port_text)
    except ValueError:
        return None
    return (host or "127.0.0.1"), port


# --- toxics -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToxicSpec:
    """A toxic as the API knows it: its name, type, stream (stored as sent), toxicity and configuration."""

    name: str
    type: str
    stream: str
    direction: Stream
    toxicity: float
    toxic: Toxic


def parse_toxic_create(body: bytes, registry: ToxicRegistry, exists: Callable[[str], bool]) -> ToxicSpec:
    """POST /proxies/{p}/toxics, checked in Go's order (``toxic_collection.go::AddToxicJson``): body, stream, type,
    name taken, then the attributes against the type."""
    obj = _object(decode_body(body), "toxics.ToxicWrapper")
    name = _str_field(obj, "name", "ToxicWrapper", "")
    type_name = _str_field(obj, "type", "ToxicWrapper", "")
    stream = _str_field(obj, "stream", "ToxicWrapper", "downstream")
    toxicity = _float_field(obj, "toxicity", "ToxicWrapper", 1.0)
    found, attributes = _field(obj, "attributes")
    if found and not isinstance(attributes, dict):
        raise bad_body(
            f"json: cannot unmarshal {_kind(attributes)} into Go struct field ToxicWrapper.attributes of type "
            "toxics.NoopToxic"
        )
    direction = Stream.parse(stream)
    if not name:
        name = f"{type_name}_{stream}"  # built from the stream as sent: slicer_UPSTREAM
    cls = registry.get(type_name)
    if cls is None:
        raise INVALID_TOXIC_TYPE
    if exists(name):
        raise TOXIC_EXISTS
    try:
        toxic = cls.from_attributes(attributes if found else None)
    except BadAttribute as exc:
        raise bad_body(str(exc)) from None
    return ToxicSpec(name, type_name, stream, direction, toxicity, toxic)


def parse_toxic_update(body: bytes, current: ToxicSpec) -> ToxicSpec:
    """POST or PATCH /proxies/{p}/toxics/{t}: ``attributes`` merged and ``toxicity``; name, type, stream ignored."""
    obj = _object(decode_body(body), "struct { Attributes interface {}; Toxicity float32 }")
    toxicity = _float_field(obj, "toxicity", "Toxicity", current.toxicity)
    found, attributes = _field(obj, "attributes")
    if found and not isinstance(attributes, dict):
        raise bad_body(f"json: cannot unmarshal {_kind(attributes)} into Go value of type toxics.{current.type}")
    try:
        toxic = type(current.toxic).from_attributes(attributes if found else None, current.toxic)
    except BadAttribute as exc:
        raise bad_body(str(exc)) from None
    return ToxicSpec(current.name, current.type, current.stream, current.direction, toxicity, toxic)


def _number(value: float) -> float | int:
    """Go prints a float32 1.0 as ``1``."""
    return int(value) if value.is_integer() else value


def toxic_json(spec: ToxicSpec) -> dict[str, Any]:
    return {
        "attributes": spec.toxic.attributes(),
        "name": spec.name,
        "type": spec.type,
        "stream": spec.stream,
        "toxicity": _number(spec.toxicity),
    }


def proxy_json(name: str, listen: str, upstream: str, enabled: bool, toxics: list[ToxicSpec]) -> dict[str, Any]:
    """A proxy object, with the ``"Logger": {}`` the real server leaks (Finer details)."""
    return {
        "name": name,
        "listen": listen,
        "upstream": upstream,
        "enabled": enabled,
        "Logger": {},
        "toxics": [toxic_json(spec) for spec in toxics],
    }


def error_body(error: ApiError) -> bytes:
    """Error bodies are JSON plus a newline, sent as text/plain (Go's ``http.Error``)."""
    return json.dumps(error.as_json(), separators=(",", ":")).encode() + b"\n"
