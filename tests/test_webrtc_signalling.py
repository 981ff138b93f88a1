"""HTTP offer/answer signalling (Pipecat's SmallWebRTC shape) between a harness peer and an answering server, both on
loopback; and the refusals, each naming the URL and the problem."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiortc import AudioStreamTrack, RTCSessionDescription

from harness.webrtc.loopback import NonLoopbackCandidate, check_candidates, gather_on_loopback_only, loopback_peer
from harness.webrtc.signalling import SignallingError, exchange_offer

pytestmark = pytest.mark.e2e

Handler = Callable[[web.Request], Any]
PEERS: web.AppKey[list[Any]] = web.AppKey("peers", list)


async def _answering(request: web.Request) -> web.Response:
    """A minimal answerer of the SmallWebRTC shape: it sends a track back and keeps the peer until the test ends."""
    body = await request.json()
    check_candidates(body["sdp"], what="the offer")
    pc = loopback_peer()
    request.app[PEERS].append(pc)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))
    pc.addTrack(AudioStreamTrack())
    gather_on_loopback_only(pc)
    await pc.setLocalDescription(await pc.createAnswer())
    return web.json_response({"sdp": pc.localDescription.sdp, "type": "answer", "pc_id": "pc-1"})


@pytest.fixture
async def server() -> AsyncIterator[Callable[[Handler], Any]]:
    runners: list[web.AppRunner] = []
    apps: list[web.Application] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app[PEERS] = []
        app.router.add_post("/api/offer", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        apps.append(app)
        return f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/api/offer"  # type: ignore[union-attr]

    yield start
    for app in apps:
        for pc in app[PEERS]:
            await pc.close()
    for runner in runners:
        await runner.cleanup()


async def _offer() -> tuple[Any, RTCSessionDescription]:
    pc = loopback_peer()
    pc.addTrack(AudioStreamTrack())
    gather_on_loopback_only(pc)
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription


async def test_an_offer_posted_over_http_gets_an_answer_and_audio_flows_back(server: Any) -> None:
    url = await server(_answering)
    pc, offer = await _offer()
    heard: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    pulls: list[asyncio.Task[None]] = []

    @pc.on("track")
    def on_track(track: Any) -> None:
        async def first() -> None:
            frame = await track.recv()
            if not heard.done():
                heard.set_result(frame)

        pulls.append(asyncio.ensure_future(first()))

    try:
        async with aiohttp.ClientSession() as http:
            answer = await exchange_offer(http, url, offer)
        assert answer.pc_id == "pc-1"
        await pc.setRemoteDescription(answer.description)
        frame = await asyncio.wait_for(heard, timeout=20)
        assert frame.sample_rate > 0 and pc.connectionState == "connected"
    finally:
        for task in pulls:
            task.cancel()
        await pc.close()


@pytest.mark.parametrize(("handler", "problem"), [
    (lambda r: web.Response(status=503, text="at capacity"), "HTTP 503: at capacity"),
    (lambda r: web.Response(text="<html>"), "not JSON"),
    (lambda r: web.json_response({"type": "offer", "sdp": "v=0"}), "without an SDP answer"),
])
async def test_a_broken_answer_is_refused_naming_the_url_and_the_problem(server: Any, handler: Handler,
                                                                         problem: str) -> None:
    async def respond(request: web.Request) -> web.Response:
        return handler(request)

    url = await server(respond)
    pc, offer = await _offer()
    try:
        async with aiohttp.ClientSession() as http:
            with pytest.raises(SignallingError) as caught:
                await exchange_offer(http, url, offer)
        assert url in str(caught.value) and problem in str(caught.value)
    finally:
        await pc.close()


async def test_an_answer_offering_candidates_off_loopback_is_refused(server: Any) -> None:
    async def remote(request: web.Request) -> web.Response:
        return web.json_response({"type": "answer", "sdp": "v=0\r\na=candidate:1 1 udp 1 10.0.0.7 4000 typ host\r\n"})

    url = await server(remote)
    pc, offer = await _offer()
    try:
        async with aiohttp.ClientSession() as http:
            with pytest.raises(NonLoopbackCandidate, match=re.escape("10.0.0.7")):
                await exchange_offer(http, url, offer)
    finally:
        await pc.close()
