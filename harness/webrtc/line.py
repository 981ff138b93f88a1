"""A call placed over WebRTC (aiortc): HTTP offer/answer, then one audio track each way.

- **Sending.** The pacer's 20 ms tick hands each caller frame (μ-law 8 kHz, the same frames the Twilio caller sends)
  to :class:`CallerTrack`, which aiortc's sender is waiting on; it encodes whatever was negotiated (Opus at 48 kHz in
  practice; aiortc resamples). So the caller's pacing and its lateness are the pacer's, exactly as on Twilio.
- **Hearing.** Every decoded frame of the agent's track goes through :class:`~harness.webrtc.media.TrackListener`
  (to 8 kHz, lost frames concealed as silence by RTP timestamp) to the call's playout model at its arrival time. A
  receiver plays a real-time stream behind a jitter buffer: :data:`PLAYOUT_DELAY_S` of silence starts each run of
  audio, so arrival jitter under that delay does not break the timeline, a longer stall is heard as the gap it is,
  and the delay then grows to cover such stalls (adaptive, as a browser's). Every latency on WebRTC therefore
  includes the receive path's delay (the 2-packet jitter buffer of :mod:`harness.webrtc.jitter`, 40 ms, plus
  this one), as what a person hears does.
- **The caller's leg.** With a :class:`~harness.webrtc.leg.CallerLeg`, the call's media goes through its own
  impairment relay: both descriptions are rewritten so that each side sees the other at the relay.
- **Hanging up** is closing the peer connection; the agent hanging up shows as the connection closing or failing,
  or its track ending.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fractions
import re
from collections.abc import Callable

import aiohttp
import av
import numpy as np
from aiortc import RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from harness.audio import formats, g711
from harness.line import LineEvents, LineRefused
from harness.records import Outcome
from harness.transport.websocket import Closed
from harness.webrtc.impairment import Impairment
from harness.webrtc.jitter import use_caller_jitter_buffer
from harness.webrtc.leg import CallerLeg
from harness.webrtc.loopback import NonLoopbackCandidate, gather_on_loopback_only, loopback_peer
from harness.webrtc.media import TrackListener
from harness.webrtc.relay import UdpRelay, route_through
from harness.webrtc.signalling import SignallingError, exchange_offer

#: the receiver's playout delay at the start of a call (after the 40 ms jitter buffer), and the most it grows to
PLAYOUT_DELAY_S = 0.060
MAX_PLAYOUT_DELAY_S = 0.200
_RATE = 8000
_FRAME_SAMPLES = 160
_MULAW_TO_PCM = (formats.from_bytes(bytes(range(256)), formats.TWILIO_MULAW_8K) * 32767.0).astype(np.int16)
_SILENCE = bytes([g711.MULAW_SILENCE])


class CallerTrack(MediaStreamTrack):
    """The caller's microphone: frames pushed by the pacer, pulled by aiortc's sender in order."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._frames: asyncio.Queue[np.ndarray] = asyncio.Queue()
        self._pts = 0

    def push(self, pcm: np.ndarray) -> None:
        self._frames.put_nowait(pcm)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        samples = await self._frames.get()
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = _RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, _RATE)
        self._pts += len(samples)
        return frame


class WebRtcLine:
    transport = "webrtc"
    has_clear = False
    plays_out_on_close = True

    def __init__(self, http: aiohttp.ClientSession, *, offer_url: str, call_sid: str, now: Callable[[], float],
                 caller_leg: CallerLeg | None = None, allow_remote: bool = False) -> None:
        self._http = http
        self._url = offer_url
        self._call_sid = call_sid
        self._now = now
        self._leg = caller_leg
        self._allow_remote = allow_remote
        self._pc = loopback_peer()
        self._track = CallerTrack()
        self._listener = TrackListener()
        self._events: LineEvents | None = None
        self._relay: UdpRelay | None = None
        self._hearing: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._open = False
        self._closed = False
        self._hung_up = False
        self._play_end: float | None = None
        self.playout_delay_s = PLAYOUT_DELAY_S
        self._underruns = 0
        self._closing: asyncio.Future[None] | None = None
        self._clock_rate = 48_000  # of the negotiated codec: RTP jitter is counted in its timestamp units
        self._rtp: dict[str, float] = {}
        self.platform_call_sid: str | None = None

    # --- connecting -----------------------------------------------------------------------------------------------

    async def connect(self, events: LineEvents, timeout: float) -> str:
        self._events = events
        pc = self._pc
        pc.addTrack(self._track)  # sendrecv: the agent's track comes back on the same transceiver
        for transceiver in pc.getTransceivers():
            use_caller_jitter_buffer(transceiver.receiver)  # a person's receiver, not aiortc's (see jitter.py)
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_state)
        try:
            async with asyncio.timeout(timeout):
                gather_on_loopback_only(pc)
                await pc.setLocalDescription(await pc.createOffer())
                offer = pc.localDescription.sdp
                if self._leg is not None:
                    self._relay = await self._leg.open_relay()
                    offer, self._relay.caller = route_through(offer, self._relay.far_address)
                answer = await exchange_offer(self._http, self._url, RTCSessionDescription(sdp=offer, type="offer"),
                                              timeout_s=timeout, allow_remote=self._allow_remote)
                self.platform_call_sid = answer.pc_id  # a new call sends no pc_id (one names a call to renegotiate)
                sdp = answer.description.sdp
                if self._relay is not None:
                    sdp, self._relay.far_end = route_through(sdp, self._relay.near_address)
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
                self._clock_rate = _clock_rate(sdp)
                await self._connected.wait()
        except SignallingError as exc:
            await self._close_quietly()
            outcome = Outcome.REJECTED if exc.status in (429, 503) else Outcome.FAILED_TO_CONNECT
            raise LineRefused(outcome, f"WebRTC offer refused: {exc}") from None
        except NonLoopbackCandidate as exc:
            await self._close_quietly()
            raise LineRefused(Outcome.FAILED_TO_CONNECT, str(exc)) from None
        except TimeoutError:
            state = pc.connectionState
            await self._close_quietly()
            raise LineRefused(Outcome.FAILED_TO_CONNECT, f"WebRTC call to {self._url}: not connected within "
                                                         f"{timeout:g} s (ICE/DTLS state {state})") from None
        if self._closed:
            raise LineRefused(Outcome.FAILED_TO_CONNECT, f"WebRTC call to {self._url}: the connection failed "
                                                         "while it was being set up")
        self._open = True
        return self._url

    def _on_state(self) -> None:
        state = self._pc.connectionState
        if state == "connected":
            self._connected.set()
        elif state in ("failed", "closed"):
            self._ended(f"the WebRTC connection {state}")

    def _ended(self, why: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._open = False
        self._connected.set()  # a connect() still waiting learns it failed
        if self._events is not None and not self._hung_up:
            self._events.on_closed(Closed(None, why, by_peer=True))

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self._hearing is None:
            self._hearing = asyncio.ensure_future(self._hear(track))

    # --- media ----------------------------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._open

    def start_media(self, first_frame_at: float) -> None:
        pass  # the track's timestamps count its frames; aiortc maps them to RTP time itself

    def send_frame(self, payload_b64: str, scheduled: float) -> None:
        self._track.push(_MULAW_TO_PCM[np.frombuffer(base64.b64decode(payload_b64), dtype=np.uint8)])

    def send_dtmf(self, digit: str) -> None:
        # the scenario refuses dtmf steps for webrtc callers (aiortc sends no RFC 4733 events)
        raise NotImplementedError("DTMF over WebRTC")

    def echo_mark(self, name: str) -> None:
        pass  # no marks on WebRTC

    async def _hear(self, track: MediaStreamTrack) -> None:
        listener = self._listener
        try:
            while True:
                frame = await track.recv()
                concealed = listener.concealed_ms
                samples = listener.samples(frame)
                if samples.size and self._events is not None:
                    now = self._now()
                    if listener.concealed_ms > concealed:
                        self._events.on_agent_audio_lost(listener.concealed_ms - concealed, now)
                    self._deliver(formats.to_bytes(samples, formats.TWILIO_MULAW_8K), now)
        except MediaStreamError:
            self._ended("the agent's audio track ended")

    def _deliver(self, mulaw: bytes, now: float) -> None:
        """Hand audio to the call's playout at ``now``. A run that starts, or restarts after running dry, begins with
        the playout delay, as a receiver's jitter buffer does; running dry grows that delay to cover the hole it
        left (up to :data:`MAX_PLAYOUT_DELAY_S`), as an adaptive jitter buffer grows under jitter."""
        assert self._events is not None
        if self._play_end is None or now >= self._play_end:
            if self._play_end is not None:
                self.playout_delay_s = min(MAX_PLAYOUT_DELAY_S,
                                           max(self.playout_delay_s, now - self._play_end + PLAYOUT_DELAY_S))
                self._underruns += 1
            samples = round(self.playout_delay_s * _RATE)
            self._play_end = now + samples / _RATE
            mulaw = _SILENCE * samples + mulaw
            self._play_end += len(mulaw) / _RATE - samples / _RATE
        else:
            self._play_end += len(mulaw) / _RATE
        self._events.on_agent_audio(mulaw, now)

    def media_stats(self) -> dict[str, float]:
        return {"concealed_ms": round(self._listener.concealed_ms, 1), "late_frames": self._listener.late_frames,
                "playout_underruns": self._underruns, "playout_delay_ms": round(self.playout_delay_s * 1000, 1),
                **self._rtp}

    async def _read_rtp_stats(self) -> None:
        """The receiver's RTCP figures for the agent's stream (RFC 3550 §6.4.1): packets received and lost, and the
        interarrival jitter, converted from timestamp units to milliseconds."""
        with contextlib.suppress(Exception):  # a connection already torn down has nothing more to say
            for transceiver in self._pc.getTransceivers():
                for stats in (await transceiver.receiver.getStats()).values():
                    if getattr(stats, "type", "") == "inbound-rtp":
                        self._rtp = {"rtp_packets_received": stats.packetsReceived,
                                     "rtp_packets_lost": max(0, stats.packetsLost),
                                     "rtp_jitter_ms": round(1000.0 * stats.jitter / self._clock_rate, 2)}

    # --- hanging up -----------------------------------------------------------------------------------------------

    def hang_up(self) -> None:
        self._hung_up = True
        self._open = False
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close_quietly())

    async def wait_closed(self) -> None:
        if self._closing is not None:
            await asyncio.shield(self._closing)

    async def _close_quietly(self) -> None:
        self._hung_up = True
        await self._read_rtp_stats()
        if self._hearing is not None:
            self._hearing.cancel()
        if self._relay is not None:
            # the hang-up itself (RTCP BYE, DTLS close_notify) is not impaired: lost, it would leave the agent holding
            # the call until ICE consent expires (~30 s), after the run has counted its recordings
            self._relay.set_impairment(Impairment())
        with contextlib.suppress(Exception):
            await self._pc.close()
        if self._relay is not None and self._leg is not None:
            await asyncio.sleep(0.05)  # the hang-up's packets reach the relay (a loop turn or two) before it closes
            await self._leg.close_relay(self._relay)
            self._relay = None


def _clock_rate(sdp: str) -> int:
    """The clock rate of the first audio codec of a description (``a=rtpmap:111 opus/48000/2``)."""
    match = re.search(r"^a=rtpmap:\d+ [^/\s]+/(\d+)", sdp, flags=re.MULTILINE)
    return int(match.group(1)) if match else 48_000
