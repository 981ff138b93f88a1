"""The call's link over Twilio Media Streams: the thin adapter between :class:`~reference_runtime.call.Call` and
the protocol core.

The call speaks in typed operations (:class:`~reference_runtime.call.CallLink`) and listens to typed events; this
adapter turns the operations into the messages of protocol section 3 (``media``, ``mark``, ``clear``) and the text
frames Twilio sends into events (section 2), with one :class:`~reference_runtime.media_stream.MediaStreamProtocol`
per stream (outbound messages need the ``streamSid`` its ``start`` carried). The websocket itself is a
:class:`TextSocket`: the app adapts aiohttp's, a test kit may hand in its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from reference_runtime.media_stream import Event, MediaStreamProtocol


class TextSocket(Protocol):
    """The server's side of the media websocket: text frames out, close with a code."""

    @property
    def closed(self) -> bool: ...

    async def send(self, text: str) -> None:
        """Send one text frame; raises :class:`~reference_runtime.call.LinkClosed` if the socket is gone."""
        ...

    async def close(self, code: int, reason: str) -> None: ...


class TwilioMediaLink:
    """A :class:`~reference_runtime.call.CallLink` over one Twilio Media Streams websocket."""

    def __init__(self, socket: TextSocket) -> None:
        self.socket = socket
        self.protocol = MediaStreamProtocol()

    @property
    def closed(self) -> bool:
        return self.socket.closed

    async def events(self, texts: AsyncIterator[str]) -> AsyncIterator[Event]:
        """The stream's events, one per text frame received (errors as ``ProtocolError`` events, never raised)."""
        async for text in texts:
            yield self.protocol.receive(text)

    async def send_media(self, audio: bytes) -> None:
        await self.socket.send(self.protocol.media(audio))

    async def send_mark(self, name: str) -> None:
        await self.socket.send(self.protocol.mark(name))

    async def clear(self) -> None:
        await self.socket.send(self.protocol.clear())

    async def close(self, code: int, reason: str) -> None:
        await self.socket.close(code, reason)
