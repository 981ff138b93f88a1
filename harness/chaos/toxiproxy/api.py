"""The Toxiproxy v2 HTTP API over aiohttp: routing, status codes and headers; the meaning of each request is in
:mod:`harness.chaos.toxiproxy.wire` and the operations in :mod:`harness.chaos.toxiproxy.proxy`.

Kept from the real server (``api.go``, gorilla/mux): every response carries ``X-Toxiproxy-Request-Id``; a User-Agent
starting with ``Mozilla/`` (case-sensitive) gets 403 on matched routes only; an unknown path is 404
``404 page not found``, a known path with the wrong method 405 with an empty body (HEAD included); error bodies are
JSON and a newline sent as ``text/plain``; success bodies are compact JSON.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from harness.chaos.toxiproxy.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from harness.chaos.toxiproxy.metrics import render_metrics
from harness.chaos.toxiproxy.proxy import Proxy, ProxyCollection
from harness.chaos.toxiproxy.wire import (
    TOXIC_NOT_FOUND,
    VERSION_BODY,
    ApiError,
    ProxyInput,
    error_body,
    parse_populate,
    parse_proxy_create,
    parse_proxy_update,
    parse_toxic_create,
    parse_toxic_update,
    proxy_json,
    toxic_json,
)

REQUEST_ID_HEADER = "X-Toxiproxy-Request-Id"
COLLECTION_KEY: web.AppKey[ProxyCollection] = web.AppKey("toxiproxy_collection", ProxyCollection)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RequestIds:
    """Request ids shaped like the real server's (an ``xid``: 20 base32hex characters, time-ordered)."""

    def __init__(self) -> None:
        self._machine = secrets.token_bytes(3)
        self._pid = (os.getpid() & 0xFFFF).to_bytes(2, "big")
        self._counter = itertools.count(int.from_bytes(secrets.token_bytes(3), "big"))

    def __call__(self) -> str:
        raw = (
            int(time.time()).to_bytes(4, "big")
            + self._machine
            + self._pid
            + (next(self._counter) & 0xFFFFFF).to_bytes(3, "big")
        )
        return base64.b32hexencode(raw).decode().rstrip("=").lower()


def _json(value: Any, status: int = 200) -> web.Response:
    body = json.dumps(value, separators=(",", ":")).encode()
    return web.Response(status=status, body=body, content_type="application/json")


def _plain_error(status: int, body: bytes) -> web.Response:
    response = web.Response(status=status, body=body)
    response.headers["Content-Type"] = "text/plain; charset=utf-8"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _error(error: ApiError) -> web.Response:
    return _plain_error(error.status, error_body(error))


@web.middleware
async def _gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    unmatched = request.match_info.http_exception
    if unmatched is not None:
        if unmatched.status == 405:
            return web.Response(status=405)
        return _plain_error(404, b"404 page not found\n")
    if request.headers.get("User-Agent", "").startswith("Mozilla/"):
        return _plain_error(403, b"User agent not allowed\n")
    try:
        return await handler(request)
    except ApiError as error:
        return _error(error)


def _proxy_json(proxy: Proxy) -> dict[str, Any]:
    return proxy_json(proxy.name, proxy.listen, proxy.upstream, proxy.enabled, proxy.all_toxics())


def _collection(request: web.Request) -> ProxyCollection:
    return request.app[COLLECTION_KEY]


async def proxy_index(request: web.Request) -> web.Response:
    proxies = _collection(request).proxies
    return _json({name: _proxy_json(proxies[name]) for name in sorted(proxies)})


async def proxy_create(request: web.Request) -> web.Response:
    wanted = parse_proxy_create(await request.read())
    proxy = await _collection(request).create(wanted)
    return _json(_proxy_json(proxy), status=201)


async def populate(request: web.Request) -> web.Response:
    """Answers ``{"proxies": [...]}``, or the error fields with ``"proxies": null`` (JSON, not text/plain)."""
    try:
        wanted = parse_populate(await request.read())
        proxies = await _collection(request).populate(wanted)
    except ApiError as error:
        return _json({**error.as_json(), "proxies": None}, status=error.status)
    return _json({"proxies": [_proxy_json(p) for p in proxies] or None}, status=201)


async def proxy_show(request: web.Request) -> web.Response:
    return _json(_proxy_json(_collection(request).get(request.match_info["proxy"])))


async def proxy_update(request: web.Request) -> web.Response:
    collection = _collection(request)
    proxy = collection.get(request.match_info["proxy"])
    current = ProxyInput(proxy.name, proxy.listen, proxy.upstream, proxy.enabled)
    wanted = parse_proxy_update(await request.read(), current)
    proxy = await collection.update(proxy.name, wanted)
    return _json(_proxy_json(proxy))


async def proxy_delete(request: web.Request) -> web.Response:
    await _collection(request).delete(request.match_info["proxy"])
    return web.Response(status=204)


async def toxic_index(request: web.Request) -> web.Response:
    proxy = _collection(request).get(request.match_info["proxy"])
    return _json([toxic_json(spec) for spec in proxy.all_toxics()])


async def toxic_create(request: web.Request) -> web.Response:
    collection = _collection(request)
    proxy_name = collection.get(request.match_info["proxy"]).name
    body = await request.read()
    spec = await collection.add_toxic(
        proxy_name,
        lambda proxy: parse_toxic_create(body, collection.registry, lambda name: proxy.find_toxic(name) is not None),
    )
    return _json(toxic_json(spec))  # 200, not 201


async def toxic_show(request: web.Request) -> web.Response:
    proxy = _collection(request).get(request.match_info["proxy"])
    spec = proxy.find_toxic(request.match_info["toxic"])
    if spec is None:
        raise TOXIC_NOT_FOUND
    return _json(toxic_json(spec))


async def toxic_update(request: web.Request) -> web.Response:
    collection = _collection(request)
    proxy_name = collection.get(request.match_info["proxy"]).name
    body = await request.read()
    spec = await collection.update_toxic(
        proxy_name, request.match_info["toxic"], lambda current: parse_toxic_update(body, current)
    )
    return _json(toxic_json(spec))


async def toxic_delete(request: web.Request) -> web.Response:
    await _collection(request).remove_toxic(request.match_info["proxy"], request.match_info["toxic"])
    return web.Response(status=204)


async def reset(request: web.Request) -> web.Response:
    await _collection(request).reset()
    return web.Response(status=204)


async def version(request: web.Request) -> web.Response:
    response = web.Response(body=VERSION_BODY)
    response.headers["Content-Type"] = "application/json;charset=utf-8"
    return response


async def metrics(request: web.Request) -> web.Response:
    response = web.Response(body=render_metrics(_collection(request).proxies.values()).encode())
    response.headers["Content-Type"] = METRICS_CONTENT_TYPE
    return response


def build_app(collection: ProxyCollection, *, request_ids: Callable[[], str] | None = None) -> web.Application:
    """The API application over ``collection``."""
    new_id = request_ids or RequestIds()

    async def tag(request: web.Request, response: web.StreamResponse) -> None:
        response.headers[REQUEST_ID_HEADER] = new_id()

    app = web.Application(middlewares=[_gate], client_max_size=16 * 1024 * 1024)
    app[COLLECTION_KEY] = collection
    app.on_response_prepare.append(tag)
    routes = [
        ("POST", "/reset", reset),
        ("GET", "/proxies", proxy_index),
        ("POST", "/proxies", proxy_create),
        ("POST", "/populate", populate),
        ("GET", "/proxies/{proxy}", proxy_show),
        ("POST", "/proxies/{proxy}", proxy_update),
        ("PATCH", "/proxies/{proxy}", proxy_update),
        ("DELETE", "/proxies/{proxy}", proxy_delete),
        ("GET", "/proxies/{proxy}/toxics", toxic_index),
        ("POST", "/proxies/{proxy}/toxics", toxic_create),
        ("GET", "/proxies/{proxy}/toxics/{toxic}", toxic_show),
        ("POST", "/proxies/{proxy}/toxics/{toxic}", toxic_update),
        ("PATCH", "/proxies/{proxy}/toxics/{toxic}", toxic_update),
        ("DELETE", "/proxies/{proxy}/toxics/{toxic}", toxic_delete),
        ("GET", "/version", version),
        ("GET", "/metrics", metrics),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    return app
