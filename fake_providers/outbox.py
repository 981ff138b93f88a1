"""What a fake sends on a websocket, and when: the shared output of the sans-I/O cores and its asyncio
adapter.

A core (a Deepgram listen session, an ElevenLabs multi-stream session...) never writes to a socket. Given a
client message it returns actions: :class:`Emit` a frame at a due time on the clock's timeline,
:class:`Discard` the queued frames of a tag (a cleared TTS context), :class:`Shut` the socket. :class:`Outbox`
is the adapter: one task per socket sends frames in order, each no earlier than its due time, and closes the
socket when told.

Contract: cores emit due times in non-decreasing order per socket (they keep a ``not_before`` cursor), so a
FIFO queue is a correct schedule and no frame overtakes another.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import WSMsgType, web

from fake_providers.gate import Pacer


@dataclass(frozen=True, slots=True)
class Emit:
    """Send ``frame`` (a JSON message, or bytes for a binary frame) no earlier than ``due``."""

    due: float
    frame: dict[str, Any] | bytes
    tag: str | None = None


@dataclass(frozen=True, slots=True)
class Discard:
    """Drop every queued, not yet sent frame tagged ``tag``."""

    tag: str


@dataclass(frozen=True, slots=True)
class Shut:
    """Close the socket once every frame queued before it has been sent."""

    due: float
    code: int = 1000
    reason: str = ""


Action = Emit | Discard | Shut


class Outbox:
    """Sends a socket's actions in order at their due times (the asyncio adapter of every websocket fake)."""

    def __init__(self, ws: web.WebSocketResponse, pacer: Pacer) -> None:
        self._ws = ws
        self._pacer = pacer
        self._queue: deque[Emit | Shut] = deque()
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Discard):
                self._queue = deque(
                    a for a in self._queue if not (isinstance(a, Emit) and a.tag == action.tag)
                )
                self._changed.set()
            else:
                self._queue.append(action)
                self._idle.clear()
                self._wake.set()

    async def drained(self) -> None:
        """Wait until everything queued so far has been sent (or the socket is gone)."""
        if self._task is None or self._task.done():
            return
        idle = asyncio.create_task(self._idle.wait())
        await asyncio.wait({idle, self._task}, return_when=asyncio.FIRST_COMPLETED)
        idle.cancel()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _wait_for(self, due: float) -> None:
        """Wait until ``due``, or less if a Discard changes the queue meanwhile."""
        if due <= self._pacer.clock.now():
            return
        self._changed.clear()
        sleeper = asyncio.ensure_future(self._pacer.until(due))
        changed = asyncio.ensure_future(self._changed.wait())
        try:
            await asyncio.wait({sleeper, changed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            changed.cancel()

    async def _run(self) -> None:
        try:
            while True:
                if not self._queue:
                    self._idle.set()
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                head = self._queue[0]
                await self._wait_for(head.due)
                if not self._queue or self._queue[0] is not head:
                    continue  # discarded while we waited
                self._queue.popleft()
                if isinstance(head, Shut):
                    self._queue.clear()
                    self._idle.set()
                    await self._ws.close(code=head.code, message=head.reason.encode())
                    return
                if isinstance(head.frame, bytes):
                    await self._ws.send_bytes(head.frame)
                else:
                    await self._ws.send_str(json.dumps(head.frame))
        except (ConnectionResetError, RuntimeError):
            # The client went away mid-stream: nothing left to send to.
            self._queue.clear()
            self._idle.set()


class SocketCore(Protocol):
    """A websocket protocol's sans-I/O core: client frames in, actions out; ``closed`` once it has ended."""

    closed: bool

    def receive_text(self, text: str, now: float) -> list[Action]: ...

    def receive_binary(self, data: bytes, now: float) -> list[Action]: ...

    def idle_timeout(self, now: float) -> list[Action]: ...


async def serve_socket(
    ws: web.WebSocketResponse,
    core: SocketCore,
    *,
    pacer: Pacer,
    sockets: OpenSockets,
    idle_timeout_s: float | None = None,
    opening: list[Action] | None = None,
) -> None:
    """The asyncio adapter of every websocket fake: feeds ``core`` what the client sends, sends what it says.

    Ends when the core has ended (after sending everything it queued) or when the client goes away (then
    nothing more is sent). ``idle_timeout_s`` without a client frame calls :meth:`SocketCore.idle_timeout`.
    """
    clock = pacer.clock
    outbox = Outbox(ws, pacer)
    outbox.start()
    outbox.apply(opening or [])
    try:
        with sockets.holding(ws):
            while not core.closed:
                try:
                    message = await ws.receive(timeout=idle_timeout_s)
                except TimeoutError:
                    outbox.apply(core.idle_timeout(clock.now()))
                    break
                if message.type == WSMsgType.TEXT:
                    outbox.apply(core.receive_text(message.data, clock.now()))
                elif message.type == WSMsgType.BINARY:
                    outbox.apply(core.receive_binary(message.data, clock.now()))
                else:
                    break  # the client closed (or broke) the socket: nothing more to send
            if core.closed:
                await outbox.drained()
    finally:
        await outbox.close()
        if not ws.closed:
            await ws.close()


async def write_paced(
    request: web.Request, response: web.StreamResponse, pieces: list[bytes], dues: list[float], pacer: Pacer
) -> web.StreamResponse:
    """Stream an HTTP body in pieces, each no earlier than its due time; headers go out with the first piece
    (so a client's time to first byte includes the provider's, as with a real TTS/LLM API)."""
    if dues:
        await pacer.until(dues[0])
    try:
        await response.prepare(request)
        for due, piece in zip(dues, pieces, strict=True):
            await pacer.until(due)
            await response.write(piece)
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client hung up mid-stream (a barge-in cancels TTS like this): nothing to tell it
    return response


class OpenSockets:
    """An app's open websockets, so a shutdown closes them (1001) instead of waiting on them."""

    def __init__(self) -> None:
        self._open: set[web.WebSocketResponse] = set()

    @contextlib.contextmanager
    def holding(self, ws: web.WebSocketResponse) -> Iterator[web.WebSocketResponse]:
        self._open.add(ws)
        try:
            yield ws
        finally:
            self._open.discard(ws)

    async def close_all(self, app: web.Application) -> None:
        for ws in list(self._open):
            await ws.close(code=1001, message=b"server shutdown")
