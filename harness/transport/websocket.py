"""A thin asyncio adapter around the sans-I/O websocket client of python-websockets (``websockets.client``).

Why not ``websockets.asyncio.client.connect``: a simulated caller sends a frame every 20 ms on an absolute grid, for
hundreds of calls in one process. The high-level ``send()`` is a coroutine that may wait for the socket to drain, so one
slow server would hold up every other call in the same pacing tick. Here ``send_text`` never blocks: it frames the
message and hands the bytes to the transport at once; a peer that does not read shows up as a growing
``write_buffer_size`` (backpressure we can report), never as a late frame for somebody else.

The protocol logic (handshake, framing, masking, ping/pong, the closing handshake) stays in ``ClientProtocol``; this
module only moves bytes (websockets' ``docs/howto/sansio.rst``). Two hot paths are framed here instead, because a
caller sends and receives 50 messages a second per call: sending an unfragmented text frame, and receiving complete
unfragmented data frames while the connection is open (see :meth:`WebSocketClient._receive_open`). Everything else
(control frames, fragments, anything malformed) goes through ``ClientProtocol``, always from a frame boundary, so its
parser state stays exact.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.speedups import apply_mask
from websockets.uri import parse_uri

#: masking keys are drawn from os.urandom in blocks (RFC 6455 §5.3 wants them unpredictable; one getrandom call per
#: 1024 frames instead of one per frame)
_MASK_BLOCK = 4096


class WebSocketConnectError(ConnectionError):
    """The websocket could not be opened: refused, timed out, or the server answered the handshake with an error."""

    def __init__(self, url: str, reason: str, status: int | None = None) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason
        self.status = status


@dataclass(frozen=True, slots=True)
class Closed:
    """How the connection ended. ``code`` is None when no close frame was received (the TCP connection dropped)."""

    code: int | None
    reason: str
    by_peer: bool


MessageCallback = Callable[[str | bytes], None]
ClosedCallback = Callable[[Closed], None]


class WebSocketClient(asyncio.Protocol):
    """One client connection. Use :func:`connect`; messages arrive through ``on_message`` in the event loop."""

    def __init__(self, url: str, on_message: MessageCallback, on_closed: ClosedCallback,
                 headers: Mapping[str, str] | None = None, max_size: int | None = 16 * 2**20) -> None:
        self.url = url
        self._protocol = ClientProtocol(parse_uri(url), max_size=max_size)
        self._headers = dict(headers or {})
        self._on_message = on_message
        self._on_closed = on_closed
        self._transport: asyncio.Transport | None = None
        self._handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._fragments: list[bytes] = []
        self._fragment_opcode: Opcode | None = None
        self._closed: Closed | None = None
        self._close_sent = False
        self._masks = b""
        self._mask_at = 0
        self._max_size = max_size
        self._fast_ok = False  # handshake accepted without extensions: data frames may skip ClientProtocol's parser
        self._fast = False  # receiving on the fast path now (ClientProtocol's parser is at a frame boundary)
        self._partial = b""  # the start of an incomplete frame, while on the fast path
        self._sending = False  # ClientProtocol is OPEN (kept in step with it: read 100 times a second per call)

    # --- asyncio.Protocol -------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # duck-typed: uvloop's transports implement asyncio.Transport without subclassing it
        self._transport = transport  # type: ignore[assignment]
        request = self._protocol.connect()
        for name, value in self._headers.items():
            request.headers[name] = value
        self._protocol.send_request(request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        if self._fast:
            self._receive_open(data)
            return
        self._protocol.receive_data(data)
        self._flush()
        for event in self._protocol.events_received():
            if isinstance(event, Response):
                self._handshake_done(event)
            elif isinstance(event, Frame):
                self._frame(event)
        protocol = self._protocol
        # back on the fast path once ClientProtocol holds no partial frame and no fragmented message
        self._fast = (self._fast_ok and protocol.state is State.OPEN and not protocol.expect_continuation_frame
                      and not getattr(protocol.reader, "buffer", b"?"))

    def eof_received(self) -> bool | None:
        if self._fast:
            self._fast = False
            if self._partial:  # an incomplete frame: ClientProtocol reports it as such
                self._protocol.receive_data(self._partial)
                self._partial = b""
        self._protocol.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._sending = False
        if not self._handshake.done():
            self._handshake.set_exception(
                WebSocketConnectError(self.url, f"connection lost during the handshake ({exc or 'EOF'})")
            )
        if self._closed is None:
            code = self._protocol.close_rcvd.code if self._protocol.close_rcvd else None
            reason = self._protocol.close_rcvd.reason if self._protocol.close_rcvd else ""
            self._closed = Closed(code=code, reason=reason, by_peer=not self._close_sent)
            self._on_closed(self._closed)

    # --- public -----------------------------------------------------------------------------------------------------

    @property
    def open(self) -> bool:
        transport = self._transport
        return self._sending and transport is not None and not transport.is_closing()

    @property
    def write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() if self._transport else 0

    def send_text(self, message: str) -> bool:
        """Frame and write a text message now. Returns False (and sends nothing) when the connection is not open.

        The hot path (every 20 ms per call) frames data itself: one unfragmented, masked text frame (RFC 6455
        §5.2, §5.3), written straight to the transport. No extension is ever negotiated, so this is exactly what
        ``ClientProtocol.send_text`` would produce; control frames and the closing handshake stay with it.
        """
        transport = self._transport
        if not self._sending or transport is None or transport.is_closing():
            return False
        data = message.encode()
        length = len(data)
        if length < 126:
            header = bytes((0x81, 0x80 | length))
        elif length < 65536:
            header = struct.pack("!BBH", 0x81, 0xFE, length)
        else:
            header = struct.pack("!BBQ", 0x81, 0xFF, length)
        if self._mask_at >= len(self._masks):
            self._masks = os.urandom(_MASK_BLOCK)
            self._mask_at = 0
        mask = self._masks[self._mask_at : self._mask_at + 4]
        self._mask_at += 4
        transport.write(header + mask + apply_mask(data, mask))
        return True

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake (the server closes TCP after it); abort if it cannot be sent."""
        if self._transport is None:
            return
        if self._protocol.state is State.OPEN:
            self._close_sent = True
            self._protocol.send_close(code, reason)
            self._flush()
            # The server should close TCP promptly; don't let a stuck peer keep the socket for ever.
            asyncio.get_running_loop().call_later(2.0, self.abort)
        elif not self._transport.is_closing():
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.abort()

    # --- internals --------------------------------------------------------------------------------------------------

    def _flush(self) -> None:
        self._sending = self._protocol.state is State.OPEN
        transport = self._transport
        if transport is None:
            return
        for data in self._protocol.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                transport.write_eof()
        if self._protocol.close_expected() and self._protocol.state is State.CLOSED:
            transport.close()

    def _receive_open(self, data: bytes) -> None:
        """Receive on the fast path: complete, unfragmented text or binary frames from the server (unmasked, no RSV
        bits: RFC 6455 §5.1, §5.2, §5.6) are delivered straight from the bytes. A control frame (§5.5) is handed
        whole to ``ClientProtocol``, which answers pings and runs the closing handshake. Anything else (a fragment,
        a masked or reserved frame, a frame over ``max_size``) hands the rest of the stream, from that frame's first
        byte, to ``ClientProtocol`` for good or until it is back at a boundary."""
        buf = self._partial + data if self._partial else data
        size = len(buf)
        pos = 0
        protocol = self._protocol
        while True:
            if size - pos < 2:
                self._partial = buf[pos:]
                return
            b0 = buf[pos]
            length = buf[pos + 1]
            head = 2
            if length == 126:
                head = 4
            elif length == 127:
                head = 10
            elif length > 127:  # the MASK bit: servers must not mask (§5.1); ClientProtocol fails the connection
                break
            if size - pos < head:
                self._partial = buf[pos:]
                return
            if head > 2:
                length = int.from_bytes(buf[pos + 2 : pos + head], "big")
                if self._max_size is not None and length > self._max_size:
                    break  # ClientProtocol closes with 1009
            end = pos + head + length
            if end > size:
                self._partial = buf[pos:]
                return
            if b0 == 0x81:  # FIN, text
                self._on_message(buf[pos + head : end].decode("utf-8", errors="replace"))
            elif b0 == 0x82:  # FIN, binary
                self._on_message(buf[pos + head : end])
            elif b0 in (0x88, 0x89, 0x8A):  # FIN close, ping, pong: ClientProtocol answers them
                protocol.receive_data(buf[pos:end])
                self._flush()
                for event in protocol.events_received():
                    if isinstance(event, Frame):
                        self._frame(event)
            else:
                break
            pos = end
            if protocol.state is not State.OPEN or not self._fast:
                break  # closing (ClientProtocol decides what the remaining bytes mean), or the handler closed
        # hand over from a frame boundary
        self._fast = False
        self._partial = b""
        if pos < size:
            self.data_received(buf[pos:])

    def _handshake_done(self, response: Response) -> None:
        if self._handshake.done():
            return
        exc = self._protocol.handshake_exc
        if exc is None:
            self._fast_ok = not self._protocol.extensions
            self._sending = self._protocol.state is State.OPEN
            self._handshake.set_result(None)
            return
        status = exc.response.status_code if isinstance(exc, InvalidStatus) else response.status_code
        body = bytes(response.body or b"")[:200].decode(errors="replace").strip()
        reason = f"handshake refused with HTTP {status}" + (f": {body}" if body else "")
        self._handshake.set_exception(WebSocketConnectError(self.url, reason, status=status))

    def _frame(self, frame: Frame) -> None:
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            if frame.fin:
                self._deliver(frame.opcode, bytes(frame.data))
            else:
                self._fragment_opcode = frame.opcode
                self._fragments = [bytes(frame.data)]
        elif frame.opcode is Opcode.CONT and self._fragment_opcode is not None:
            self._fragments.append(bytes(frame.data))
            if frame.fin:
                opcode, self._fragment_opcode = self._fragment_opcode, None
                self._deliver(opcode, b"".join(self._fragments))
                self._fragments = []
        # Ping/pong/close are answered by ClientProtocol itself (the reply is already in data_to_send).

    def _deliver(self, opcode: Opcode, data: bytes) -> None:
        if opcode is Opcode.TEXT:
            self._on_message(data.decode("utf-8", errors="replace"))
        else:
            self._on_message(data)


async def connect(url: str, on_message: MessageCallback, on_closed: ClosedCallback, *, timeout: float = 10.0,
                  headers: Mapping[str, str] | None = None) -> WebSocketClient:
    """Open a websocket (``ws://`` only: the harness talks to loopback) and complete the handshake."""
    uri = parse_uri(url)
    if uri.secure:
        raise WebSocketConnectError(url, "wss:// is not supported by the simulated caller (loopback targets use ws://)")
    loop = asyncio.get_running_loop()
    client: WebSocketClient | None = None

    def factory() -> WebSocketClient:
        nonlocal client
        client = WebSocketClient(url, on_message, on_closed, headers=headers)
        return client

    try:
        async with asyncio.timeout(timeout):
            await loop.create_connection(factory, uri.host, uri.port)
            assert client is not None
            await client._handshake
    except TimeoutError:
        if client is not None:
            client.abort()
        raise WebSocketConnectError(url, f"no handshake within {timeout:g} s") from None
    except OSError as exc:
        if isinstance(exc, WebSocketConnectError):
            raise
        raise WebSocketConnectError(url, f"cannot connect: {exc.strerror or exc}") from exc
    return client
