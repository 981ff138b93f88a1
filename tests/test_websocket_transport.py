"""The websocket adapter's receive paths, fed literal bytes (RFC 6455 frames) through a recording transport.

The adapter delivers complete unfragmented data frames itself and hands everything else to websockets'
``ClientProtocol`` from a frame boundary; these tests check that both paths agree on what the server sent, however
the bytes are split, and that control frames, fragments and protocol violations still get the library's answers.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct

import pytest
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.streams import StreamReader

from harness.transport.websocket import Closed, WebSocketClient

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class RecordingTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0


def frame(opcode: int, payload: bytes, fin: bool = True, masked: bool = False) -> bytes:
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head = bytes((first, mask_bit | n))
    elif n < 65536:
        head = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, n)
    if masked:
        return head + b"\0\0\0\0" + payload  # a zero mask leaves the payload as it is
    return head + payload


def client_frames(data: bytes) -> list[Frame]:
    """Parse what the client wrote (masked frames) with websockets' own parser."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    frames = []
    while reader.buffer:
        parser = Frame.parse(reader.read_exact, mask=True)
        try:
            next(parser)
        except StopIteration as done:
            frames.append(done.value)
    return frames


class Opened:
    def __init__(self) -> None:
        self.messages: list[str | bytes] = []
        self.closed: list[Closed] = []
        self.transport = RecordingTransport()
        self.client = WebSocketClient("ws://127.0.0.1:9/media", self.messages.append, self.closed.append,
                                      max_size=1000)
        self.client.connection_made(self.transport)  # type: ignore[arg-type]
        request = self.transport.written.pop().decode()
        key = next(line.split(": ", 1)[1] for line in request.split("\r\n") if line.startswith("Sec-WebSocket-Key"))
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        self.response = (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
        ).encode()

    def handshake(self, extra: bytes = b"") -> None:
        self.client.data_received(self.response + extra)
        assert self.client.open

    def written_frames(self) -> list[Frame]:
        data = b"".join(self.transport.written)
        self.transport.written.clear()
        return client_frames(data)


def texts(n: int, size: int = 300) -> list[str]:
    return [f'{{"event":"media","n":{i},"payload":"{"A" * size}"}}' for i in range(n)]


async def test_messages_arrive_whole_however_the_bytes_are_split() -> None:
    messages = [*texts(5), "short", "x" * 130]
    stream = b"".join(frame(1, m.encode()) for m in messages) + frame(2, b"\x00\x01binary")
    for step in (1, 2, 3, 7, 64, 1000, len(stream)):
        opened = Opened()
        opened.handshake()
        for i in range(0, len(stream), step):
            opened.client.data_received(stream[i : i + step])
        assert opened.messages == [*messages, b"\x00\x01binary"], f"split every {step} bytes"


async def test_frames_in_the_same_segment_as_the_handshake_response() -> None:
    opened = Opened()
    first, second = texts(2)
    opened.handshake(frame(1, first.encode()) + frame(1, second.encode())[:5])
    opened.client.data_received(frame(1, second.encode())[5:])
    assert opened.messages == [first, second]


async def test_ping_between_data_frames_is_answered_with_a_pong() -> None:
    opened = Opened()
    opened.handshake()
    a, b = texts(2)
    opened.client.data_received(frame(1, a.encode()) + frame(9, b"are you there") + frame(1, b.encode()))
    assert opened.messages == [a, b]
    pongs = opened.written_frames()
    assert [(f.opcode, f.data) for f in pongs] == [(Opcode.PONG, b"are you there")]


async def test_fragmented_message_is_reassembled_then_the_fast_path_resumes() -> None:
    opened = Opened()
    opened.handshake()
    data = frame(1, b"hello ", fin=False) + frame(0, b"wor", fin=False) + frame(0, b"ld") + frame(1, b"after")
    for i in range(0, len(data), 4):
        opened.client.data_received(data[i : i + 4])
    assert opened.messages == ["hello world", "after"]
    opened.client.data_received(frame(1, b"fast again"))
    assert opened.messages[-1] == "fast again"
    assert opened.client._fast


async def test_close_from_the_server_is_answered_and_reported() -> None:
    opened = Opened()
    opened.handshake()
    opened.client.data_received(frame(1, b"bye") + frame(8, struct.pack("!H", 1000) + b"done") + frame(1, b"late"))
    assert opened.messages == ["bye"]  # nothing after a close frame is a message (RFC 6455 §5.5.1)
    replies = opened.written_frames()
    assert [f.opcode for f in replies] == [Opcode.CLOSE]
    assert opened.client._protocol.state is not State.OPEN
    opened.client.connection_lost(None)
    assert opened.closed == [Closed(code=1000, reason="done", by_peer=True)]


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (frame(1, b"masked by the server", masked=True), 1002),  # §5.1: a client must close on a masked frame
        (frame(1, b"y" * 2000), 1009),  # over max_size
        (bytes((0xC1, 3)) + b"rsv", 1002),  # RSV1 without an extension
        (frame(3, b"reserved opcode"), 1002),
    ],
)
async def test_protocol_violations_are_failed_by_the_library(bad: bytes, code: int) -> None:
    opened = Opened()
    opened.handshake()
    opened.client.data_received(frame(1, b"fine") + bad + frame(1, b"never"))
    assert opened.messages == ["fine"]
    closes = [f for f in opened.written_frames() if f.opcode is Opcode.CLOSE]
    assert closes and struct.unpack("!H", closes[0].data[:2])[0] == code


async def test_eof_in_the_middle_of_a_frame_ends_the_connection_without_a_message() -> None:
    opened = Opened()
    opened.handshake()
    opened.client.data_received(frame(1, b"complete") + frame(1, b"cut short")[:6])
    opened.client.eof_received()
    opened.client.connection_lost(None)
    assert opened.messages == ["complete"]
    assert opened.closed and opened.closed[0].code is None


async def test_send_text_is_a_masked_frame_the_library_parses() -> None:
    opened = Opened()
    opened.handshake()
    message = texts(1, size=200)[0]
    assert opened.client.send_text(message)
    sent = opened.written_frames()
    assert [(f.opcode, f.fin, f.data.decode()) for f in sent] == [(Opcode.TEXT, True, message)]
    await asyncio.sleep(0)
