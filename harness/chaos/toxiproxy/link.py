"""The data plane: one :class:`Link` per accepted connection, relaying two :class:`Direction` s between sockets.

This is the thin asyncio adapter around the sans-I/O :class:`~harness.chaos.toxiproxy.chain.ToxicChain`. It is
written for speed, because every byte of a chaos run crosses it: sockets are asyncio BufferedProtocols (no coroutine per
chunk) reading into one buffer shared by a proxy's sockets, and a direction without toxics hands what it read straight
to the other socket's ``write`` with transport flow control (the sink's ``pause_writing`` pauses the source's
reading). Reading into a kept buffer matters: asyncio's plain ``Protocol`` allocates a fresh 256 KiB ``bytes`` per
read, which measured here at about three times the CPU of the whole relay for small messages. Only a direction that
has toxics feeds its chunks through the chain, with one timer per direction for the chain's next deadline.

Closing follows Toxiproxy's ``link.go``: the end of a direction (EOF or error on its source, or a toxic's END) closes
its sink once the chain has delivered what it held; closing a socket ends the other direction's source, whose chain
drains and closes the other socket. Half-close is therefore never propagated.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from random import Random
from typing import Protocol

from harness.chaos.toxiproxy.chain import ToxicChain
from harness.chaos.toxiproxy.toxics.base import END, Chunk, PassThrough, ToxicState
from harness.chaos.toxiproxy.wire import Stream, ToxicSpec
from harness.clock import Clock

# A chain holding more than this stops reading its source until it is down to the low mark (Go's latency toxic
# buffers 1024 chunks); a stalled toxic then stalls the sender instead of growing memory.
CHAIN_HIGH_WATER = 8 * 1024 * 1024
CHAIN_LOW_WATER = 4 * 1024 * 1024
# Transport write buffers: large enough to keep a fast stream moving between two loop iterations.
WRITE_HIGH_WATER = 1024 * 1024
WRITE_LOW_WATER = 256 * 1024

READ_BUFFER_SIZE = 256 * 1024
_SINK_FULL = 1
_CHAIN_FULL = 2
_LINGER_ZERO = struct.pack("ii", 1, 0)


class ReadBuffer:
    """The buffer a proxy's sockets read into. Safe to share: the loop runs one callback at a time, and what is read
    is written on (or copied into a chunk) before the callback returns. A transport that kept a view of it instead of
    copying (Python 3.12+ buffers the memoryview it was given) gets it for good: the buffer is then renewed."""

    __slots__ = ("view",)

    def __init__(self, size: int = READ_BUFFER_SIZE) -> None:
        self.view = memoryview(bytearray(size))

    def renew(self) -> None:
        self.view = memoryview(bytearray(len(self.view)))


class Counters:
    """Bytes read from the sources and written to the sinks of one proxy's direction (``/metrics``)."""

    __slots__ = ("received", "sent")

    def __init__(self) -> None:
        self.received = 0
        self.sent = 0


class LinkHost(Protocol):
    """What a link needs from its proxy."""

    clock: Clock
    rng: Random
    read_buffer: ReadBuffer

    def toxic_specs(self, stream: Stream) -> Sequence[ToxicSpec]: ...

    def counters(self, stream: Stream) -> Counters: ...

    def upstream_address(self) -> tuple[str, int] | None: ...

    def link_closed(self, link: Link) -> None: ...


def start_state(spec: ToxicSpec, now: float, rng: Random) -> ToxicState:
    """Draw the toxicity for one connection and direction (Go: ``rand.Float32() < toxicity``)."""
    if rng.random() < spec.toxicity:
        return spec.toxic.start(now, rng)
    return PassThrough()


def _discard(data: bytes | memoryview) -> None:
    """The sink of a finished direction: bytes still arriving from its source are dropped."""


class Side(asyncio.BufferedProtocol):
    """One socket of a link: ``outgoing`` is the direction it is the source of, ``incoming`` the one it sinks."""

    __slots__ = ("buffer", "incoming", "link", "lost", "outgoing", "shut", "transport")

    def __init__(self, link: Link | None, buffer: ReadBuffer) -> None:
        self.link = link
        self.buffer = buffer
        self.transport: asyncio.Transport | None = None
        self.outgoing: Direction | None = None
        self.incoming: Direction | None = None
        self.shut = False  # closed or aborted by us
        self.lost = False  # connection_lost seen

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        assert self.link is not None
        self.link.upstream_made(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer.view

    def buffer_updated(self, nbytes: int) -> None:
        if self.outgoing is not None:
            self.outgoing.on_data(self.buffer.view[:nbytes])

    def eof_received(self) -> bool:
        if self.outgoing is not None:
            self.outgoing.source_end()
        return True  # keep the socket: the other direction may still deliver held data to it

    def pause_writing(self) -> None:
        if self.incoming is not None:
            self.incoming.pause(_SINK_FULL)

    def resume_writing(self) -> None:
        if self.incoming is not None:
            self.incoming.resume(_SINK_FULL)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.link is not None:
            self.link.side_lost(self)


class ClientSide(Side):
    """The accepted socket: it creates the link and holds its reading until the upstream is connected."""

    __slots__ = ("_on_link", "host")

    def __init__(self, host: LinkHost, on_link: Callable[[Link], None]) -> None:
        super().__init__(None, host.read_buffer)
        self.host = host
        self._on_link = on_link

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.pause_reading()
        self.link = Link(self.host, self)
        self._on_link(self.link)
        self.link.dial()


class Direction:
    """Bytes from ``source`` to ``sink``: directly, or through the chain when the direction has toxics."""

    __slots__ = (
        "_loop",
        "_now",
        "_paused",
        "_rng",
        "_sink_buffered",
        "_timer",
        "_timer_at",
        "chain",
        "counters",
        "done",
        "link",
        "sink",
        "source",
        "source_ended",
        "stream",
        "write",
    )

    def __init__(self, link: Link, stream: Stream, source: Side, sink: Side, specs: Sequence[ToxicSpec]) -> None:
        self.link = link
        self.stream = stream
        self.source = source
        self.sink = sink
        host = link.host
        self.counters = host.counters(stream)
        self._now = host.clock.now
        self._rng = host.rng
        self._loop = asyncio.get_running_loop()
        assert sink.transport is not None
        self.write: Callable[[bytes | memoryview], object] = sink.transport.write
        self._sink_buffered = sink.transport.get_write_buffer_size
        self._paused = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self.source_ended = False
        self.done = False
        self.chain: ToxicChain | None = None
        if specs:
            now = self._now()
            self.chain = ToxicChain()
            for spec in specs:
                self.chain.add(spec.name, start_state(spec, now, self._rng))

    # --- bytes and ends from the source -------------------------------------------------------------------------

    def on_data(self, data: memoryview) -> None:
        """``data`` is a view of the shared read buffer, valid only during this call."""
        counters = self.counters
        counters.received += len(data)
        chain = self.chain
        if chain is None:  # the fast path: no toxics on this direction
            if self._sink_buffered():
                self.write(bytes(data))  # it can only be queued: give the transport a copy it may keep
            else:
                self.write(data)  # sent at once, unless the socket is full...
                if self._sink_buffered():
                    self.source.buffer.renew()  # ...when the transport may have kept the view itself
            counters.sent += len(data)
            return
        now = self._now()
        chain.feed(Chunk(bytes(data), now), now)
        self.pump(now)

    def source_end(self) -> None:
        """The source sent EOF, failed, or was closed: END enters the chain (or closes the sink at once)."""
        if self.source_ended:
            return
        self.source_ended = True
        if self.done:
            return
        if self.chain is None:
            self.finish()
            return
        now = self._now()
        self.chain.feed(END, now)
        self.pump(now)

    # --- the chain --------------------------------------------------------------------------------------------------

    def pump(self, now: float) -> None:
        chain = self.chain
        if chain is None:
            return
        for item in chain.advance(now):
            if item is END:
                self.finish()
                return
            assert isinstance(item, Chunk)
            self.write(item.data)
            self.counters.sent += len(item.data)
        if not chain:  # the last toxic was removed and nothing is pending: back to the fast path
            self.chain = None
            self._cancel_timer()
            self.resume(_CHAIN_FULL)
            return
        held = chain.held_bytes()
        if held > CHAIN_HIGH_WATER:
            self.pause(_CHAIN_FULL)
        elif held < CHAIN_LOW_WATER:
            self.resume(_CHAIN_FULL)
        self._schedule(chain, now)

    def _schedule(self, chain: ToxicChain, now: float) -> None:
        at = chain.deadline()
        if at is None:
            self._cancel_timer()
            return
        if self._timer is not None:
            if at == self._timer_at:
                return
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_later(max(0.0, at - now), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.pump(self._now())

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # --- toxics added, updated, removed on a live connection ----------------------------------------------------------

    def add_toxic(self, spec: ToxicSpec) -> None:
        if self.done:
            return
        now = self._now()
        if self.chain is None:
            self.chain = ToxicChain()
        self.chain.add(spec.name, start_state(spec, now, self._rng))
        self.pump(now)

    def update_toxic(self, spec: ToxicSpec) -> None:
        if self.done or self.chain is None:
            return
        now = self._now()
        self.chain.replace(spec.name, start_state(spec, now, self._rng), now)
        self.pump(now)

    def remove_toxic(self, name: str) -> None:
        if self.done or self.chain is None:
            return
        now = self._now()
        self.chain.remove(name, now)
        self.pump(now)

    # --- flow control and ending ----------------------------------------------------------------------------------

    def pause(self, reason: int) -> None:
        if not self._paused and not self.source_ended and not self.source.shut:
            assert self.source.transport is not None
            self.source.transport.pause_reading()
        self._paused |= reason

    def resume(self, reason: int) -> None:
        if not self._paused & reason:
            return
        self._paused &= ~reason
        # After EOF asyncio has already dropped the reader; resuming would re-arm it and read EOF again.
        if not self._paused and not self.source_ended and not self.source.shut:
            assert self.source.transport is not None
            self.source.transport.resume_reading()

    def finish(self) -> None:
        """END left the chain: close the sink (which ends the other direction's source)."""
        self.stop()
        self.link.close_side(self.sink)

    def stop(self) -> None:
        """Nothing more goes to the sink: drop the chain and whatever still arrives."""
        self.done = True
        self.chain = None
        self.write = _discard
        self._cancel_timer()


class Link:
    """A client connection, its upstream connection, and the two directions between them."""

    __slots__ = ("_dialing", "client", "closed", "directions", "host", "rst", "upstream")

    def __init__(self, host: LinkHost, client: ClientSide) -> None:
        self.host = host
        self.client: Side = client
        self.upstream: Side | None = None
        self.directions: dict[Stream, Direction] = {}
        self.rst = False
        self.closed = False
        self._dialing: asyncio.Task[None] | None = None

    def dial(self) -> None:
        self._dialing = asyncio.get_running_loop().create_task(self._dial())

    async def _dial(self) -> None:
        address = self.host.upstream_address()
        try:
            if address is None:
                raise OSError("invalid upstream address")
            side = Side(self, self.host.read_buffer)
            self.upstream = side
            await asyncio.get_running_loop().create_connection(lambda: side, address[0], address[1])
        except Exception:  # refused, unreachable, unresolvable: all end the same way
            # Go: the client was accepted, the upstream refused, the client is closed.
            self.upstream = None
            self.close_side(self.client)
        finally:
            self._dialing = None
            self._maybe_closed()

    def upstream_made(self, upstream: Side) -> None:
        """The upstream is connected: build both directions from the toxics as they are now, then start reading."""
        if self.closed or self.client.shut or self.client.lost:
            assert upstream.transport is not None
            upstream.shut = True
            upstream.transport.abort()
            return
        host = self.host
        client = self.client
        up_specs = host.toxic_specs(Stream.UPSTREAM)
        down_specs = host.toxic_specs(Stream.DOWNSTREAM)
        up = Direction(self, Stream.UPSTREAM, client, upstream, up_specs)
        down = Direction(self, Stream.DOWNSTREAM, upstream, client, down_specs)
        self.directions = {Stream.UPSTREAM: up, Stream.DOWNSTREAM: down}
        client.outgoing, client.incoming = up, down
        upstream.outgoing, upstream.incoming = down, up
        assert client.transport is not None and upstream.transport is not None
        for side in (client, upstream):
            assert side.transport is not None
            side.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)
        if any(spec.toxic.rst_on_close for spec in (*up_specs, *down_specs)):
            # Toxiproxy sets SO_LINGER 0 on both sockets when a reset_peer toxic is there at accept time: every
            # close of this connection is then an RST.
            self.rst = True
            for side in (client, upstream):
                assert side.transport is not None
                sock = side.transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
        client.transport.resume_reading()

    def close_side(self, side: Side) -> None:
        """Close one socket (RST when the link was accepted with a reset_peer toxic); its outgoing direction ends."""
        if side.shut or side.lost:
            if side.outgoing is not None:
                side.outgoing.source_end()
            return
        side.shut = True
        assert side.transport is not None
        if self.rst:
            side.transport.abort()
        else:
            side.transport.close()  # after what is buffered has been written
        if side.outgoing is not None:
            side.outgoing.source_end()

    def side_lost(self, side: Side) -> None:
        if side.outgoing is not None:
            side.outgoing.source_end()
        if side.incoming is not None:
            side.incoming.stop()
        self._maybe_closed()

    def _maybe_closed(self) -> None:
        upstream = self.upstream
        if self.client.lost and (upstream is None or upstream.lost) and self._dialing is None:
            self._closed()

    def abort(self) -> None:
        """The proxy was disabled or deleted: drop everything and close both sockets now."""
        if self._dialing is not None:
            self._dialing.cancel()
        for direction in self.directions.values():
            direction.stop()
        for side in (self.client, self.upstream):
            if side is not None and side.transport is not None and not side.lost:
                side.shut = True
                side.transport.abort()
        self._closed()

    def _closed(self) -> None:
        if not self.closed:
            self.closed = True
            self.host.link_closed(self)

    # --- toxics on a live connection ------------------------------------------------------------------------------

    def add_toxic(self, spec: ToxicSpec) -> None:
        direction = self.directions.get(spec.direction)
        if direction is not None:
            direction.add_toxic(spec)

    def update_toxic(self, spec: ToxicSpec) -> None:
        direction = self.directions.get(spec.direction)
        if direction is not None:
            direction.update_toxic(spec)

    def remove_toxic(self, spec: ToxicSpec) -> None:
        direction = self.directions.get(spec.direction)
        if direction is not None:
            direction.remove_toxic(spec.name)


@dataclass(frozen=True, slots=True)
class LinkFactory:
    """The protocol factory of a proxy's listener."""

    host: LinkHost
    on_link: Callable[[Link], None]

    def __call__(self) -> ClientSide:
        return ClientSide(self.host, self.on_link)
