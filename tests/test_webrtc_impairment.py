"""The caller-leg impairment: known answers on the sans-I/O core (seeded, times given), then the UDP relay on
loopback carrying real datagrams."""

from __future__ import annotations

import asyncio
import itertools
from random import Random

import pytest
from pydantic import ValidationError

from harness.webrtc.impairment import Direction, Impairment
from harness.webrtc.relay import UdpRelay


def _run(impairment: Impairment, packets: int, *, seed: int = 7) -> tuple[Direction, list[tuple[float, int]]]:
    """Send ``packets`` 20 ms apart; collect (delivery time, sequence number) in delivery order."""
    direction = Direction(impairment, Random(seed), start=0.0)
    delivered: list[tuple[float, int]] = []
    t = 0.0
    for seq in range(packets):
        t = seq * 0.020
        direction.packet(seq.to_bytes(4, "big"), t)
        delivered += [(t, int.from_bytes(d, "big")) for d in direction.due(t)]
    while direction.next_due() is not None:
        t = direction.next_due()  # type: ignore[assignment]
        delivered += [(t, int.from_bytes(d, "big")) for d in direction.due(t)]
    return direction, delivered


def test_no_impairment_delivers_every_packet_at_once_in_order() -> None:
    direction, delivered = _run(Impairment(), 500)
    assert [seq for _, seq in delivered] == list(range(500))
    assert all(abs(t - seq * 0.020) < 1e-9 for t, seq in delivered)
    assert direction.stats.lost == 0 and direction.stats.delivered == 500


def test_independent_loss_drops_about_its_share() -> None:
    direction, delivered = _run(Impairment(loss_pct=5), 20_000)
    assert 4.5 <= direction.stats.to_json()["loss_pct"] <= 5.5
    assert direction.stats.lost_random == 20_000 - len(delivered)


def test_burst_loss_comes_in_bursts_of_the_mean_length() -> None:
    direction, delivered = _run(Impairment(burst_enter_pct=1, burst_leave_pct=25), 50_000)
    arrived = {seq for _, seq in delivered}
    bursts, run = [], 0
    for seq in range(50_000):
        if seq in arrived:
            if run:
                bursts.append(run)
            run = 0
        else:
            run += 1
    mean = sum(bursts) / len(bursts)
    assert 3.4 <= mean <= 4.6  # 100 / 25 = 4 packets
    # the same share lost independently would give bursts of ~1
    assert direction.stats.lost_burst == 50_000 - len(delivered)


def test_jitter_spreads_arrivals_but_keeps_the_order() -> None:
    _, delivered = _run(Impairment(delay_ms=40, jitter_ms=30), 2_000)
    assert [seq for _, seq in delivered] == list(range(2_000))
    delays = [t - seq * 0.020 for t, seq in delivered]
    assert min(delays) >= 0.010 - 1e-9 and max(delays) <= 0.070 + 0.030  # order can hold one back up to a frame
    spread = sorted(delays)
    assert spread[-len(spread) // 20] - spread[len(spread) // 20] > 0.040  # p95 - p5 of the delays


def test_reordering_lets_later_packets_overtake() -> None:
    direction, delivered = _run(Impairment(reorder_pct=10, reorder_gap_ms=50), 5_000)
    order = [seq for _, seq in delivered]
    assert sorted(order) == list(range(5_000))
    overtaken = sum(1 for a, b in itertools.pairwise(order) if b < a)
    assert 0.07 * 5_000 <= overtaken <= 0.13 * 5_000
    assert direction.stats.reordered == pytest.approx(500, rel=0.2)


def test_a_blackout_drops_everything_in_its_window_only() -> None:
    direction, delivered = _run(Impairment(blackout_at=2.0, blackout_s=1.0), 250)  # 5 s of packets
    lost = set(range(250)) - {seq for _, seq in delivered}
    assert lost == set(range(100, 150))
    assert direction.stats.lost_blackout == 50


def test_the_same_seed_loses_the_same_packets() -> None:
    first = _run(Impairment(loss_pct=10, jitter_ms=20), 1_000, seed=3)[1]
    again = _run(Impairment(loss_pct=10, jitter_ms=20), 1_000, seed=3)[1]
    assert first == again


def test_a_blackout_needs_a_length() -> None:
    with pytest.raises(ValidationError, match="blackout_s"):
        Impairment(blackout_at=3)


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


class _Collect(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[bytes] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.append(data)


async def _through_relay(impairment: Impairment, packets: int) -> tuple[list[int], dict]:
    loop = asyncio.get_running_loop()
    echo, _ = await loop.create_datagram_endpoint(_Echo, local_addr=("127.0.0.1", 0))
    relay = UdpRelay(echo.get_extra_info("sockname")[:2], impairment, seed=5)
    address = await relay.start()
    caller, collect = await loop.create_datagram_endpoint(_Collect, local_addr=("127.0.0.1", 0))
    try:
        for seq in range(packets):
            caller.sendto(seq.to_bytes(4, "big"), address)
            if seq % 50 == 49:
                await asyncio.sleep(0.01)
        for _ in range(100):  # until the due packets are out (bounded)
            await asyncio.sleep(0.02)
            if relay.up.next_due() is None and relay.down.next_due() is None and \
                    relay.down.stats.packets == relay.up.stats.delivered:
                break
        return [int.from_bytes(d, "big") for d in collect.got], relay.stats()
    finally:
        await relay.close()
        caller.close()
        echo.close()


async def test_the_relay_carries_every_datagram_there_and_back_when_unimpaired() -> None:
    got, stats = await _through_relay(Impairment(), 400)
    assert sorted(got) == list(range(400))
    assert stats["caller_to_far_end"]["delivered"] == stats["far_end_to_caller"]["delivered"] == 400


async def test_the_relay_loses_on_both_legs_what_it_says_it_lost() -> None:
    got, stats = await _through_relay(Impairment(loss_pct=10), 2_000)
    up, down = stats["caller_to_far_end"], stats["far_end_to_caller"]
    assert len(got) == down["delivered"] == up["delivered"] - down["lost"]
    assert up["lost"] + down["lost"] == 2_000 - len(got)
    assert 0.75 * 2_000 <= len(got) <= 0.87 * 2_000  # ~0.9 * 0.9 arrive back


async def test_a_webrtc_call_through_the_relay_takes_its_loss_on_both_legs() -> None:
    """The caller's offer and the far end's answer both point at the relay: every media packet crosses it, both ways,
    and the loss set on it is what each side's audio goes through."""
    from aiortc import AudioStreamTrack, RTCSessionDescription

    from harness.webrtc.loopback import check_candidates, gather_on_loopback_only, loopback_peer
    from harness.webrtc.relay import route_through

    caller, agent = loopback_peer(), loopback_peer()
    frames = {"caller": 0, "agent": 0}
    pulls: list[asyncio.Task[None]] = []

    def count(name: str) -> object:
        def on_track(track: object) -> None:
            async def pull() -> None:
                while True:
                    await track.recv()  # type: ignore[attr-defined]
                    frames[name] += 1

            pulls.append(asyncio.ensure_future(pull()))

        return on_track

    caller.on("track", count("caller"))
    agent.on("track", count("agent"))
    relay = UdpRelay(None, Impairment(loss_pct=5), seed=2)
    await relay.start()
    try:
        caller.addTrack(AudioStreamTrack())
        gather_on_loopback_only(caller)
        await caller.setLocalDescription(await caller.createOffer())
        offer, caller_address = route_through(caller.localDescription.sdp, relay.far_address)
        relay.caller = caller_address
        await agent.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        agent.addTrack(AudioStreamTrack())
        gather_on_loopback_only(agent)
        await agent.setLocalDescription(await agent.createAnswer())
        answer, agent_address = route_through(agent.localDescription.sdp, relay.near_address)
        relay.far_end = agent_address
        for sdp in (offer, answer):
            assert {c.port for c in check_candidates(sdp)} <= {relay.near_address[1], relay.far_address[1]}
        await caller.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        for _ in range(200):
            await asyncio.sleep(0.05)
            if min(frames.values()) >= 100:
                break
        stats = relay.stats()
        up, down = stats["caller_to_far_end"], stats["far_end_to_caller"]
        assert caller.connectionState == agent.connectionState == "connected"
        assert min(frames.values()) >= 100, frames
        # both directions crossed the relay (no direct path), and both lost packets there
        assert up["packets"] >= 100 and down["packets"] >= 100, stats
        assert up["lost"] > 0 and down["lost"] > 0, stats
    finally:
        for task in pulls:
            task.cancel()
        await caller.close()
        await agent.close()
        await relay.close()
