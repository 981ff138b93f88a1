"""WebRTC on loopback only: every candidate in every offer and answer is 127.0.0.1, a connection still forms and
carries audio, and a description offering anything else is refused with the candidate named."""

from __future__ import annotations

import asyncio
import re

import ifaddr
import pytest
from aiortc import AudioStreamTrack, RTCPeerConnection, RTCSessionDescription

from harness.webrtc.loopback import (
    NonLoopbackCandidate,
    candidates,
    check_candidates,
    gather_on_loopback_only,
    loopback_peer,
)

pytestmark = pytest.mark.e2e


def _other_addresses() -> list[str]:
    return [ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips
            if isinstance(ip.ip, str) and not ip.ip.startswith("127.")]


async def _connect(offerer: RTCPeerConnection, answerer: RTCPeerConnection) -> tuple[str, str]:
    offerer.addTrack(AudioStreamTrack())
    gather_on_loopback_only(offerer)
    await offerer.setLocalDescription(await offerer.createOffer())
    offer = offerer.localDescription.sdp
    check_candidates(offer, what="the offer")
    await answerer.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
    gather_on_loopback_only(answerer)
    await answerer.setLocalDescription(await answerer.createAnswer())
    answer = answerer.localDescription.sdp
    check_candidates(answer, what="the answer")
    await offerer.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    return offer, answer


async def test_every_candidate_is_loopback_and_audio_flows() -> None:
    offerer, answerer = loopback_peer(), loopback_peer()
    received: asyncio.Queue[object] = asyncio.Queue()
    pulls: list[asyncio.Task[None]] = []

    @answerer.on("track")
    def on_track(track: object) -> None:
        async def pull() -> None:
            for _ in range(5):
                await received.put(await track.recv())  # type: ignore[attr-defined]

        pulls.append(asyncio.ensure_future(pull()))

    try:
        offer, answer = await _connect(offerer, answerer)
        for sdp in (offer, answer):
            found = candidates(sdp)
            assert found, sdp
            assert {c.address for c in found} == {"127.0.0.1"}
            assert {c.type for c in found} == {"host"}
        frames = [await asyncio.wait_for(received.get(), timeout=20) for _ in range(5)]
        assert all(getattr(frame, "sample_rate", 0) > 0 for frame in frames)
        assert offerer.connectionState == "connected"
    finally:
        for task in pulls:
            task.cancel()
        await offerer.close()
        await answerer.close()


async def test_an_unmodified_peer_would_offer_the_machines_other_interfaces() -> None:
    """Why the restriction exists: aioice leaves 127.0.0.1 out and offers every other interface."""
    others = _other_addresses()
    if not others:
        pytest.skip("this machine has no interface besides loopback")
    pc = RTCPeerConnection()
    try:
        pc.addTrack(AudioStreamTrack())
        await pc.setLocalDescription(await pc.createOffer())
        addresses = {c.address for c in candidates(pc.localDescription.sdp)}
        assert "127.0.0.1" not in addresses and addresses & set(others)
        with pytest.raises(NonLoopbackCandidate):
            check_candidates(pc.localDescription.sdp)
    finally:
        await pc.close()


def test_a_description_with_a_candidate_outside_loopback_is_refused_naming_it() -> None:
    sdp = ("v=0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n"
           "a=candidate:2 1 udp 2130706431 192.168.1.20 50001 typ host\r\n")
    with pytest.raises(NonLoopbackCandidate, match=re.escape("192.168.1.20:50001")):
        check_candidates(sdp)
    assert len(check_candidates(sdp, allow_remote=True)) == 2
    with pytest.raises(NonLoopbackCandidate, match="local"):
        check_candidates("a=candidate:1 1 udp 1 5f1c2a.local 4000 typ host\r\n")
