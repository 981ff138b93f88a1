"""One simulated caller: dials, talks through a script, and measures what a person on the phone hears.

The call is an asyncio object driven by two things: the shared :class:`~harness.pacer.Pacer`, which ticks it on its
20 ms grid (send one frame, let the playout model play, check the turn), and the agent's audio, which lands in the
playout queue the moment it arrives. The transport is a :class:`~harness.line.Line`: Twilio Media Streams
(:mod:`harness.twilio.line`) or WebRTC (:mod:`harness.webrtc.line`); everything measured here is the same for
both. The script itself is a coroutine that waits on conditions the ticks resolve ("the greeting is over", "my
utterance has been sent"). Nothing here knows what drives the process: ``voicechaos run`` and Locust users run the
same :class:`Call`.

Where each number comes from (the measurement contract):

- *end of caller speech*: the clock read right after the last speech frame was handed to the line (written to the
  socket, or to the WebRTC track the sender is waiting on): the agent cannot have heard the end earlier, and a late
  harness does not make the agent look slow;
- *first audible agent audio*, *silence gaps*: the playout timeline (:mod:`harness.playout`), located to 5 ms by
  :class:`~harness.hearing.Ear`; gaps are silences between audible stretches of one agent turn (trailing silence
  is not a gap);
- *barge-in reaction*: from the first frame of the interrupting utterance to a ``clear`` that cut audible audio;
  a ``clear`` while nothing plays is counted as stray, never as a reaction. A line without ``clear`` (WebRTC: the
  agent just stops sending) measures to the end of the agent's last audible audio, once it has fallen silent;
- *send lateness*: every frame's write time minus its grid time, per call and per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from random import Random
from typing import Any

import aiohttp

from harness.audio.phrase_codec import normalize_text
from harness.clock import Clock
from harness.hearing import MERGE_S, Audible, Ear, Heard
from harness.line import Line, LineRefused
from harness.pacer import Pacer
from harness.playout import MarkReached, PlayedAudio, Playout
from harness.records import CallRecord, Outcome, TurnRecord
from harness.scenario import Dtmf, ExpectHangup, HangUp, Limits, Pause, Say, Step, WaitForGreeting
from harness.transport.websocket import Closed
from harness.twilio.line import TwilioLine
from harness.twilio.media_streams import new_account_sid, new_call_sid, new_stream_sid
from harness.voice import SILENCE_FRAME_B64, Voice
from harness.webrtc.leg import CallerLeg
from harness.webrtc.line import WebRtcLine

#: websocket close code a platform uses for "at capacity, try again later" (RFC 6455 §7.4.1, 1013)
TRY_AGAIN_LATER = 1013
#: keep only a few examples of each protocol error per call: the counts are what matter
_EXAMPLES = 5

EventSink = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class Dial:
    """Where a call goes: a voice webhook (followed by the TwiML's stream) or a Media Streams URL directly; or, for
    ``transport="webrtc"``, an HTTP offer/answer URL (``offer_url``)."""

    transport: str = "twilio"
    #: WebRTC signalling: where the caller POSTs its SDP offer (the shape of Pipecat's SmallWebRTC transport)
    offer_url: str | None = None

    webhook_url: str | None = None
    auth_token: str = ""
    websocket_url: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    from_number: str = "+15005550006"
    to_number: str = "+15005550001"
    #: host:port to open the media stream at instead of the URL's own (the caller leg's proxy): the webhook and
    #: the stream's path are unchanged, as when a network sits between the phone network's edge and the platform
    media_via: str | None = None
    #: WebRTC only: the caller's media goes through an impairment relay of the caller's leg (harness.webrtc.leg)
    caller_leg: CallerLeg | None = None
    #: the scenario's caller group this call belongs to (reports compare groups side by side)
    group: str = ""


@dataclass
class CallEnvironment:
    """What every call in a process shares: passed explicitly from the composition root (no globals)."""

    clock: Clock
    pacer: Pacer
    voice: Voice
    http: aiohttp.ClientSession
    rng: Random
    emit: EventSink
    account_sid: str = ""

    def __post_init__(self) -> None:
        if not self.account_sid:
            self.account_sid = new_account_sid(self.rng)


class CallEnded(Exception):
    """The websocket closed while the script was waiting for something."""


class _Stop(Exception):
    """The call's outcome is decided (e.g. the agent never answered): the rest of the script is not run."""


class Call:
    def __init__(self, env: CallEnvironment, call_id: int, script: list[Step], limits: Limits, dial: Dial) -> None:
        self.env = env
        self.script = script
        self.limits = limits
        self.dial = dial
        self.clock = env.clock
        rng = env.rng
        self.record = CallRecord(call_id=call_id, call_sid=new_call_sid(rng), stream_sid=new_stream_sid(rng),
                                 transport=dial.transport, group=dial.group or dial.transport)
        self.line: Line = self._line_for(dial)
        self.playout = Playout()
        self.ear = Ear()
        self._loop = asyncio.get_running_loop()
        self._start_sent_at = 0.0
        self._step_index = 0
        #: why the run cancelled this call (set by whoever cancels it)
        self.stop_reason = ""
        self._speech: deque[str] = deque()
        self._speech_started: asyncio.Future[float] | None = None
        self._speech_sent: asyncio.Future[float] | None = None
        self._turn: TurnRecord | None = None
        self._turn_done: asyncio.Future[TurnRecord] | None = None
        self._first_audio: asyncio.Future[float] | None = None
        self._reply_timeout = 0.0
        self._barge_in_at: float | None = None  # when the interrupting utterance started
        self._pending_reaction_ms: float | None = None  # a reaction seen before the barge-in turn opened
        self._closed: asyncio.Future[Closed] = self._loop.create_future()
        self._hanging_up = False
        self._awaiting_silence = False  # a barge-in on a line without clear: until the agent's audio stops
        self._last_audible_end = 0.0

    def _line_for(self, dial: Dial) -> Line:
        env, record = self.env, self.record
        if dial.transport == "webrtc":
            assert dial.offer_url is not None
            return WebRtcLine(env.http, offer_url=dial.offer_url, call_sid=record.call_sid, now=self.clock.now,
                              caller_leg=dial.caller_leg)
        return TwilioLine(env.http, account_sid=env.account_sid, call_sid=record.call_sid,
                          stream_sid=record.stream_sid, webhook_url=dial.webhook_url, auth_token=dial.auth_token,
                          websocket_url=dial.websocket_url, parameters=dial.parameters,
                          from_number=dial.from_number, to_number=dial.to_number, media_via=dial.media_via,
                          now=self.clock.now)

    # --- the script ---------------------------------------------------------------------------------------------------

    async def run(self) -> CallRecord:
        record = self.record
        record.started_at = time.time()
        self.env.emit("call_started", {"call_id": record.call_id, "call_sid": record.call_sid})
        started = self.clock.now()
        try:
            async with asyncio.timeout(self.limits.call_timeout):
                if await self._connect():
                    await self._run_script()
        except TimeoutError:
            self._end(Outcome.TIMED_OUT, f"the call exceeded call_timeout ({self.limits.call_timeout:g} s)")
        except _Stop:
            pass
        except CallEnded:
            if self._only_hangup_left():
                self._close_turn("ok")
                self._end(Outcome.COMPLETED, "the agent hung up")
            else:
                self._end_on_close()
        except asyncio.CancelledError:
            self._end(Outcome.TIMED_OUT, f"stopped before it finished: {self.stop_reason or 'cancelled'}")
            self._shutdown()
            self._finish(started)
            raise
        except Exception as exc:  # a harness bug: report it as ours, never as the agent's fault
            self._end(Outcome.ERROR, f"harness error: {type(exc).__name__}: {exc}")
        ended = self.clock.now()
        self._shutdown()
        with contextlib.suppress(TimeoutError):  # the line's own figures are read as it closes
            await asyncio.wait_for(self.line.wait_closed(), timeout=5.0)
        self._finish(started, ended)
        return record

    def _only_hangup_left(self) -> bool:
        """The agent hung up during the last turn and the script expected it to: that is a completed call."""
        rest = self.script[self._step_index :]
        return bool(rest) and all(isinstance(step, ExpectHangup) for step in rest)

    def _finish(self, started: float, ended: float | None = None) -> None:
        record = self.record
        record.duration_s = round((ended if ended is not None else self.clock.now()) - started, 3)
        record.discarded_audio_bytes = self.playout.discarded_bytes
        for key, value in self.line.media_stats().items():
            setattr(record, key, value)
        if self._turn is not None:
            self._close_turn("cut_off")
        self.env.emit("call_ended", record.to_json())

    async def _run_script(self) -> None:
        for index, step in enumerate(self.script):
            self._step_index = index
            if isinstance(step, WaitForGreeting):
                self._open_turn(index, "greeting", listen_from=self._start_sent_at, expected=step.expect,
                                reply_timeout=step.timeout)
                await self._await_first_audio()
            elif isinstance(step, Say):
                await self._say(index, step)
            elif isinstance(step, Dtmf):
                await self._finish_turn()
                for digit in step.digits:
                    self.line.send_dtmf(digit)
                    self.record.dtmf_sent += digit
                    await self._wait_or_close(asyncio.sleep(step.interval))
            elif isinstance(step, Pause):
                await self._finish_turn()
                await self._wait_or_close(asyncio.sleep(step.seconds))
            elif isinstance(step, HangUp):
                await self._finish_turn()
                self._end(Outcome.COMPLETED, "the caller hung up at the end of the script")
                return
            elif isinstance(step, ExpectHangup):
                await self._finish_turn()
                try:
                    async with asyncio.timeout(step.timeout):
                        await asyncio.shield(self._closed)
                except TimeoutError:
                    self._end(Outcome.TIMED_OUT, f"the agent did not hang up within {step.timeout:g} s")
                    return
                self._end(Outcome.COMPLETED, "the agent hung up")
                return
        await self._finish_turn()
        self._end(Outcome.COMPLETED, "the script ended; the caller hung up")

    async def _say(self, index: int, step: Say) -> None:
        barge_in = step.barge_in_after is not None and self._turn is not None
        if barge_in:
            assert step.barge_in_after is not None
            first = await self._await_first_audio()
            delay = first + step.barge_in_after - self.clock.now()
            if delay > 0:
                await self._wait_or_close(asyncio.sleep(delay))
            self._check_stop()
        else:
            await self._finish_turn()
            await self._wait_or_close(asyncio.sleep(step.think_time))
        voice = self.env.voice
        frames = voice.phrase_frames(step.text) if step.text is not None else voice.wav_frames(step.wav or "")
        self._speech_started = self._loop.create_future()
        self._speech_sent = self._loop.create_future()
        self._speech.extend(frames)
        speech_start = await self._wait_or_close(self._speech_started)
        if barge_in:
            self._barge_in_at = speech_start
            self._pending_reaction_ms = None
            # without clear, the reaction is the agent's audio stopping: measured only if it was playing
            self._awaiting_silence = not self.line.has_clear and (
                self.ear.open_stretch is not None or self.playout.queued_bytes > 0)
            self._close_turn("interrupted")
        speech_end = await self._wait_or_close(self._speech_sent)
        reaction = self._pending_reaction_ms
        turn = self._open_turn(index, "reply", listen_from=speech_end, expected=step.expect,
                               reply_timeout=self.limits.reply_timeout)
        turn.caller_text = step.text if step.text is not None else f"wav:{step.wav}"
        turn.caller_speech_start = speech_start
        turn.barge_in = barge_in
        if barge_in:
            turn.barge_in_reaction_ms = reaction

    # --- turns --------------------------------------------------------------------------------------------------------

    def _open_turn(self, step: int, kind: str, *, listen_from: float, expected: list[str],
                   reply_timeout: float) -> TurnRecord:
        if self._turn is not None:
            self._close_turn("interrupted")
        turn = TurnRecord(index=len(self.record.turns), step=step, kind=kind, listen_from=listen_from,
                          expected=[normalize_text(e) for e in expected])
        self.record.turns.append(turn)
        self._turn = turn
        self._turn_done = self._loop.create_future()
        self._first_audio = self._loop.create_future()
        self._reply_timeout = reply_timeout
        # audio already audible when the caller stopped speaking belongs to the previous turn; anything
        # audible from now on is this turn's
        return turn

    def _first_audio_future(self) -> asyncio.Future[float]:
        assert self._first_audio is not None
        return self._first_audio

    async def _await_first_audio(self) -> float:
        """Wait for the open turn's first audible audio; a turn that gets none ends the call (timed out)."""
        try:
            return await self._wait_or_close(self._first_audio_future())
        except TimeoutError:
            self._check_stop()
            raise

    async def _finish_turn(self) -> None:
        """Wait until the open agent turn is over (by content and silence, see :meth:`_check_turn`)."""
        if self._turn is not None and self._turn_done is not None:
            await self._wait_or_close(asyncio.shield(self._turn_done))
        self._check_stop()

    def _check_stop(self) -> None:
        if self.record.outcome is not None:
            raise _Stop

    def _check_turn(self, now: float) -> None:
        """Called every tick: is the open agent turn over?"""
        turn = self._turn
        if turn is None:
            return
        limits = self.limits
        if turn.first_audio_at is None:
            if now - turn.listen_from >= self._reply_timeout:
                self._close_turn("no_response")
            return
        open_stretch = self.ear.open_stretch
        last_end = open_stretch.end if open_stretch is not None else (turn.last_audio_end or turn.first_audio_at)
        silence = now - last_end
        if turn.expected and self._expected_heard(turn) and silence >= limits.settle:
            self._close_turn("ok")
        elif silence >= limits.end_of_turn_silence:
            self._close_turn("ok")

    @staticmethod
    def _expected_heard(turn: TurnRecord) -> bool:
        """Every expected phrase was heard, in order (a runtime may split a reply into sentences differently)."""
        heard = " ".join(turn.heard)
        position = 0
        for phrase in turn.expected:
            found = heard.find(phrase, position)
            if found < 0:
                return False
            position = found + len(phrase)
        return True

    def _close_turn(self, status: str) -> None:
        turn = self._turn
        if turn is None:
            return
        self._turn = None
        for stretch in self.ear.close_before(float("inf")) if status != "ok" else []:
            self._on_audible(stretch, turn)
        if status in ("ok", "cut_off", "no_response"):
            if turn.first_audio_at is None:
                status = "no_response"
                self._end(Outcome.TIMED_OUT, f"no agent audio within {self._reply_timeout:g} s "
                                             f"(turn {turn.index}, script step {turn.step})")
            elif turn.undecodable:
                status = "garbled"
            elif turn.expected and not self._expected_heard(turn):
                status = "mismatch" if status == "ok" else "cut_off"
        turn.status = status
        turn.closed_at = self.clock.now()
        if turn.barge_in:
            self._barge_in_at = None  # a later clear is not a reaction to this utterance
        if self._turn_done is not None and not self._turn_done.done():
            self._turn_done.set_result(turn)
        if self._first_audio is not None and not self._first_audio.done():
            self._first_audio.set_exception(TimeoutError())
            self._first_audio.exception()  # mark retrieved: nobody may be waiting any more
        self.env.emit("turn", {"call_id": self.record.call_id, **turn.to_json()})

    def _on_audible(self, stretch: Audible, turn: TurnRecord | None = None) -> None:
        self._last_audible_end = max(self._last_audible_end, stretch.end)
        turn = turn or self._turn
        if turn is None or stretch.start < turn.listen_from - 1e-9:
            return  # audio of a turn already judged (e.g. the agent talking over the caller)
        if turn.first_audio_at is None:
            self._note_first_audio(turn, stretch.start)
        elif turn.last_audio_end is not None and stretch.start > turn.last_audio_end:
            turn.gaps_ms.append(round((stretch.start - turn.last_audio_end) * 1000, 1))
        turn.last_audio_end = max(stretch.end, turn.last_audio_end or stretch.end)

    def _note_first_audio(self, turn: TurnRecord, at: float) -> None:
        turn.first_audio_at = at
        turn.response_latency_ms = round((at - turn.listen_from) * 1000, 1)
        if self._first_audio is not None and not self._first_audio.done():
            self._first_audio.set_result(at)

    def _on_heard(self, heard: Heard) -> None:
        turn = self._turn or (self.record.turns[-1] if self.record.turns else None)
        if turn is None:
            return
        turn.audio_symbols += heard.symbols
        turn.audio_symbols_clear += heard.clear_symbols
        if heard.text is not None:
            turn.heard.append(heard.text)
        else:
            turn.undecodable += 1
            if len(turn.undecodable_reasons) < _EXAMPLES:
                turn.undecodable_reasons.append(heard.reason)

    # --- pacing tick --------------------------------------------------------------------------------------------------

    def tick(self, scheduled: float, now: float) -> None:
        """Every 20 ms: play what is due, send one frame, judge the open turn."""
        if not self.line.is_open:
            return
        self._play(self.playout.advance(now))
        if self.playout.queued_bytes == 0:
            for item in self.ear.silence_until(now):
                self._on_heard(item)
        if self._speech:
            payload = self._speech.popleft()
            first = self._speech_started is not None and not self._speech_started.done()
        else:
            payload = SILENCE_FRAME_B64
            first = False
        self.line.send_frame(payload, scheduled)
        sent = self.clock.now()
        self.record.frames_sent += 1
        lateness_ms = (sent - scheduled) * 1000
        if lateness_ms > self.record.send_lateness_max_ms:
            self.record.send_lateness_max_ms = round(lateness_ms, 3)
        if first and self._speech_started is not None:
            self._speech_started.set_result(sent)
        if payload is not SILENCE_FRAME_B64 and not self._speech and self._speech_sent is not None \
                and not self._speech_sent.done():
            self._speech_sent.set_result(sent)
        for stretch in self.ear.close_before(now):
            self._on_audible(stretch)
        self._peek_open_stretch()
        # a WebRTC agent keeps sending (silence between its words): silent is nothing audible for a merge window
        if self._awaiting_silence and self.ear.open_stretch is None and now - self._last_audible_end >= MERGE_S:
            self._agent_fell_silent()
        self._check_turn(now)

    def _play(self, events: list[Any]) -> None:
        for event in events:
            if isinstance(event, PlayedAudio):
                closed, heard = self.ear.hear(event.start, event.payload)
                for stretch in closed:
                    self._on_audible(stretch)
                for item in heard:
                    self._on_heard(item)
            elif isinstance(event, MarkReached):
                self.line.echo_mark(event.name)
                self.record.marks_echoed += 1
        self._peek_open_stretch()

    def _peek_open_stretch(self) -> None:
        """The first audible block of a turn is known before its stretch closes: latency must not wait for it."""
        turn = self._turn
        stretch = self.ear.open_stretch
        if turn is not None and stretch is not None and turn.first_audio_at is None \
                and stretch.start >= turn.listen_from - 1e-9:
            self._note_first_audio(turn, stretch.start)
            turn.last_audio_end = stretch.end

    # --- what the line reports (harness.line.LineEvents) ------------------------------------------------------------

    def on_agent_audio(self, mulaw: bytes, now: float) -> None:
        self.playout.enqueue_audio(mulaw, now)

    def on_agent_audio_lost(self, ms: float, now: float) -> None:
        turn = self._turn
        if turn is not None and turn.first_audio_at is not None:
            turn.concealed_ms = round(turn.concealed_ms + ms, 1)

    def on_agent_mark(self, name: str, now: float) -> None:
        self.playout.enqueue_mark(name, now)

    def on_agent_clear(self, now: float) -> None:
        self._on_clear(now)

    def on_protocol_problem(self, text: str, *, unexpected_message: bool = False) -> None:
        if unexpected_message:
            self.record.unexpected_messages += 1
        self._protocol_problem(text)

    def on_closed(self, closed: Closed) -> None:
        self._on_closed(closed)

    def _on_clear(self, now: float) -> None:
        self.record.clears += 1
        result = self.playout.clear(now)
        self._play(list(result.events))
        if result.was_playing:
            heard, cut = self.ear.interrupt()
            for item in heard:
                self._on_heard(item)
            turn = self._turn or (self.record.turns[-1] if self.record.turns else None)
            if turn is not None:
                turn.cut_phrases += cut
            if self._barge_in_at is not None and self._barge_in_reaction_pending():
                reaction = round((result.at - self._barge_in_at) * 1000, 1)
                if self._turn is not None and self._turn.barge_in:
                    self._turn.barge_in_reaction_ms = reaction
                else:
                    self._pending_reaction_ms = reaction
        else:
            self.record.stray_clears += 1
            target = self._turn or (self.record.turns[-1] if self.record.turns else None)
            if target is not None:
                target.stray_clears += 1
            self.env.emit("stray_clear", {"call_id": self.record.call_id, "at": now})
        for name in result.marks:
            self.line.echo_mark(name)
            self.record.marks_echoed += 1

    def _play_out_the_rest(self) -> None:
        """The far end hung up: the audio already on the caller's device still plays, and is heard to its end."""
        ends_at = self.playout.ends_at
        if ends_at is not None:
            self._play(self.playout.advance(max(ends_at, self.clock.now())))
        closed, heard = self.ear.flush()
        for stretch in closed:
            self._on_audible(stretch)
        for item in heard:
            self._on_heard(item)

    def _agent_fell_silent(self) -> None:
        """A line without ``clear``: the agent's audio has stopped since the barge-in began (or never played)."""
        self._awaiting_silence = False
        if self._barge_in_at is None or not self._barge_in_reaction_pending():
            return
        reaction = round(max(0.0, self._last_audible_end - self._barge_in_at) * 1000, 1)
        if self._turn is not None and self._turn.barge_in:
            self._turn.barge_in_reaction_ms = reaction
        else:
            self._pending_reaction_ms = reaction

    def _barge_in_reaction_pending(self) -> bool:
        turn = self._turn
        if turn is not None and turn.barge_in:
            return turn.barge_in_reaction_ms is None
        return self._pending_reaction_ms is None

    def _protocol_problem(self, text: str) -> None:
        record = self.record
        record.protocol_errors += 1
        if len(record.protocol_error_examples) < _EXAMPLES:
            record.protocol_error_examples.append(text[:300])
            self.env.emit("protocol_error", {"call_id": record.call_id, "error": text[:300]})

    def _on_closed(self, closed: Closed) -> None:
        self.record.close_code = closed.code
        self.record.close_reason = closed.reason
        self.env.pacer.remove(self)
        if self.line.plays_out_on_close:
            self._play_out_the_rest()
        if not self._closed.done():
            self._closed.set_result(closed)

    async def _wait_or_close(self, awaitable: Any, *, timeout: float | None = None, allow_timeout: bool = False) -> Any:
        """Await ``awaitable`` unless the websocket closes first (then :class:`CallEnded`)."""
        task = asyncio.ensure_future(awaitable)
        closed = asyncio.shield(self._closed)
        try:
            done, _ = await asyncio.wait({task, closed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task in done:
            return task.result()
        task.cancel()
        if self._closed.done() and not self._hanging_up:
            raise CallEnded
        if allow_timeout:
            return None
        raise TimeoutError

    # --- connecting and hanging up ------------------------------------------------------------------------------------

    async def _connect(self) -> bool:
        record = self.record
        started = self.clock.now()
        try:
            url = await self.line.connect(self, self.limits.connect_timeout)
        except LineRefused as refused:
            self._end(refused.outcome, refused.reason)
            return False
        record.connect_ms = round((self.clock.now() - started) * 1000, 1)
        if self.line.platform_call_sid:
            record.call_sid = self.line.platform_call_sid
        self._start_sent_at = self.clock.now()
        self.line.start_media(self.env.pacer.add(self))
        self.env.emit("call_connected", {"call_id": record.call_id, "url": url, "connect_ms": record.connect_ms,
                                         "transport": record.transport})
        return True

    def _end(self, outcome: Outcome, reason: str) -> None:
        if self.record.outcome is None:
            self.record.outcome = outcome
            self.record.reason = reason

    def _end_on_close(self) -> None:
        closed = self._closed.result() if self._closed.done() else None
        code = closed.code if closed else None
        how = f"close code {code}" + (f" ({closed.reason})" if closed and closed.reason else "") if code else \
            "the connection dropped without a close frame"
        no_audio_yet = not any(turn.first_audio_at is not None for turn in self.record.turns)
        if code == TRY_AGAIN_LATER and no_audio_yet:
            self._end(Outcome.REJECTED, f"the platform refused the call: {how}")
        else:
            step = self.record.turns[-1].step if self.record.turns else 0
            self._end(Outcome.DROPPED, f"the platform ended the stream during script step {step}: {how}")

    def _shutdown(self) -> None:
        """Hang up (the line's way: Twilio's ``stop`` and a close, or closing the peer connection)."""
        self._hanging_up = True
        self.env.pacer.remove(self)
        self.line.hang_up()
