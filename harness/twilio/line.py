"""A call placed the way Twilio places it: the voice webhook (its TwiML names the stream), then a Media Streams
websocket, spoken exactly as Twilio speaks it (``shared/protocols/twilio-media-streams.md``, sections 2-4, through
:class:`~harness.twilio.media_streams.CallerStream`)."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

import aiohttp

from harness.line import LineEvents, LineRefused
from harness.records import Outcome
from harness.transport.websocket import WebSocketClient, WebSocketConnectError, connect
from harness.twilio.media_streams import (
    AgentClear,
    AgentMark,
    AgentMedia,
    CallerStream,
    ProtocolError,
    UnexpectedMessage,
)
from harness.twilio.webhook import ConnectStream, Hangup, Reject, TwimlError, build_voice_webhook, parse_twiml


class TwilioLine:
    transport = "twilio"
    has_clear = True
    plays_out_on_close = False
    platform_call_sid = None  # the platform sees the CallSid the caller made up, as Twilio's

    def __init__(self, http: aiohttp.ClientSession, *, account_sid: str, call_sid: str, stream_sid: str,
                 webhook_url: str | None, auth_token: str, websocket_url: str | None, parameters: dict[str, str],
                 from_number: str, to_number: str, media_via: str | None, now: Callable[[], float]) -> None:
        self._http = http
        self._account_sid = account_sid
        self._call_sid = call_sid
        self._stream_sid = stream_sid
        self._webhook_url = webhook_url
        self._auth_token = auth_token
        self._websocket_url = websocket_url
        self._parameters = parameters
        self._from = from_number
        self._to = to_number
        self._media_via = media_via
        self._now = now
        self.stream: CallerStream | None = None
        self.ws: WebSocketClient | None = None
        self._events: LineEvents | None = None
        self._stream_start = 0.0

    # --- connecting -----------------------------------------------------------------------------------------------

    async def connect(self, events: LineEvents, timeout: float) -> str:
        self._events = events
        url = self._websocket_url
        parameters = dict(self._parameters)
        if self._webhook_url is not None:
            instruction = await self._post_webhook(timeout)
            url = instruction.url
            parameters.update(instruction.parameters)
        assert url is not None
        if self._media_via:
            url = urlsplit(url)._replace(netloc=self._media_via).geturl()
        self.stream = CallerStream(self._account_sid, self._call_sid, self._stream_sid, parameters)
        try:
            self.ws = await connect(url, self._on_message, events.on_closed, timeout=timeout)
        except WebSocketConnectError as exc:
            if exc.status in (429, 503):
                raise LineRefused(Outcome.REJECTED, f"media stream refused: {exc.reason}") from None
            raise LineRefused(Outcome.FAILED_TO_CONNECT, f"media stream: {exc}") from None
        self.ws.send_text(self.stream.connected())
        self.ws.send_text(self.stream.start())
        return url

    async def _post_webhook(self, timeout: float) -> ConnectStream:
        url = self._webhook_url
        assert url is not None
        request = build_voice_webhook(url, self._auth_token, call_sid=self._call_sid, account_sid=self._account_sid,
                                      from_number=self._from, to_number=self._to)
        try:
            async with self._http.post(request.url, data=request.body, headers=request.headers,
                                       timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                text = await response.text()
                if response.status != 200:
                    outcome = Outcome.REJECTED if response.status in (429, 503) else Outcome.FAILED_TO_CONNECT
                    raise LineRefused(outcome, f"voice webhook answered HTTP {response.status}: {text[:200].strip()}")
        except aiohttp.ClientConnectorError as exc:
            why = exc.os_error.strerror or str(exc.os_error)
            raise LineRefused(Outcome.FAILED_TO_CONNECT, f"voice webhook {url}: cannot connect ({why})") from None
        except TimeoutError:
            raise LineRefused(Outcome.FAILED_TO_CONNECT,
                              f"voice webhook {url}: no answer within {timeout:g} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise LineRefused(Outcome.FAILED_TO_CONNECT, f"voice webhook {url}: {type(exc).__name__}: {exc}") \
                from None
        try:
            instruction = parse_twiml(text)
        except TwimlError as exc:
            raise LineRefused(Outcome.FAILED_TO_CONNECT, f"voice webhook returned unusable TwiML: {exc}") from None
        if isinstance(instruction, Reject):
            raise LineRefused(Outcome.REJECTED, f"<Reject reason={instruction.reason!r}>")
        if isinstance(instruction, Hangup):
            raise LineRefused(Outcome.REJECTED, "<Hangup> before any stream")
        return instruction

    # --- media ----------------------------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.ws is not None and self.ws.open and self.stream is not None

    def start_media(self, first_frame_at: float) -> None:
        # media timestamps count from the stream start; the first paced frame is stamped 20 ms (section 2)
        self._stream_start = first_frame_at - 0.020

    def send_frame(self, payload_b64: str, scheduled: float) -> None:
        assert self.ws is not None and self.stream is not None
        self.ws.send_text(self.stream.media_b64(payload_b64, round((scheduled - self._stream_start) * 1000)))

    def send_dtmf(self, digit: str) -> None:
        if self.ws is not None and self.stream is not None:
            self.ws.send_text(self.stream.dtmf(digit))

    def echo_mark(self, name: str) -> None:
        if self.ws is not None and self.stream is not None:
            self.ws.send_text(self.stream.mark(name))

    def _on_message(self, message: str | bytes) -> None:
        stream, events = self.stream, self._events
        if stream is None or events is None:
            return
        now = self._now()
        if isinstance(message, str):
            payload = stream.agent_audio(message)  # the fast path: a media message
            if payload is not None:
                events.on_agent_audio(payload, now)
                return
        for event in stream.receive(message):
            if isinstance(event, AgentMedia):
                events.on_agent_audio(event.payload, now)
            elif isinstance(event, AgentMark):
                events.on_agent_mark(event.name, now)
            elif isinstance(event, AgentClear):
                events.on_agent_clear(now)
            elif isinstance(event, ProtocolError):
                events.on_protocol_problem(f"protocol error: {event.reason}")
            elif isinstance(event, UnexpectedMessage):
                events.on_protocol_problem(f"unexpected message event {event.event!r}", unexpected_message=True)

    # --- hanging up -----------------------------------------------------------------------------------------------

    def hang_up(self) -> None:
        """``stop`` then a normal close, as Twilio does when the caller puts the phone down (section 2)."""
        ws = self.ws
        if ws is not None and ws.open and self.stream is not None and self.stream.is_open:
            ws.send_text(self.stream.stop())
            ws.close(1000, "call ended")
        elif ws is not None:
            ws.abort()

    def media_stats(self) -> dict[str, float]:
        return {}  # TCP delivers everything or nothing: there is no loss to conceal

    async def wait_closed(self) -> None:
        pass  # the websocket's close handshake finishes on its own
