"""The runtime's WebRTC transport: one call per aiortc peer connection, behind ``POST /webrtc/offer``.

Why: half of the platforms users test take calls over WebRTC as well as over the phone, with another line format
(16-bit PCM at 16 kHz, Opus on the wire, where Twilio PSTN carries μ-law 8 kHz). The reference runtime answers both
so the same scenario can be run over either, and the encoding safeguard shows its mismatch in both directions
(reference_runtime/audio_plan.py).

Signalling is one HTTP exchange in the shape of Pipecat's SmallWebRTC transport (:func:`parse_offer`; the route is
in reference_runtime/app.py). Candidates travel inside the SDP (no trickle ICE).

The :class:`~reference_runtime.call.Call` does not know it is on WebRTC. :class:`WebRtcLink` is its
:class:`~reference_runtime.call.CallLink` and the source of its events, the same events a Twilio stream produces:

- ``start``: synthesized when the peer connection reaches ``connected`` (call sid = the ``pc_id``, no custom
  parameters, ``linear16`` at 16 kHz, ``transport="webrtc"``);
- caller media: the remote audio track's decoded frames (aiortc decodes Opus to s16 at 48 kHz, stereo) as 16-bit
  PCM mono at 16 kHz (:class:`CallerAudio`);
- agent media: bytes queued on :class:`OutboundAudio` and played by :class:`AgentTrack`, 20 ms a frame on an
  absolute grid, silence when nothing is queued. The bytes are played as PCM 16 kHz, whatever they are: the link,
  like a real line, does not know the plan's format;
- marks: the playout contract of Twilio Media Streams (protocol section 4) kept by the link itself, as no Twilio
  does it for us. A mark sits at its byte position in the queue and is echoed once the track has played every byte
  before it (when the frame holding the last of them has had its 20 ms); ``clear`` drops the queued audio and
  echoes every pending mark at once;
- ``stop``: the caller leaving (connection ``failed`` or ``closed``, or its audio track ending), or our own hang-up.

Hanging up is closing the peer connection (:meth:`WebRtcLink.close`), :data:`HANGUP_TAIL_S` after the call asks
(the last audio sent must clear the caller's jitter buffer): aiortc sends RTCP BYE for our stream and a DTLS
close_notify. An aiortc caller sees its remote track end (``recv()`` raises ``MediaStreamError``) and its
connection go to ``closed`` (all its DTLS transports closed, so aiortc closes the peer connection itself).

Loopback only: the peer has no STUN or TURN server and gathers on 127.0.0.1 only, and an offer with any other
candidate is refused, naming it (harness/webrtc/loopback.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from harness.audio.formats import StreamResampler, to_bytes
from harness.webrtc.loopback import check_candidates, gather_on_loopback_only, loopback_peer
from harness.webrtc.media import mono_samples
from reference_runtime.audio_plan import WEBRTC_AUDIO
from reference_runtime.call import LinkClosed
from reference_runtime.media_stream import Event, MarkEchoed, MediaReceived, StreamStarted, StreamStopped

log = logging.getLogger(__name__)

#: one outbound frame: 20 ms, the packet time of Opus in WebRTC
FRAME_S = 0.020
FRAME_SAMPLES = int(WEBRTC_AUDIO.sample_rate * FRAME_S)
FRAME_BYTES = FRAME_SAMPLES * WEBRTC_AUDIO.bytes_per_sample
_TIME_BASE = fractions.Fraction(1, WEBRTC_AUDIO.sample_rate)
#: silence the track keeps playing between a hang-up and closing the peer connection. A mark is echoed when its audio
#: has been *sent*; the caller's receiver still holds the last packets (aiortc's audio jitter buffer keeps 4 packets,
#: 80 ms, before it plays), and closing at once would cut the goodbye's tail (measured: 90 ms of it lost).
HANGUP_TAIL_S = 0.2


# --- signalling (sans-I/O) -----------------------------------------------------------------------------------


class BadOffer(ValueError):
    """The request is not an offer this runtime takes; the message names what is wrong."""


@dataclass(frozen=True, slots=True)
class Offer:
    """``{"sdp", "type": "offer", "pc_id"?, "restart_pc"?}``, as Pipecat's SmallWebRTC clients send it."""

    sdp: str
    pc_id: str | None = None
    restart_pc: bool = False


def parse_offer(body: Any) -> Offer:
    """The decoded JSON body of ``POST /webrtc/offer`` -> :class:`Offer`; raises :class:`BadOffer` naming the field.

    ``restart_pc`` is accepted as a field, and refused when true by the route (this runtime neither restarts nor
    renegotiates a peer connection: a caller sends a new offer, without ``pc_id``, for a new call).
    """
    if not isinstance(body, dict):
        raise BadOffer(f'the body must be a JSON object {{"sdp", "type": "offer"}}, not {type(body).__name__}')
    sdp = body.get("sdp")
    if sdp is None:
        raise BadOffer("'sdp' is missing")
    if not isinstance(sdp, str) or not sdp.strip():
        raise BadOffer(f"'sdp' must be a non-empty string (the offer's session description), got {sdp!r:.40}")
    kind = body.get("type")
    if kind != "offer":
        raise BadOffer(f"'type' must be 'offer', got {kind!r:.40}")
    pc_id = body.get("pc_id")
    if pc_id is not None and not isinstance(pc_id, str):
        raise BadOffer(f"'pc_id' must be a string or null, got {type(pc_id).__name__}")
    restart = body.get("restart_pc")
    if restart is not None and not isinstance(restart, bool):
        raise BadOffer(f"'restart_pc' must be a boolean or null, got {type(restart).__name__}")
    if not any(line.startswith("m=audio ") for line in sdp.splitlines()):
        raise BadOffer("the offer has no audio m-line ('m=audio'): a call needs the caller's audio")
    return Offer(sdp, pc_id, bool(restart))


def new_pc_id() -> str:
    """A peer connection's id, unique across processes (it is the call sid of the recording)."""
    return f"PC{uuid.uuid4().hex}"


# --- agent audio: the queue and the track ---------------------------------------------------------------------


class OutboundAudio:
    """Agent audio waiting to be played, with marks at byte positions (sans-I/O).

    Positions count bytes since the call started, so a mark pushed after some audio is reached exactly when that
    audio has been taken, however it was cut into frames.
    """

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._head = 0  # bytes of the first chunk already taken
        self._marks: deque[tuple[int, str]] = deque()  # (position, name)
        self._pushed = 0
        self._taken = 0

    @property
    def queued_bytes(self) -> int:
        return self._pushed - self._taken

    @property
    def pending_marks(self) -> tuple[str, ...]:
        return tuple(name for _, name in self._marks)

    def push_audio(self, audio: bytes) -> None:
        if audio:
            self._chunks.append(bytes(audio))
            self._pushed += len(audio)

    def push_mark(self, name: str) -> None:
        self._marks.append((self._pushed, name))

    def take(self, nbytes: int) -> tuple[bytes, tuple[str, ...]]:
        """Up to ``nbytes`` from the head of the queue, and the marks all of whose audio has now been taken."""
        parts: list[bytes] = []
        wanted = nbytes
        while wanted > 0 and self._chunks:
            chunk = self._chunks[0]
            piece = chunk[self._head : self._head + wanted]
            parts.append(piece)
            wanted -= len(piece)
            self._head += len(piece)
            if self._head >= len(chunk):
                self._chunks.popleft()
                self._head = 0
        audio = b"".join(parts)
        self._taken += len(audio)
        reached: list[str] = []
        while self._marks and self._marks[0][0] <= self._taken:
            reached.append(self._marks.popleft()[1])
        return audio, tuple(reached)

    def clear(self) -> tuple[str, ...]:
        """Drop every queued byte; returns the pending marks, echoed at once (protocol section 4)."""
        self._chunks.clear()
        self._head = 0
        self._taken = self._pushed
        dropped = self.pending_marks
        self._marks.clear()
        return dropped


class AgentTrack(MediaStreamTrack):
    """What the caller hears: :class:`OutboundAudio` as 20 ms frames of PCM 16 kHz mono, silence when it is empty.

    aiortc's sender pulls :meth:`recv` as fast as it returns and encodes each frame (resampling to Opus's 48 kHz
    itself), so the track paces itself, on an absolute grid from its first frame: a late frame is followed by the
    next one at once, lateness never accumulates, and the caller gets real time. The marks a frame completes are
    reported (``played``) at the next grid point, once that frame's 20 ms have passed.
    """

    kind = "audio"

    def __init__(
        self,
        audio: OutboundAudio,
        played: Callable[[tuple[str, ...]], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._audio = audio
        self._played = played
        self._clock = clock
        self._start: float | None = None
        self._frames = 0
        self._completed: tuple[str, ...] = ()

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = self._clock()
        wait = self._start + self._frames * FRAME_S - self._clock()
        if wait > 0:
            await asyncio.sleep(wait)
        if self._completed:
            completed, self._completed = self._completed, ()
            self._played(completed)
        audio, self._completed = self._audio.take(FRAME_BYTES)
        if len(audio) < FRAME_BYTES:
            audio += bytes(FRAME_BYTES - len(audio))
        samples = np.frombuffer(audio, dtype="<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = WEBRTC_AUDIO.sample_rate
        frame.pts = self._frames * FRAME_SAMPLES
        frame.time_base = _TIME_BASE
        self._frames += 1
        return frame


# --- caller audio ---------------------------------------------------------------------------------------------


class CallerAudio:
    """Decoded frames of the caller's track (any rate, layout and sample format aiortc's decoders give: Opus is s16
    at 48 kHz, stereo; G.711 s16 at 8 kHz, mono) -> 16-bit PCM mono at 16 kHz, the link's format."""

    def __init__(self) -> None:
        self._resampler: StreamResampler | None = None
        self._rate = 0

    def convert(self, frame: av.AudioFrame) -> bytes:
        mono = mono_samples(frame)
        if frame.sample_rate != self._rate or self._resampler is None:
            self._rate = frame.sample_rate
            self._resampler = StreamResampler(frame.sample_rate, WEBRTC_AUDIO.sample_rate)
        return to_bytes(self._resampler.process(mono), WEBRTC_AUDIO)


# --- the link -------------------------------------------------------------------------------------------------


class WebRtcLink:
    """One call's :class:`~reference_runtime.call.CallLink` over an aiortc peer connection, and its events.

    Create it, :meth:`answer` the offer, then run the call on :meth:`events`. The events end with
    ``StreamStopped``, pushed once: by the caller leaving or by :meth:`close`.
    """

    def __init__(
        self, pc_id: str, *, pc: RTCPeerConnection | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.pc_id = pc_id
        self.stream_sid = f"ST{uuid.uuid4().hex}"
        self.pc = pc if pc is not None else loopback_peer()
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._outbound = OutboundAudio()
        self.track = AgentTrack(self._outbound, self._marks_played, clock)
        self._caller_audio = CallerAudio()
        self._reader: asyncio.Task[None] | None = None
        self._started = False
        self._stopped = False
        self._closing: asyncio.Future[None] | None = None
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_connection_state)

    async def answer(self, offer_sdp: str) -> str:
        """Take the caller's offer; returns our answer, whose every candidate is on 127.0.0.1.

        The order matters: the remote description creates the audio transceiver, our track joins it (the answer
        then sends as well as receives), and gathering is narrowed to loopback before ``setLocalDescription``
        gathers (aiortc puts the candidates into the local description)."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        self.pc.addTrack(self.track)
        gather_on_loopback_only(self.pc)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        sdp = self.pc.localDescription.sdp
        check_candidates(sdp, what="the runtime's own answer")  # gather_on_loopback_only's promise, checked
        return sdp

    async def events(self) -> AsyncIterator[Event]:
        """The call's events, up to and including ``StreamStopped``."""
        while True:
            event = await self._events.get()
            yield event
            if isinstance(event, StreamStopped):
                return

    # --- CallLink -----------------------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closing is not None or self.pc.connectionState in ("closed", "failed")

    async def send_media(self, audio: bytes) -> None:
        self._check_open()
        self._outbound.push_audio(audio)

    async def send_mark(self, name: str) -> None:
        self._check_open()
        self._outbound.push_mark(name)

    async def clear(self) -> None:
        self._check_open()
        self._marks_played(self._outbound.clear())

    async def close(self, code: int, reason: str) -> None:
        """Hang up: close the peer connection (a peer connection has no close code: ``code`` is only logged).
        Also the clean-up after the caller left. Every caller returns once the one closing is done (it runs as its
        own task, so a cancelled caller does not leave it half done)."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close(code, reason))
        await asyncio.shield(self._closing)

    async def _close(self, code: int, reason: str) -> None:
        self._stop(f"hung up: {reason}")
        if self.pc.connectionState == "connected":
            log.info("webrtc %s: closing the peer connection (%d %s)", self.pc_id, code, reason)
            await asyncio.sleep(HANGUP_TAIL_S)  # the track plays on: silence pushes the tail through
        await self.pc.close()
        self.track.stop()
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    # --- what the peer connection reports -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise LinkClosed(f"the peer connection {self.pc_id} is {self.pc.connectionState}")

    def _push(self, event: Event) -> None:
        if not self._stopped:
            self._events.put_nowait(event)

    def _stop(self, why: str) -> None:
        if not self._stopped:
            log.info("webrtc %s: stream stopped (%s)", self.pc_id, why)
            self._events.put_nowait(StreamStopped())
            self._stopped = True

    def _marks_played(self, names: tuple[str, ...]) -> None:
        for name in names:
            self._push(MarkEchoed(name))

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self._reader is None:
            self._reader = asyncio.ensure_future(self._read_caller(track))

    async def _read_caller(self, track: MediaStreamTrack) -> None:
        chunk = 0
        try:
            while True:
                frame = await track.recv()
                payload = self._caller_audio.convert(frame)  # type: ignore[arg-type]
                if not payload:
                    continue  # the resampler's first frames may yield nothing
                chunk += 1
                at = frame.time
                self._push(MediaReceived(payload, chunk, int(at * 1000) if at is not None else 0, "inbound"))
        except MediaStreamError:
            self._stop("the caller's audio track ended")
        except Exception:  # a frame we cannot convert: the call cannot hear its caller, so it ends
            log.exception("webrtc %s: reading the caller's audio failed", self.pc_id)
            self._stop("the caller's audio could not be read")

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected" and not self._started:
            self._started = True
            self._push(
                StreamStarted(
                    stream_sid=self.stream_sid,
                    call_sid=self.pc_id,
                    account_sid="",
                    tracks=("inbound",),
                    custom_parameters={},
                    encoding=WEBRTC_AUDIO.encoding,
                    sample_rate=WEBRTC_AUDIO.sample_rate,
                    channels=1,
                    transport="webrtc",
                )
            )
        elif state in ("failed", "closed"):
            self._stop(f"the peer connection is {state}")
