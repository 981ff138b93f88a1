"""The WebRTC caller (issue 7, point 1): the same script runner and measurements as the Twilio caller, over aiortc.

Against an agent with known timing (harness.testing.known_webrtc_agent), a conversation completes, every phrase
decodes, the latency is the agent's delay plus the WebRTC path, and the agent hanging up ends the call as completed.
The caller's jitter buffer gives a lost packet up instead of stalling (aiortc's buffer turns one lost packet into
about 100 ms of silence); so 5 % loss with 40 ms jitter lowers the audio-quality score measurably but in proportion,
while a clean path scores 1.0."""

from __future__ import annotations

from typing import Any

import pytest
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from harness.caller import Dial
from harness.records import CallRecord
from harness.scenario import ExpectHangup, HangUp, Limits, Say, WaitForGreeting, scenario_from_mapping
from harness.testing.calls import place_call
from harness.testing.known_webrtc_agent import KnownWebRtcAgent, serve_known_webrtc_agent
from harness.webrtc.impairment import Impairment
from harness.webrtc.jitter import CallerJitterBuffer
from harness.webrtc.leg import CallerLeg

GREETING = "Hello, thanks for calling Acme Dental. How can I help you today?"
REPLIES = [["Sure, I can book a cleaning.", "Which day works for you?"], ["Tuesday at ten is free. Shall I book it?"],
           ["You are booked for Tuesday at ten."]]
SCRIPT = [WaitForGreeting(expect=[GREETING]),
          Say(text="Hi, I would like to book a teeth cleaning.", expect=REPLIES[0], think_time=0.2),
          Say(text="Tuesday morning would be great.", expect=REPLIES[1], think_time=0.2),
          Say(text="Yes, please.", expect=REPLIES[2], think_time=0.2),
          ExpectHangup(timeout=5)]


def _packet(seq: int) -> RtpPacket:
    packet = RtpPacket(payload_type=111, sequence_number=seq, timestamp=seq * 960)
    packet._data = bytes([seq % 256])  # type: ignore[attr-defined]
    return packet


def _played(buffer: JitterBuffer, sequence: list[int]) -> list[int]:
    out = []
    for seq in sequence:
        _, frame = buffer.add(_packet(seq))
        if frame is not None:
            out.append(frame.timestamp // 960)
    return out


def test_the_callers_jitter_buffer_gives_a_lost_packet_up_where_aiortcs_stalls() -> None:
    arriving = [n for n in range(40) if n != 10]  # packet 10 is lost
    ours = _played(CallerJitterBuffer(), arriving)
    assert ours == [n for n in range(38) if n != 10]  # in order, two behind, only the lost one missing
    aiortc = _played(JitterBuffer(capacity=16, prefetch=4), arriving)
    assert len([n for n in range(36) if n not in aiortc]) >= 5  # aiortc's loses several good frames with it


async def _call(agent: KnownWebRtcAgent, impairment: Impairment | None = None) -> tuple[CallRecord, dict[str, Any]]:
    leg = None
    if impairment is not None:
        leg = CallerLeg(seed=5)
        leg.set_impairment(impairment)
    try:
        async with serve_known_webrtc_agent(agent) as url:
            one = await place_call(Dial(transport="webrtc", offer_url=url, caller_leg=leg), SCRIPT, Limits())
        return one.record, leg.stats() if leg is not None else {}
    finally:
        if leg is not None:
            await leg.close()


def _quality(record: CallRecord) -> float:
    symbols = sum(t.audio_symbols for t in record.turns)
    return sum(t.audio_symbols_clear for t in record.turns) / symbols


@pytest.mark.e2e
async def test_a_webrtc_conversation_is_measured_like_a_phone_call() -> None:
    agent = KnownWebRtcAgent(GREETING, REPLIES, reply_delay=0.5)
    record, _ = await _call(agent)
    assert str(record.outcome) == "completed" and record.reason == "the agent hung up", record.reason
    assert record.transport == "webrtc"
    assert [t.status for t in record.turns] == ["ok"] * 4
    assert [t.heard for t in record.turns] == [[GREETING], *REPLIES]
    assert _quality(record) == 1.0 and record.concealed_ms == 0
    assert record.rtp_packets_received and record.rtp_packets_lost == 0 and record.rtp_jitter_ms is not None
    # the agent answers 0.5 s after the caller's last loud frame reached it; the caller hears it after that, plus
    # both receive paths (aiortc's 80 ms buffer at the agent, ~100 ms at the caller) and the codec: never earlier
    for turn in record.turns[1:]:
        assert turn.response_latency_ms is not None and 500 <= turn.response_latency_ms <= 1000, turn
    assert agent.hung_up == 1 and record.frames_sent > 0


@pytest.mark.e2e
async def test_loss_and_jitter_on_the_webrtc_leg_lower_audio_quality_in_proportion() -> None:
    agent = KnownWebRtcAgent(GREETING, REPLIES, reply_delay=0.5)
    record, stats = await _call(agent, Impairment(loss_pct=5, delay_ms=40, jitter_ms=40))
    assert str(record.outcome) == "completed", record.reason
    down = stats["far_end_to_caller"]
    assert down["lost"] > 0 and 2.0 <= down["loss_pct"] <= 9.0, down
    quality = _quality(record)
    assert 0.5 < quality < 1.0, quality  # measurably lower, but not the collapse aiortc's own buffer gives
    assert record.rtp_packets_lost is not None and record.rtp_packets_lost > 0
    assert record.concealed_ms > 0
    assert sum(turn.concealed_ms for turn in record.turns) > 0  # some of it inside the agent's turns
    # concealment is about one frame per lost packet, not five
    assert record.concealed_ms <= 40 * record.rtp_packets_lost, (record.concealed_ms, record.rtp_packets_lost)


def _mapping(**overrides: Any) -> dict[str, Any]:
    return {"name": "t", "script": [{"wait_for_greeting": {}}, {"dtmf": "12"}], **overrides}


def test_scenarios_choose_the_transport_per_caller_group() -> None:
    scenario = scenario_from_mapping(
        {"name": "mixed", "callers": {"count": 6, "groups": [{"name": "phone"}, {"name": "web", "transport": "webrtc",
                                                                                  "weight": 2}]},
         "script": [{"wait_for_greeting": {}}]}, "mixed.yaml")
    assert [scenario.callers.group_of(i) for i in range(6)] == [1, 0, 1, 1, 0, 1]
    with pytest.raises(ValueError, match=r"script\[1\]: dtmf cannot be sent over WebRTC"):
        scenario_from_mapping(_mapping(callers={"transport": "webrtc"}), "s.yaml")
    with pytest.raises(ValueError, match=r"callers.groups\[0\].transport: webrtc callers need target.webrtc"):
        scenario_from_mapping(_mapping(target={"webhook": {"url": "http://127.0.0.1:9/voice"}},
                                       callers={"groups": [{"name": "w", "transport": "webrtc"}]},
                                       script=[{"wait_for_greeting": {}}]), "s.yaml")
    with pytest.raises(ValueError, match="target is caller_leg"):
        scenario_from_mapping(_mapping(callers={"transport": "webrtc"}, script=[{"wait_for_greeting": {}}],
                                       faults=[{"target": "llm", "impairment": {"loss_pct": 5}}]), "s.yaml")
    with pytest.raises(ValueError, match="this scenario has none"):
        scenario_from_mapping(_mapping(script=[{"wait_for_greeting": {}}],
                                       faults=[{"target": "caller_leg", "impairment": {"loss_pct": 5}}]), "s.yaml")


@pytest.mark.e2e
async def test_a_barge_in_over_webrtc_is_measured_to_where_the_agents_audio_stops() -> None:
    # WebRTC has no clear: the agent just stops sending. The reaction runs from the caller's first interrupting frame
    # to the end of the agent's last audible audio: the agent's own 0.3 s, plus the way there and back
    agent = KnownWebRtcAgent(f"{GREETING} We are open every day. Our hygienists are friendly.", [REPLIES[0]],
                             reply_delay=0.4, stop_after=0.3, hang_up_after_last=False)
    script = [WaitForGreeting(), Say(text="Hi, I would like to book a teeth cleaning.", barge_in_after=1.0,
                                     expect=REPLIES[0]), HangUp()]
    async with serve_known_webrtc_agent(agent) as url:
        one = await place_call(Dial(transport="webrtc", offer_url=url), script, Limits())
    record = one.record
    assert str(record.outcome) == "completed", record.reason
    greeting, reply = record.turns
    assert greeting.status == "interrupted" and reply.barge_in and reply.status == "ok", record.turns
    assert len(agent.stopped_at) == 1
    assert reply.barge_in_reaction_ms is not None and 300 <= reply.barge_in_reaction_ms <= 900, reply
