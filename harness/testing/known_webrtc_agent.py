"""A WebRTC agent with known timing, to prove the WebRTC caller measures what a person hears.

It answers HTTP offers (loopback only) and talks over a real aiortc audio track: the greeting as soon as the call is
up, then, each time the caller's speech ends (the first quiet frame after loud ones, on the decoded track), its next
reply ``reply_delay`` after the *arrival of the last loud frame*. Its track is a paced
:class:`~harness.webrtc.media.PhraseTrack` (silence between phrases, as a real sender). After its last reply it hangs
up (closes the peer connection) once that reply has played, when ``hang_up_after_last`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import web
from aiortc import RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from harness.audio.phrase_codec import encode_phrase
from harness.webrtc.loopback import gather_on_loopback_only, loopback_peer
from harness.webrtc.media import PhraseTrack, TrackListener

_LOUD_RMS = 10 ** (-40 / 20)


@dataclass
class KnownWebRtcAgent:
    greeting: str
    replies: list[list[str]]
    reply_delay: float = 0.4
    hang_up_after_last: bool = True
    #: barge-in: this long after the caller starts speaking over the agent's audio, the agent stops (drops what it
    #: had queued: WebRTC has no ``clear``, the audio just stops coming)
    stop_after: float | None = None
    #: what the agent observed, for the test to compare with (loop time)
    speech_ends: list[float] = field(default_factory=list)
    stopped_at: list[float] = field(default_factory=list)
    replies_sent_at: list[float] = field(default_factory=list)
    hung_up: int = 0
    _peers: set[Any] = field(default_factory=set)
    _tasks: set[asyncio.Future[None]] = field(default_factory=set)

    async def offer(self, request: web.Request) -> web.Response:
        body = await request.json()
        pc = loopback_peer()
        self._peers.add(pc)
        track = PhraseTrack()
        pc.addTrack(track)

        @pc.on("track")
        def on_track(remote: Any) -> None:
            task = asyncio.ensure_future(self._converse(pc, remote, track))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="offer"))
        gather_on_loopback_only(pc)
        await pc.setLocalDescription(await pc.createAnswer())
        return web.json_response({"sdp": pc.localDescription.sdp, "type": "answer", "pc_id": body.get("pc_id")})

    @staticmethod
    def _say(track: PhraseTrack, phrases: list[str]) -> float:
        """Queue phrases (0.3 s apart); returns how long they play."""
        samples = np.concatenate([np.concatenate([encode_phrase(text, 8000), np.zeros(2400, dtype=np.float32)])
                                  for text in phrases])
        track.say(samples, 8000)
        return len(samples) / 8000

    async def _converse(self, pc: Any, remote: Any, track: PhraseTrack) -> None:
        loop = asyncio.get_running_loop()
        listener = TrackListener()
        self._say(track, [self.greeting])
        replies = list(self.replies)
        loud_since: float | None = None
        last_loud = 0.0
        try:
            while True:
                samples = listener.samples(await remote.recv())
                if not samples.size:
                    continue
                now = loop.time()
                if float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) > _LOUD_RMS:
                    if loud_since is None and self.stop_after is not None and track.speaking:
                        self._stop_later(track, now + self.stop_after)
                    loud_since = loud_since or now
                    last_loud = now
                elif loud_since is not None and now - last_loud > 0.1:
                    loud_since = None
                    self.speech_ends.append(last_loud)
                    if replies:
                        reply = replies.pop(0)
                        await asyncio.sleep(max(0.0, last_loud + self.reply_delay - loop.time()))
                        self.replies_sent_at.append(loop.time())
                        seconds = self._say(track, reply)
                        if not replies and self.hang_up_after_last:
                            await asyncio.sleep(seconds + 0.3)
                            self.hung_up += 1
                            await pc.close()
                            return
        except MediaStreamError:
            pass

    def _stop_later(self, track: PhraseTrack, at: float) -> None:
        async def stop() -> None:
            loop = asyncio.get_running_loop()
            await asyncio.sleep(max(0.0, at - loop.time()))
            self.stopped_at.append(loop.time())
            track.clear()

        task = asyncio.ensure_future(stop())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for pc in list(self._peers):
            with contextlib.suppress(Exception):
                await pc.close()


@asynccontextmanager
async def serve_known_webrtc_agent(agent: KnownWebRtcAgent) -> AsyncIterator[str]:
    """Serve ``agent`` on a free loopback port; yields its offer URL."""
    app = web.Application()
    app.router.add_post("/offer", agent.offer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/offer"  # type: ignore[union-attr]
    finally:
        await agent.close()
        await runner.cleanup()
