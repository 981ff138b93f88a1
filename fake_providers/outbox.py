"""What a fake sends on a websocket, and when: the shared output of the sans-I/O cores and its asyncio
adapter.

A core (a Deepgram listen session, an ElevenLabs multi-stream session...) never writes to a socket. Given a
client message it returns actions: :class:`Emit` a frame at a due time on the clock's timeline,
:class:`Discard` the queued frames of a tag (a cleared TTS context), :class:`Shut` the socket. :class:`Outbox`
is the adapter: one task per socket sends frames in order, each no earlier than its due time, and closes the
socket when told.

Contract: cores emit due times in non-decreasing order per socket (they keep a ``not_before`` cursor), so a
FIFO queue is a correct schedule and no frame overtakes another.

The adapters here are also where the stream faults happen (:mod:`fake_providers.disruption`): before each
chunk they ask the request's :class:`~fake_providers.disruption.StreamShaper` for its fate and hold, garble or
cut as it says. The sans-I/O cores never know.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import WSMsgType, web

from fake_providers.disruption import Cut, StreamShaper, disruption_of, garble

if TYPE_CHECKING:
    from fake_providers.gate import Pacer

#: how often a held stream checks that its client is still there (a stall "until the client gives up")
_HOLD_POLL_S = 0.2


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

    def __init__(
        self,
        ws: web.WebSocketResponse,
        pacer: Pacer,
        *,
        shaper: StreamShaper | None = None,
        request: web.Request | None = None,
    ) -> None:
        """``shaper``: the stream faults of this socket; ``request``: its HTTP request (to drop the connection
        for a ``truncate`` without close code, and to notice a client gone during a stall)."""
        self._ws = ws
        self._pacer = pacer
        self._shaper = shaper
        self._request = request
        #: how much later than due frames go out: the sum of the holds (first-byte delay, stalls) so far
        self._shift = 0.0
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

    async def _wait_for_work(self, cut_at: float) -> None:
        """Wait for a frame to be queued, or until a time-triggered cut is due."""
        self._wake.clear()
        if math.isinf(cut_at):
            await self._wake.wait()
            return
        woken = asyncio.ensure_future(self._wake.wait())
        sleeper = asyncio.ensure_future(self._pacer.until(cut_at))
        try:
            await asyncio.wait({woken, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            sleeper.cancel()

    def _cut_at(self) -> float:
        deadline = self._shaper.cut_deadline() if self._shaper is not None else None
        return deadline[0] if deadline is not None else math.inf

    async def _run(self) -> None:
        clock = self._pacer.clock
        try:
            while True:
                pending = self._shaper.pending_cut(clock.now()) if self._shaper is not None else None
                if pending is not None:
                    await self._cut(pending)
                    return
                if not self._queue:
                    self._idle.set()
                    await self._wait_for_work(self._cut_at())
                    continue
                head = self._queue[0]
                cut_at = self._cut_at()
                await self._wait_for(min(head.due + self._shift, cut_at))
                if not self._queue or self._queue[0] is not head:
                    continue  # discarded while we waited
                if cut_at < head.due + self._shift:
                    continue  # woken for a timed cut, before this frame was due: the loop's top decides
                self._queue.popleft()
                if isinstance(head, Shut):
                    self._queue.clear()
                    self._idle.set()
                    await self._ws.close(code=head.code, message=head.reason.encode())
                    return
                frame: dict[str, Any] | bytes | str = head.frame
                if self._shaper is not None:
                    fate = self._shaper.next(clock.now())
                    if fate.cut is not None:
                        await self._cut(fate.cut)
                        return
                    if fate.hold_s:
                        held = await hold(fate.hold_s, self._request, self._pacer, until=self._cut_at())
                        self._shift += held
                        if (pending := self._shaper.pending_cut(clock.now())) is not None:
                            await self._cut(pending)  # a timed cut falls in the stall: it wins
                            return
                    if fate.garble:
                        if isinstance(frame, bytes):
                            frame = garble(frame, None, self._shaper.rng)
                        else:
                            frame = garble(json.dumps(frame), None, self._shaper.rng)
                if isinstance(frame, bytes):
                    await self._ws.send_bytes(frame)
                else:
                    await self._ws.send_str(frame if isinstance(frame, str) else json.dumps(frame))
        except (ConnectionResetError, RuntimeError):
            # The client went away mid-stream: nothing left to send to.
            self._queue.clear()
            self._idle.set()

    async def _cut(self, cut: Cut) -> None:
        """End the socket abnormally (a ``truncate`` fault): a close frame with the fault's code, or none."""
        self._queue.clear()
        self._idle.set()
        if cut.close_code is not None:
            await self._ws.close(code=cut.close_code, message=b"stream truncated")
        else:
            drop_connection(self._request)


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
    request: web.Request | None = None,
) -> None:
    """The asyncio adapter of every websocket fake: feeds ``core`` what the client sends, sends what it says.

    Ends when the core has ended (after sending everything it queued) or when the client goes away (then
    nothing more is sent). ``idle_timeout_s`` without a client frame calls :meth:`SocketCore.idle_timeout`.
    ``request`` (the handshake) brings the stream faults the gate drew for the socket.
    """
    clock = pacer.clock
    shaper = None
    if request is not None and (disruption := disruption_of(request)).shapes_stream:
        shaper = disruption.start(clock.now())
    outbox = Outbox(ws, pacer, shaper=shaper, request=request)
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
            with contextlib.suppress(ConnectionError):
                await ws.close()


async def write_paced(
    request: web.Request, response: web.StreamResponse, pieces: list[bytes], dues: list[float], pacer: Pacer
) -> web.StreamResponse:
    """Stream an HTTP body in pieces, each no earlier than its due time; headers go out with the first piece
    (so a client's time to first byte includes the provider's, as with a real TTS/LLM API).

    The request's stream faults apply piece by piece: a hold delays the piece and every later one, a garbled
    piece is replaced, a cut closes the connection mid-body (no terminating chunk: the client's body is
    incomplete)."""
    clock = pacer.clock
    disruption = disruption_of(request)
    shaper = disruption.start(clock.now()) if disruption.shapes_stream else None
    deadline = shaper.cut_deadline() if shaper is not None else None
    shift = 0.0
    try:
        for due, piece in zip(dues, pieces, strict=True):
            if deadline is not None and deadline[0] <= due + shift:
                await pacer.until(deadline[0])
                await _cut_body(request, response)
                return response
            await pacer.until(due + shift)
            if shaper is not None:
                fate = shaper.next(clock.now())
                if fate.cut is not None:
                    await _cut_body(request, response)
                    return response
                if fate.hold_s:
                    shift += await hold(fate.hold_s, request, pacer, until=deadline[0] if deadline else math.inf)
                    if shaper.pending_cut(clock.now()) is not None:
                        await _cut_body(request, response)  # a timed cut falls in the stall: it wins
                        return response
                if fate.garble:
                    piece = garble(piece, response.content_type, shaper.rng)
            if not response.prepared:
                await response.prepare(request)
            await response.write(piece)
            if shaper is not None and shaper.pending_cut(clock.now()) is not None:
                await _cut_body(request, response)
                return response
        if not response.prepared:
            await response.prepare(request)
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client hung up mid-stream (a barge-in cancels TTS like this): nothing to tell it
    return response


async def send_whole(
    request: web.Request, response: web.Response, shaper: StreamShaper, pacer: Pacer
) -> web.StreamResponse:
    """A response sent in one piece (a non-streamed completion, a CRM reply) under the request's stream
    faults: its body is the stream's only chunk. A cut sends the headers (with the full Content-Length) and
    half the body, then closes the connection."""
    body = response.body if isinstance(response.body, bytes) else None
    fate = shaper.next(pacer.clock.now())
    if fate.cut is not None and body is not None:
        partial = web.StreamResponse(status=response.status, reason=response.reason)
        for name, value in response.headers.items():
            if name.lower() != "content-length":
                partial.headers[name] = value
        partial.content_length = len(body)
        try:
            await partial.prepare(request)
            await partial.write(body[: len(body) // 2])
        except ConnectionResetError:
            pass
        drop_connection(request)
        return partial
    if fate.hold_s:
        await hold(fate.hold_s, request, pacer)
    if fate.garble and body is not None:
        response.body = garble(body, response.content_type, shaper.rng)
    return response


async def _cut_body(request: web.Request, response: web.StreamResponse) -> None:
    if not response.prepared:
        await response.prepare(request)  # the headers, then nothing: an empty, unterminated body
    drop_connection(request)


def drop_connection(request: web.Request | None) -> None:
    """Close the connection under a response: what is already written is flushed, then the peer sees EOF
    (a websocket without a close frame: 1006; an HTTP body without its end)."""
    transport = request.transport if request is not None else None
    if transport is not None:
        transport.close()


def _client_gone(request: web.Request | None) -> bool:
    transport = request.transport if request is not None else None
    return transport is None or transport.is_closing()


async def hold(
    seconds: float, request: web.Request | None, pacer: Pacer, *, until: float = math.inf
) -> float:
    """Send nothing for ``seconds`` (``inf``: until the client gives up), ending early if the client goes or
    at ``until`` (a timed cut); returns how long it held.

    Polled, because aiohttp does not cancel a handler whose client disconnected: a stall that outlived its
    client would otherwise hold a task for ever."""
    clock = pacer.clock
    started = clock.now()
    deadline = min(started + seconds, until)
    while not (request is not None and _client_gone(request)):
        remaining = deadline - clock.now()
        if remaining <= 0:
            break
        await pacer.until(clock.now() + min(remaining, _HOLD_POLL_S))
    return clock.now() - started


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
