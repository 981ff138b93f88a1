"""A Media Streams agent with known timing, to prove the harness measures what a person hears.

It listens to the caller's μ-law frames; when the caller's speech ends (the first quiet frame after loud ones) it
answers ``reply_delay`` after the *arrival of the last loud frame* with the phrases of its reply, separated by
``gap`` seconds of silence. The silence is sent either as μ-law silence bytes in the same burst as the audio
(``gap_mode="bytes"``: the playout model must place it) or by waiting in real time before sending the next phrase
(``gap_mode="wait"``: the caller's queue runs dry). Either way a person would hear exactly ``reply_delay`` of silence
before the answer and ``gap`` of silence in the middle of it.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from websockets.asyncio.server import ServerConnection, serve

from harness.audio import formats, g711
from harness.audio.phrase_codec import encode_phrase

_LOUD_RMS = 10 ** (-40 / 20)


def phrase_mulaw(text: str) -> bytes:
    return formats.to_bytes(encode_phrase(text, 8000), formats.TWILIO_MULAW_8K)


@dataclass
class KnownAgent:
    reply: list[str]
    reply_delay: float = 0.4
    gap: float = 0.7
    gap_mode: Literal["bytes", "wait"] = "bytes"
    greeting: str | None = None
    chunk_bytes: int = 320  # Pipecat-sized media messages (40 ms)
    #: barge-in: this long after the caller starts speaking over the agent's audio, send ``clear``
    clear_after: float | None = None
    #: like Pipecat, send ``clear`` at the start of every caller turn, also when nothing is playing
    clear_every_turn: bool = False
    #: what the agent observed, for the test to compare with
    speech_ends: list[float] = field(default_factory=list)
    replies_sent_at: list[float] = field(default_factory=list)
    clears_sent_at: list[float] = field(default_factory=list)
    _playout_end: float = field(default=0.0, init=False, repr=False)

    async def _send_audio(self, ws: ServerConnection, stream_sid: str, audio: bytes) -> None:
        for i in range(0, len(audio), self.chunk_bytes):
            payload = base64.b64encode(audio[i : i + self.chunk_bytes]).decode()
            await ws.send(json.dumps({"event": "media", "streamSid": stream_sid, "media": {"payload": payload}}))

    async def _answer(self, ws: ServerConnection, stream_sid: str, at: float) -> None:
        loop = asyncio.get_running_loop()
        phrases = [phrase_mulaw(text) for text in self.reply]  # encode before the clock starts mattering
        await asyncio.sleep(max(0.0, at - loop.time()))
        self.replies_sent_at.append(loop.time())
        silence = bytes([g711.MULAW_SILENCE]) * int(self.gap * 8000)
        for index, audio in enumerate(phrases):
            if index and self.gap_mode == "bytes":
                audio = silence + audio
            elif index:
                # wait until the previous phrase has played out, then the gap, in real time
                await asyncio.sleep(max(0.0, self._playout_end - loop.time()) + self.gap)
            start = max(loop.time(), self._playout_end)
            self._playout_end = start + len(audio) / 8000
            await self._send_audio(ws, stream_sid, audio)
        await ws.send(json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": "reply-end"}}))

    async def _clear(self, ws: ServerConnection, stream_sid: str, at: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, at - loop.time()))
        self.clears_sent_at.append(loop.time())
        await ws.send(json.dumps({"event": "clear", "streamSid": stream_sid}))

    async def handle(self, ws: ServerConnection) -> None:
        loop = asyncio.get_running_loop()
        stream_sid = ""
        loud_since: float | None = None
        last_loud = 0.0
        tasks: set[asyncio.Task[None]] = set()
        async for message in ws:
            data = json.loads(message)
            event = data.get("event")
            if event == "start":
                stream_sid = data["streamSid"]
                if self.greeting:
                    audio = phrase_mulaw(self.greeting)
                    self._playout_end = loop.time() + len(audio) / 8000
                    await self._send_audio(ws, stream_sid, audio)
            elif event == "media":
                samples = formats.from_bytes(base64.b64decode(data["media"]["payload"]), formats.TWILIO_MULAW_8K)
                loud = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) > _LOUD_RMS
                now = loop.time()
                if loud:
                    talking = now < self._playout_end
                    if loud_since is None and self.clear_after is not None and (talking or self.clear_every_turn):
                        for task in tuple(tasks):
                            task.cancel()
                        self._playout_end = now
                        clear = asyncio.create_task(self._clear(ws, stream_sid, now + self.clear_after))
                        tasks.add(clear)
                        clear.add_done_callback(tasks.discard)
                    loud_since = loud_since or now
                    last_loud = now
                elif loud_since is not None:
                    loud_since = None
                    self.speech_ends.append(last_loud)
                    self._playout_end = 0.0
                    task = asyncio.create_task(self._answer(ws, stream_sid, last_loud + self.reply_delay))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            elif event == "stop":
                break


@asynccontextmanager
async def serve_known_agent(agent: KnownAgent) -> AsyncIterator[str]:
    """Serve ``agent`` on a free loopback port; yields its ``ws://`` URL."""
    async with serve(agent.handle, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/media"
