"""The Toxiproxy v2 HTTP API over raw HTTP: every endpoint's success and error cases as
``shared/protocols/toxiproxy.md`` lists them (measured against the real 2.12.0 server)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from tests.toxiproxy.kit import Api, Upstream, client, connect, port_of, read_exactly


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else already listens on."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def expect_error(api: Api, method: str, path: str, body: object, status: int, message: str, **kw: object) -> None:
    got, headers, payload = await api.request(method, path, body, **kw)  # type: ignore[arg-type]
    assert got == status, payload
    assert headers["Content-Type"].startswith("text/plain")
    assert payload.endswith(b"\n")
    assert json.loads(payload) == {"error": message, "status": status}


# --- conventions ---------------------------------------------------------------------------------------------------


async def test_every_response_carries_a_request_id(api: Api) -> None:
    seen = set()
    for method, path in [("GET", "/proxies"), ("GET", "/nowhere"), ("PUT", "/proxies"), ("GET", "/proxies/x")]:
        _, headers, _ = await api.request(method, path)
        seen.add(headers["X-Toxiproxy-Request-Id"])
    _, headers, _ = await api.request("GET", "/version", headers={"User-Agent": "Mozilla/5.0"})
    seen.add(headers["X-Toxiproxy-Request-Id"])
    assert len(seen) == 5 and all(len(rid) == 20 for rid in seen)


async def test_browsers_are_refused_on_matched_routes_only(api: Api) -> None:
    status, _, body = await api.request("GET", "/proxies", headers={"User-Agent": "Mozilla/5.0 (X11)"})
    assert (status, body) == (403, b"User agent not allowed\n")
    status, _, _ = await api.request("GET", "/proxies", headers={"User-Agent": "mozilla/5.0"})  # case-sensitive
    assert status == 200
    status, _, _ = await api.request("GET", "/nowhere", headers={"User-Agent": "Mozilla/5.0"})
    assert status == 404


async def test_unknown_path_is_404_and_wrong_method_405(api: Api) -> None:
    assert (await api.request("GET", "/nowhere"))[0] == 404
    assert (await api.request("GET", "/proxies/a/b/c/d"))[0] == 404
    for method, path in [("PUT", "/proxies"), ("DELETE", "/version"), ("GET", "/reset"), ("HEAD", "/proxies")]:
        assert (await api.request(method, path))[0] == 405, (method, path)


async def test_version_is_exact(api: Api) -> None:
    status, headers, body = await api.request("GET", "/version")
    assert (status, body) == (200, b'{"version": "2.12.0"}\n')
    assert headers["Content-Type"].startswith("application/json")


# --- proxies -------------------------------------------------------------------------------------------------------


async def test_proxy_index_is_an_empty_object_then_lists_by_name(api: Api, echo: Upstream) -> None:
    assert await api.call("GET", "/proxies") == {}
    created = await api.create_proxy("b", echo.address)
    await api.create_proxy("a", echo.address)
    index = await api.call("GET", "/proxies")
    assert list(index) == ["a", "b"]
    assert index["b"] == created


async def test_create_answers_201_with_the_bound_listen_and_logger(api: Api, echo: Upstream) -> None:
    proxy = await api.create_proxy("p", echo.address, unknown_field="ignored")
    assert proxy == {
        "name": "p",
        "listen": proxy["listen"],
        "upstream": echo.address,
        "enabled": True,
        "Logger": {},
        "toxics": [],
    }
    assert proxy["listen"].startswith("127.0.0.1:") and port_of(proxy) != 0
    async with client(port_of(proxy)) as (reader, writer):
        writer.write(b"through")
        assert await read_exactly(reader, 7) == b"through"


async def test_localhost_listen_resolves_to_127_0_0_1(api: Api, echo: Upstream) -> None:
    port = free_port()
    proxy = await api.create_proxy("p", echo.address, listen=f"localhost:{port}")
    assert proxy["listen"] == f"127.0.0.1:{port}"


async def test_create_disabled_does_not_listen(api: Api, echo: Upstream) -> None:
    port = free_port()
    proxy = await api.create_proxy("p", echo.address, listen=f"127.0.0.1:{port}", enabled=False)
    assert proxy["enabled"] is False and proxy["listen"] == f"127.0.0.1:{port}"
    with pytest.raises(ConnectionRefusedError):
        await connect(port)


async def test_create_errors(api: Api, echo: Upstream, busy_port: int) -> None:
    await expect_error(api, "POST", "/proxies", {"upstream": echo.address}, 400, "missing required field: name")
    await expect_error(api, "POST", "/proxies", {"name": "p"}, 400, "missing required field: upstream")
    await expect_error(api, "POST", "/proxies", None, 400, "bad request body: EOF")
    status, _, payload = await api.request("POST", "/proxies", raw=b"{nope")
    assert status == 400 and json.loads(payload)["error"].startswith("bad request body: ")
    status, _, payload = await api.request("POST", "/proxies", {"name": 5, "upstream": echo.address})
    assert status == 400 and json.loads(payload)["error"].startswith("bad request body: json: cannot unmarshal")
    await api.create_proxy("p", echo.address)
    await expect_error(api, "POST", "/proxies", {"name": "p", "upstream": echo.address}, 409, "proxy already exists")
    await expect_error(
        api,
        "POST",
        "/proxies",
        {"name": "q", "upstream": echo.address, "listen": f"127.0.0.1:{busy_port}"},
        500,
        f"listen tcp 127.0.0.1:{busy_port}: bind: address already in use",
    )
    assert "q" not in await api.call("GET", "/proxies")


async def test_non_loopback_listen_is_refused(api: Api, echo: Upstream) -> None:
    status, _, payload = await api.request(
        "POST", "/proxies", {"name": "p", "upstream": echo.address, "listen": "0.0.0.0:0"}
    )
    assert status == 500 and "loopback" in json.loads(payload)["error"]


async def test_show_and_delete(api: Api, echo: Upstream) -> None:
    created = await api.create_proxy("p", echo.address)
    assert await api.call("GET", "/proxies/p") == created
    await expect_error(api, "GET", "/proxies/nope", None, 404, "proxy not found")
    await api.call("DELETE", "/proxies/p", expect=204)
    await expect_error(api, "DELETE", "/proxies/p", None, 404, "proxy not found")
    with pytest.raises(ConnectionRefusedError):
        await connect(port_of(created))


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_update_is_partial_and_keeps_the_resolved_port(api: Api, echo: Upstream, method: str) -> None:
    created = await api.create_proxy("p", echo.address)
    disabled = await api.call(method, "/proxies/p", {"enabled": False})
    assert disabled == {**created, "enabled": False}
    with pytest.raises(ConnectionRefusedError):
        await connect(port_of(created))
    enabled = await api.call(method, "/proxies/p", {"enabled": True})
    assert enabled == created
    async with client(port_of(created)) as (reader, writer):
        writer.write(b"back")
        assert await read_exactly(reader, 4) == b"back"


async def test_update_listen_and_upstream(api: Api, echo: Upstream) -> None:
    await api.create_proxy("p", "127.0.0.1:1")
    port = free_port()
    updated = await api.update_proxy("p", {"listen": f"localhost:{port}", "upstream": echo.address})
    assert (updated["listen"], updated["upstream"], updated["enabled"]) == (f"127.0.0.1:{port}", echo.address, True)
    async with client(port) as (reader, writer):
        writer.write(b"moved")
        assert await read_exactly(reader, 5) == b"moved"


async def test_update_errors(api: Api, echo: Upstream, busy_port: int) -> None:
    await expect_error(api, "PATCH", "/proxies/nope", {"enabled": False}, 404, "proxy not found")
    await api.create_proxy("p", echo.address)
    status, _, payload = await api.request("PATCH", "/proxies/p", raw=b"[")
    assert status == 400 and json.loads(payload)["error"].startswith("bad request body")
    await expect_error(
        api,
        "PATCH",
        "/proxies/p",
        {"listen": f"127.0.0.1:{busy_port}"},
        500,
        f"listen tcp 127.0.0.1:{busy_port}: bind: address already in use",
    )
    stored = await api.call("GET", "/proxies/p")
    assert (stored["enabled"], stored["listen"]) == (False, f"127.0.0.1:{busy_port}")
    status, _, payload = await api.request("PATCH", "/proxies/p", {"listen": "not an address", "enabled": True})
    assert status == 500  # an invalid listen is a 500, not a 400
    assert json.loads(payload)["error"] == "listen tcp: address not an address: missing port in address"


# --- toxics --------------------------------------------------------------------------------------------------------


async def test_toxic_create_defaults_and_answers_200(api: Api, echo: Upstream) -> None:
    await api.create_proxy("p", echo.address)
    toxic = await api.call("POST", "/proxies/p/toxics", {"type": "latency"})
    assert toxic == {
        "attributes": {"latency": 0, "jitter": 0},
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1,
    }
    nulls = await api.call("POST", "/proxies/p/toxics", {"type": "slicer", "stream": "upstream", "attributes": None})
    assert nulls["attributes"] == {"average_size": 0, "size_variation": 0, "delay": 0}
    assert nulls["name"] == "slicer_upstream"


async def test_toxic_stream_is_case_insensitive_and_stored_as_sent(api: Api, echo: Upstream) -> None:
    await api.create_proxy("p", echo.address)
    toxic = await api.call("POST", "/proxies/p/toxics", {"type": "slicer", "stream": "UPSTREAM", "toxicity": 0.5})
    assert (toxic["name"], toxic["stream"], toxic["toxicity"]) == ("slicer_UPSTREAM", "UPSTREAM", 0.5)


async def test_toxic_index_lists_upstream_first_then_downstream_in_order(api: Api, echo: Upstream) -> None:
    await api.create_proxy("p", echo.address)
    for name, stream in [("d1", "downstream"), ("u1", "upstream"), ("d2", "downstream"), ("u2", "upstream")]:
        await api.add_toxic("p", "noop", stream=stream, name=name)
    assert [t["name"] for t in await api.call("GET", "/proxies/p/toxics")] == ["u1", "u2", "d1", "d2"]
    assert [t["name"] for t in (await api.call("GET", "/proxies/p"))["toxics"]] == ["u1", "u2", "d1", "d2"]


async def test_toxic_create_errors(api: Api, echo: Upstream) -> None:
    path = "/proxies/p/toxics"
    await expect_error(api, "POST", "/proxies/nope/toxics", {"type": "latency"}, 404, "proxy not found")
    await api.create_proxy("p", echo.address)
    await expect_error(api, "POST", path, {"type": "nonsense"}, 400, "invalid toxic type")
    await expect_error(api, "POST", path, {"name": "no type"}, 400, "invalid toxic type")
    await expect_error(
        api,
        "POST",
        path,
        {"type": "latency", "stream": "sideways"},
        400,
        "stream was invalid, can be either upstream or downstream",
    )
    await expect_error(api, "POST", path, None, 400, "bad request body: EOF")
    status, _, payload = await api.request("POST", path, {"type": "latency", "attributes": {"latency": "slow"}})
    assert status == 400 and json.loads(payload)["error"].startswith("bad request body: json: cannot unmarshal")
    await api.add_toxic("p", "latency", name="shared")
    await expect_error(
        api, "POST", path, {"type": "noop", "name": "shared", "stream": "upstream"}, 409, "toxic already exists"
    )


async def test_toxic_show_update_delete(api: Api, echo: Upstream) -> None:
    await api.create_proxy("p", echo.address)
    await api.add_toxic("p", "latency", {"latency": 100, "jitter": 5})
    assert (await api.call("GET", "/proxies/p/toxics/latency_downstream"))["attributes"] == {
        "latency": 100,
        "jitter": 5,
    }
    await expect_error(api, "GET", "/proxies/p/toxics/nope", None, 404, "toxic not found")
    await expect_error(api, "GET", "/proxies/nope/toxics/latency_downstream", None, 404, "proxy not found")
    body = {"attributes": {"latency": 300}, "name": "ignored", "type": "slicer", "stream": "upstream"}
    patched = await api.call("PATCH", "/proxies/p/toxics/latency_downstream", body)
    assert patched == {
        "attributes": {"latency": 300, "jitter": 5},
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1,
    }
    posted = await api.call("POST", "/proxies/p/toxics/latency_downstream", {"toxicity": 0.25})
    assert posted["toxicity"] == 0.25 and posted["attributes"] == {"latency": 300, "jitter": 5}
    await expect_error(api, "PATCH", "/proxies/p/toxics/nope", {"toxicity": 1}, 404, "toxic not found")
    await api.call("DELETE", "/proxies/p/toxics/latency_downstream", expect=204)
    await expect_error(api, "DELETE", "/proxies/p/toxics/latency_downstream", None, 404, "toxic not found")
    assert await api.call("GET", "/proxies/p/toxics") == []


# --- reset, populate, metrics ----------------------------------------------------------------------------------------


async def test_reset_enables_every_proxy_and_removes_every_toxic(api: Api, echo: Upstream) -> None:
    a = await api.create_proxy("a", echo.address)
    await api.create_proxy("b", echo.address)
    await api.add_toxic("b", "latency", {"latency": 10})
    await api.update_proxy("a", {"enabled": False})
    async with client(port_of(await api.call("GET", "/proxies/b"))) as (reader, writer):
        assert (await api.request("POST", "/reset"))[0] == 204
        index = await api.call("GET", "/proxies")
        assert index["a"] == a and index["b"]["toxics"] == []
        writer.write(b"still open")  # /reset leaves live connections open
        assert await read_exactly(reader, 10) == b"still open"


async def test_populate_creates_keeps_and_replaces(api: Api, echo: Upstream, server: Upstream) -> None:
    port = free_port()
    answer = await api.call(
        "POST",
        "/populate",
        [
            {"name": "fixed", "upstream": echo.address, "listen": f"127.0.0.1:{port}"},
            {"name": "any", "upstream": echo.address, "listen": "127.0.0.1:0"},
        ],
        expect=201,
    )
    assert [p["name"] for p in answer["proxies"]] == ["fixed", "any"]
    first_any = port_of(answer["proxies"][1])
    await api.add_toxic("fixed", "noop")
    await api.add_toxic("any", "noop")
    again = await api.call(
        "POST",
        "/populate",
        [
            {"name": "fixed", "upstream": echo.address, "listen": f"localhost:{port}", "enabled": False},
            {"name": "any", "upstream": echo.address, "listen": "127.0.0.1:0"},
        ],
        expect=201,
    )
    fixed, replaced = again["proxies"]
    assert fixed["enabled"] is True and len(fixed["toxics"]) == 1  # same listen and upstream: kept as it was
    assert replaced["toxics"] == [] and port_of(replaced) != first_any  # port 0 always counts as changed
    moved = await api.call(
        "POST", "/populate", [{"name": "fixed", "upstream": server.address, "listen": f"127.0.0.1:{port}"}], expect=201
    )
    assert moved["proxies"][0]["upstream"] == server.address and moved["proxies"][0]["toxics"] == []


async def test_populate_empty_and_errors(api: Api, echo: Upstream, busy_port: int) -> None:
    assert await api.call("POST", "/populate", [], expect=201) == {"proxies": None}
    status, _, payload = await api.request(
        "POST",
        "/populate",
        [
            {"name": "ok", "upstream": echo.address, "listen": "127.0.0.1:0"},
            {"upstream": echo.address},
        ],
    )
    assert status == 400
    assert json.loads(payload) == {"error": "missing required field: name at proxy 2", "status": 400, "proxies": None}
    assert await api.call("GET", "/proxies") == {}  # validated before anything was created
    status, _, payload = await api.request("POST", "/populate", [{"name": "x"}])
    assert json.loads(payload)["error"] == "missing required field: upstream at proxy 1"
    status, _, payload = await api.request("POST", "/populate", {"not": "an array"})
    assert status == 400 and json.loads(payload)["error"].startswith("bad request body")
    status, _, payload = await api.request(
        "POST",
        "/populate",
        [
            {"name": "first", "upstream": echo.address, "listen": "127.0.0.1:0"},
            {"name": "clash", "upstream": echo.address, "listen": f"127.0.0.1:{busy_port}"},
        ],
    )
    assert status == 500 and json.loads(payload)["proxies"] is None
    assert list(await api.call("GET", "/proxies")) == ["first"]  # kept: the failure came part-way


async def test_metrics_count_bytes_and_connections(api: Api, echo: Upstream) -> None:
    port = port_of(await api.create_proxy("p", echo.address))
    async with client(port) as (reader, writer):
        writer.write(b"x" * 1000)
        await read_exactly(reader, 1000)
        status, headers, body = await api.request("GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    labels = f'listener="127.0.0.1:{port}",proxy="p",upstream="{echo.address}"'
    assert f'toxiproxy_proxy_received_bytes_total{{direction="upstream",{labels}}} 1000' in text
    assert f'toxiproxy_proxy_sent_bytes_total{{direction="downstream",{labels}}} 1000' in text
    assert f"toxiproxy_proxy_connections_total{{{labels}}} 1" in text
