"""One call through the runtime: caller media in, a conversation, agent media out.

The :class:`Call` is the thin asyncio adapter that wires the sans-I/O parts together:

    caller media --decode--> VAD (barge-in)                               (caller audio, telephony format)
                 --transcode--> STT stream --> Endpointer --> caller turn (STT format)
    caller turn --> Dialog --> LLM (streamed) --> SentenceSplitter --> TTS --> transcode --> media + mark

The call does not know its transport. It is fed typed events (reference_runtime/media_stream.py: ``start``,
media, mark echoes, DTMF, ``stop``) and speaks through a :class:`CallLink` of typed operations (media bytes in
the plan's telephony format, marks, clear, close). The Twilio Media Streams adapter (reference_runtime/twilio_link.py)
turns those into protocol messages and back; the WebRTC one (reference_runtime/webrtc.py) into an audio track and
mark echoes from its playout.

Concurrency: the inbound loop (:meth:`run`) reads the transport's events; one task reads STT results; at most one
*response* task (greeting, reply or goodbye) speaks at a time. A new caller turn or a barge-in cancels the
response in flight (its LLM and TTS requests are dropped with it).

Hang-up: ``stop`` (Twilio's message, or the WebRTC peer leaving) or the link closing ends the call from the
caller's side; the dialog ends it from ours (goodbye spoken, last mark echoed, then the link is closed: that is
how a ``<Connect><Stream>`` runtime hangs up, and a WebRTC runtime closes its peer connection). At the end the
call hands its recording to the :class:`RecordingSink` *before* its slot is freed.

Per-call buffers (the two recording tracks, resampler state, the dialog) live on this object and are dropped
when :meth:`run` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from harness.clock import Clock
from reference_runtime.audio_plan import AudioMismatch, AudioPlan, AudioPlanner
from reference_runtime.config import RuntimeConfig
from reference_runtime.dialog import (
    Dialog,
    DialogFinished,
    LlmReply,
    LlmRequest,
    RunTools,
    ToolCall,
    ToolResult,
    TurnComplete,
    WorkflowEvent,
)
from reference_runtime.endpointing import CallerTurn, Endpointer
from reference_runtime.media_stream import (
    Connected,
    DtmfReceived,
    Event,
    MarkEchoed,
    MediaReceived,
    ProtocolError,
    StreamStarted,
    StreamStopped,
)
from reference_runtime.memory import CallMemoryLedger
from reference_runtime.metrics import RuntimeMetrics
from reference_runtime.playout import Playout
from reference_runtime.providers.base import (
    ProviderError,
    Providers,
    ReplyDone,
    SttStream,
    TextDelta,
    Transcript,
    UtteranceEnd,
)
from reference_runtime.recording import Recording, RecordingSink
from reference_runtime.sentences import SentenceSplitter, split_sentences
from reference_runtime.tools import FillerPolicy, ToolRunner, tool_error
from reference_runtime.transcoder import Transcoder
from reference_runtime.vad import EnergyVad, SpeechStarted
from reference_runtime.workflow import CallContext, WorkflowClient, WorkflowError, WorkflowWorker

log = logging.getLogger(__name__)

#: outbound ``media`` messages carry this much audio (Pipecat sends 40 ms; Twilio buffers whatever it gets).
FRAME_S = 0.04
#: a stream that has not sent ``start`` by then is closed.
START_TIMEOUT_S = 10.0
#: RFC 6455 close codes used toward Twilio (a WebRTC link logs them with the reason: a peer connection has none).
CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_INTERNAL = 1011


def tool_failed(result: ToolResult) -> bool:
    """Whether a tool call failed, by the ToolRunner contract (tools.py): a runner never raises, it answers a
    failure as a JSON object with an ``error`` key for the LLM to talk about. That object is the runner's own
    report of the failure (HTTP status, timeout), so counting it here is counting at the seam, not guessing."""
    try:
        content = json.loads(result.content)
    except ValueError:
        return False
    return isinstance(content, dict) and "error" in content


class LinkClosed(ConnectionError):
    """The call's transport is gone (the caller hung up while we were talking)."""


class CallLink(Protocol):
    """The call's transport toward the caller, as the call needs it.

    Audio is bytes in the plan's telephony format (:class:`~reference_runtime.audio_plan.AudioPlan`): the link
    carries them as its line carries audio and does not convert them. Marks follow the playout contract of
    Twilio Media Streams (protocol section 4), whatever the transport: a mark is echoed (a
    :class:`~reference_runtime.media_stream.MarkEchoed` event) once every byte sent before it has played, and
    ``clear`` drops the queued audio and echoes every pending mark. The send operations raise :class:`LinkClosed`
    when the transport is gone."""

    @property
    def closed(self) -> bool: ...

    async def send_media(self, audio: bytes) -> None: ...

    async def send_mark(self, name: str) -> None: ...

    async def clear(self) -> None: ...

    async def close(self, code: int, reason: str) -> None:
        """Hang up (``code`` is an RFC 6455 close code; a transport without one logs it)."""
        ...


@dataclass(frozen=True, slots=True)
class CallServices:
    """Everything a call borrows from the composition root (shared by all calls of an app)."""

    config: RuntimeConfig
    providers: Providers
    audio_planner: AudioPlanner
    clock: Clock
    metrics: RuntimeMetrics
    recording_sink: RecordingSink
    workflow: WorkflowClient
    tools: ToolRunner
    #: safeguard 3 (fixed): delivers workflow events in the background
    workflow_worker: WorkflowWorker
    #: safeguard 6 (fixed): when a tool round gets a filler (learns tool latencies across calls)
    filler_policy: FillerPolicy
    #: safeguard 5: takes the call's buffers at call end (broken: keeps them, the leak; fixed: only measures)
    call_memory: CallMemoryLedger | None = None


class Call:
    def __init__(self, call_id: str, link: CallLink, services: CallServices) -> None:
        self.call_id = call_id
        self.link = link
        self.s = services
        self.dialog = Dialog(services.config.dialog)
        self.playout = Playout()
        self.endpointer = Endpointer()
        self.start: StreamStarted | None = None
        self.plan: AudioPlan | None = None
        self.outcome = "caller_hangup"
        self.caller_audio = bytearray()
        self.agent_audio = bytearray()
        self._stt: SttStream | None = None
        self._stt_reader: asyncio.Task[None] | None = None
        self._inbound: Transcoder | None = None
        self._vad: EnergyVad | None = None
        self._response: asyncio.Task[None] | None = None
        self._response_ids = itertools.count(1)
        self._spoken: list[str] = []
        self._response_spoke = False
        self._played = asyncio.Event()
        self._played.set()
        self._hanging_up = False
        self._closing_link = False
        self._ending = False
        self._failure: str | None = None
        self._started_at = services.clock.now()
        #: tools whose turn carried on without them (safeguard 6); their results go to the next turn
        self._late_tools: set[asyncio.Task[ToolResult]] = set()
        #: when the current response first sent audio (time to first audio of tool turns)
        self._first_audio_at: float | None = None

    @property
    def context(self) -> CallContext:
        start = self.start
        return CallContext(
            call_sid=start.call_sid if start else "",
            stream_sid=start.stream_sid if start else "",
            caller=start.custom_parameters.get("caller", "") if start else "",
        )

    # --- the inbound loop -----------------------------------------------------------------------------------

    async def run(self, inbound: AsyncIterator[Event]) -> str:
        """Serve the call until either side hangs up (``stop``, or ``inbound`` ending when the link closes);
        returns the outcome (also counted in the metrics)."""
        watchdog = asyncio.create_task(self._start_watchdog(), name=f"{self.call_id}-start-watchdog")
        try:
            async for event in inbound:
                if isinstance(event, MediaReceived):
                    await self._on_media(event.payload)
                elif isinstance(event, MarkEchoed):
                    self._on_mark(event.name)
                elif isinstance(event, DtmfReceived):
                    log.info("call %s: dtmf %s", self.call_id, event.digit)
                    self.dialog.dtmf(event.digit)
                elif isinstance(event, StreamStarted):
                    watchdog.cancel()
                    await self._on_start(event)
                elif isinstance(event, StreamStopped):
                    break
                elif isinstance(event, ProtocolError):
                    log.warning("call %s: protocol error: %s", self.call_id, event.reason)
                elif isinstance(event, Connected):
                    pass
                if self._failure is not None:
                    break
        except ProviderError as error:
            log.warning("call %s: %s", self.call_id, error)
            self._failure = f"{error.service}_error"
        except LinkClosed:
            pass
        finally:
            watchdog.cancel()
            await self._end()
        return self.outcome

    async def _start_watchdog(self) -> None:
        await asyncio.sleep(START_TIMEOUT_S)
        if self.start is None:
            self._failure = "no_start"
            await self.link.close(CLOSE_POLICY, "no start message")

    async def _on_start(self, start: StreamStarted) -> None:
        self.start = start
        try:
            plan = self.plan = self.s.audio_planner(self.s.config, start)
        except AudioMismatch as error:
            # safeguard 2: a stream in another format than its transport's would be garbled both ways: refuse it
            log.warning("call %s: %s", self.call_id, error)
            self._failure = "encoding_mismatch"
            with contextlib.suppress(LinkClosed, ConnectionError):
                await self.link.close(CLOSE_POLICY, "audio format mismatch")
            return
        vad = self.s.config.vad
        self._inbound = Transcoder(plan.telephony, plan.stt)
        self._vad = EnergyVad(
            plan.telephony.sample_rate,
            threshold_dbfs=vad.threshold_dbfs,
            min_speech_ms=vad.min_speech_ms,
            hangover_ms=vad.hangover_ms,
        )
        log.info(
            "call %s: stream %s started (call %s, audio %s)",
            self.call_id,
            start.stream_sid,
            start.call_sid,
            plan,
        )
        try:
            self._stt = await self.s.providers.stt.open_stream(plan.stt, call_id=self.call_id)
        except ProviderError as error:
            log.warning("call %s: cannot open STT: %s", self.call_id, error)
            await self._fail("stt_error", "speech-to-text unavailable")
            return
        self._stt_reader = asyncio.create_task(self._read_stt(self._stt), name=f"{self.call_id}-stt")
        self._respond_with(self._greet())

    async def _on_media(self, payload: bytes) -> None:
        if self._inbound is None or self._vad is None or self._stt is None:
            return
        self.caller_audio += payload
        samples = self._inbound.decode(payload)
        for event in self._vad.process(samples):
            if isinstance(event, SpeechStarted):
                await self._caller_started_speaking()
        audio = self._inbound.convert_samples(samples)
        if not audio:
            # the resampler's first frames may yield nothing, and an empty frame would end a Deepgram stream
            return
        try:
            await self._stt.send_audio(audio)
        except ProviderError as error:
            log.warning("call %s: %s", self.call_id, error)
            await self._fail("stt_error", "speech-to-text unavailable")

    def _on_mark(self, name: str) -> None:
        self.playout.mark_echoed(name)
        if not self.playout.speaking:
            self._played.set()

    # --- listening ------------------------------------------------------------------------------------------

    async def _read_stt(self, stt: SttStream) -> None:
        try:
            async for event in stt.events():
                turn: CallerTurn | None = None
                if isinstance(event, Transcript):
                    turn = self.endpointer.transcript(
                        event.text,
                        is_final=event.is_final,
                        speech_final=event.speech_final,
                        start=event.start,
                        duration=event.duration,
                    )
                elif isinstance(event, UtteranceEnd):
                    turn = self.endpointer.utterance_end()
                if turn is not None:
                    self._caller_turn(turn)
        except ProviderError as error:
            if not self._ending:
                log.warning("call %s: %s", self.call_id, error)
                await self._fail("stt_error", "speech-to-text unavailable")

    def _caller_turn(self, turn: CallerTurn) -> None:
        if self._ending or self._hanging_up or self.dialog.finished:
            return
        log.info("call %s: caller said %r", self.call_id, turn.text)
        self._respond_with(self._reply(turn.text))

    async def _caller_started_speaking(self) -> None:
        """Barge-in: the caller talks over queued or playing agent audio (section 4: ``clear`` empties the
        queue)."""
        if self._hanging_up or self._ending:
            return
        speaking = self.playout.speaking
        responding = self._response is not None and not self._response.done() and self._response_spoke
        if not (speaking or responding):
            return  # nothing of ours is playing: the caller simply talks (a reply being prepared goes on)
        log.info("call %s: barge-in, clearing %.2f s of queued audio", self.call_id, self.playout.queued_s)
        self.s.metrics.barge_ins.inc()
        if speaking:
            await self.link.clear()
            self.playout.cleared()
            self._played.set()
        await self._cancel_response()

    # --- speaking -------------------------------------------------------------------------------------------

    def _respond_with(self, coro: Coroutine[Any, Any, None]) -> None:
        """Start a response; the one in flight (if any) is cancelled first, inside the new task."""
        previous = self._response
        self._response = asyncio.create_task(
            self._run_response(previous, coro), name=f"{self.call_id}-response"
        )

    async def _run_response(
        self, previous: asyncio.Task[None] | None, coro: Coroutine[Any, Any, None]
    ) -> None:
        try:
            if previous is not None and not previous.done():
                previous.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await previous
            self._response_spoke = False
            await coro
        except LinkClosed:
            pass
        except ProviderError as error:
            # Today: no fallback. The turn is lost and the caller hears silence (incident 4, the broken way).
            log.warning("call %s: turn failed: %s", self.call_id, error)
            self.dialog.turn_interrupted(" ".join(self._spoken))
        except asyncio.CancelledError:
            if self.dialog.in_turn:
                self.dialog.turn_interrupted(" ".join(self._spoken))
            raise
        except Exception:
            log.exception("call %s: response failed", self.call_id)
            self.dialog.turn_interrupted(" ".join(self._spoken))
        finally:
            coro.close()

    async def _cancel_response(self) -> None:
        response, self._response = self._response, None
        if response is not None and not response.done():
            response.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await response

    async def _greet(self) -> None:
        for sentence in split_sentences(self.dialog.greeting()):
            await self._say(sentence)

    async def _reply(self, text: str) -> None:
        try:
            plan = self.dialog.caller_turn(text)
        except DialogFinished:
            return
        self.s.metrics.turns.inc()
        self._spoken = []
        turn_started, self._first_audio_at = self.s.clock.now(), None
        for event in plan.events:
            await self._emit(event)  # broken mode awaits the workflow API here (incident 3); fixed enqueues
        request, goodbye, ran_tools = plan.request, None, False
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        speaker = asyncio.create_task(self._speak_queue(sentences), name=f"{self.call_id}-speaker")
        try:
            while True:
                reply = await self._ask_llm(request, sentences)
                step = self.dialog.reply_received(reply)
                if isinstance(step, RunTools):
                    ran_tools = True
                    if self.s.config.safeguards.tools == "fixed":
                        after_tools = await self._run_tools_speculatively(step.calls, reply, sentences)
                    else:  # broken (incident 6): silence for the tools' whole duration, then the LLM again
                        after_tools = self.dialog.tool_results([await self._run_tool(c) for c in step.calls])
                    if isinstance(after_tools, TurnComplete):  # carried on without a late result
                        break
                    request = after_tools
                    continue
                assert isinstance(step, TurnComplete)
                goodbye = step.goodbye
                break
            if goodbye:
                self._hanging_up = True
                sentences.put_nowait(goodbye)
            sentences.put_nowait(None)
            await speaker
        finally:
            if not speaker.done():
                speaker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await speaker
        if ran_tools and self._first_audio_at is not None:
            self.s.metrics.tool_turn_first_audio.observe(max(0.0, self._first_audio_at - turn_started))
        if goodbye:
            await self._hang_up()

    async def _run_tools_speculatively(
        self, calls: tuple[ToolCall, ...], reply: LlmReply, sentences: asyncio.Queue[str | None]
    ) -> LlmRequest | TurnComplete:
        """Safeguard 6 (fixed): the tools run as tasks while the filler is spoken (at once for a tool expected
        to be slow, else when they have not all answered after ``filler_after_s``; not when the LLM said
        something itself). Results within ``result_wait_s`` of the start are used in this turn (the LLM is asked
        again and its answer follows the filler); otherwise ``still_checking`` is said, the turn carries on, and
        each late result is handed to the dialog for the next turn when it arrives."""
        config = self.s.config.tools
        tasks = {
            asyncio.create_task(self._run_tool(call), name=f"{self.call_id}-tool-{call.name}"): call
            for call in calls
        }
        pending: set[asyncio.Task[ToolResult]] = set(tasks)
        try:
            plan = self.s.filler_policy.plan(call.name for call in calls)
            if plan.after_s > 0:
                _, pending = await asyncio.wait(pending, timeout=plan.after_s)
            if pending and not reply.text:
                sentences.put_nowait(config.filler)
                self.dialog.filler_spoken(config.filler)
                self.s.metrics.tool_fillers.labels(trigger=plan.trigger).inc()
            if pending:
                _, pending = await asyncio.wait(pending, timeout=max(0.0, config.result_wait_s - plan.after_s))
        except asyncio.CancelledError:
            # the caller spoke again: this turn's tool exchange is dropped with it, and so are its tools
            for task in tasks:
                task.cancel()
            raise
        if not pending:
            return self.dialog.tool_results([task.result() for task in tasks])
        log.info("call %s: %d tool(s) still running, carrying on without them", self.call_id, len(pending))
        for task in pending:
            self._late_tools.add(task)
            task.add_done_callback(self._late_tool_done)
        sentences.put_nowait(config.still_checking)
        return self.dialog.tools_deferred(
            [task.result() for task in tasks if task not in pending],
            [call for task, call in tasks.items() if task in pending],
            config.still_checking,
        )

    def _late_tool_done(self, task: asyncio.Task[ToolResult]) -> None:
        self._late_tools.discard(task)
        if task.cancelled() or task.exception() is not None or self._ending:
            return
        result = task.result()
        if self.dialog.late_tool_result(result):
            log.info("call %s: late result of %s kept for the next turn", self.call_id, result.call.name)
            self.s.metrics.tool_late_results.labels(tool=result.call.name).inc()

    async def _ask_llm(self, request: LlmRequest, sentences: asyncio.Queue[str | None]) -> LlmReply:
        splitter = SentenceSplitter()
        reply: LlmReply | None = None
        async with contextlib.aclosing(self.s.providers.llm.stream(request)) as chunks:
            async for chunk in chunks:
                if isinstance(chunk, TextDelta):
                    for sentence in splitter.push(chunk.text):
                        sentences.put_nowait(sentence)
                elif isinstance(chunk, ReplyDone):
                    reply = chunk.reply
        rest = splitter.flush()
        if rest:
            sentences.put_nowait(rest)
        if reply is None:
            raise ProviderError("llm", self.s.providers.llm.name, "stream ended without a reply")
        return reply

    async def _speak_queue(self, sentences: asyncio.Queue[str | None]) -> None:
        while (sentence := await sentences.get()) is not None:
            await self._say(sentence)
            self._spoken.append(sentence)

    async def _say(self, sentence: str) -> None:
        """One sentence: TTS audio streamed to the link in 40 ms pieces as it arrives (``media`` messages on
        Twilio), then a ``mark``."""
        assert self.plan is not None
        plan = self.plan
        transcoder = Transcoder(plan.tts, plan.telephony)
        frame = max(plan.telephony.bytes_per_sample, int(plan.telephony.bytes_per_second * FRAME_S))
        frame -= frame % plan.telephony.bytes_per_sample
        pending = bytearray()
        async with contextlib.aclosing(self.s.providers.tts.synthesize(sentence, plan.tts)) as audio:
            async for chunk in audio:
                pending += transcoder.process(chunk)
                while len(pending) >= frame:
                    await self._send_audio(bytes(pending[:frame]))
                    del pending[:frame]
        pending += transcoder.flush()
        for start in range(0, len(pending), frame):
            await self._send_audio(bytes(pending[start : start + frame]))
        name = f"{self.call_id}-{next(self._response_ids)}"
        self.playout.mark_sent(name)
        await self.link.send_mark(name)

    async def _send_audio(self, audio: bytes) -> None:
        assert self.plan is not None
        if self._first_audio_at is None:
            self._first_audio_at = self.s.clock.now()
        self.agent_audio += audio
        self._response_spoke = True
        self.playout.audio_sent(self.plan.telephony.duration(len(audio)))
        self._played.clear()
        await self.link.send_media(audio)

    async def _hang_up(self) -> None:
        """Wait until the goodbye has played (its mark echoed), then close the link: the runtime hangs up.
        A caller that never echoes marks is given the queued audio's duration plus a margin."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._played.wait(), timeout=self.playout.queued_s + 3.0)
        log.info("call %s: dialog complete, hanging up", self.call_id)
        self.outcome = "completed"
        self._closing_link = True
        await self.link.close(CLOSE_NORMAL, "call completed")

    # --- the seams ------------------------------------------------------------------------------------------

    async def _emit(self, event: WorkflowEvent) -> None:
        started = self.s.clock.now()
        if self.s.config.safeguards.workflows == "fixed":
            # Safeguard 3: an enqueue (it never blocks or raises); the worker delivers, retries and counts the
            # outcome, so a slow or failing workflow API never reaches the caller.
            self.s.workflow_worker.emit(event, self.context)
            self.s.metrics.workflow_latency.observe(self.s.clock.now() - started)
            return
        # broken (incident 3): the turn waits for the workflow API before the LLM is even asked
        try:
            await self.s.workflow.emit(event, self.context)
            self.s.metrics.workflow_events.labels(outcome="ok").inc()
        except WorkflowError as error:
            log.warning("call %s: workflow event %s failed: %s", self.call_id, event.name, error)
            self.s.metrics.workflow_events.labels(outcome="failed").inc()
        finally:
            self.s.metrics.workflow_latency.observe(self.s.clock.now() - started)

    async def _run_tool(self, call: ToolCall) -> ToolResult:
        started = self.s.clock.now()
        try:
            result = await self.s.tools.run(call, self.context)
        except Exception as error:  # a runner breaking its contract (tools.py) must not end the turn
            log.exception("call %s: tool %s raised", self.call_id, call.name)
            result = ToolResult(call, tool_error(f"{type(error).__name__}: {error}"))
        elapsed = self.s.clock.now() - started
        self.s.metrics.tool_latency.labels(tool=call.name).observe(elapsed)
        self.s.filler_policy.observe(call.name, elapsed)
        outcome = "error" if tool_failed(result) else "ok"
        self.s.metrics.tool_calls.labels(tool=call.name, outcome=outcome).inc()
        return result

    # --- the end --------------------------------------------------------------------------------------------

    async def _fail(self, outcome: str, reason: str) -> None:
        if self._failure is None:
            self._failure = outcome
            with contextlib.suppress(LinkClosed, ConnectionError):
                await self.link.close(CLOSE_INTERNAL, reason)

    async def _end(self) -> None:
        self._ending = True
        if self._failure is not None:
            self.outcome = self._failure
        if self._closing_link and self._response is not None:
            # the response task is closing the link itself (it hung up): let it finish
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._response), timeout=2.0)
        await self._cancel_response()
        late_tools = list(self._late_tools)  # results nobody will hear
        for task in late_tools:
            task.cancel()
        await asyncio.gather(*late_tools, return_exceptions=True)
        if self._stt is not None:
            with contextlib.suppress(ProviderError):
                await self._stt.close()
        if self._stt_reader is not None:
            if not self._stt_reader.done():
                self._stt_reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stt_reader
        if not self.link.closed:
            with contextlib.suppress(LinkClosed, ConnectionError):
                await self.link.close(CLOSE_NORMAL, "call ended")
        await self._hand_over_recording()
        self.s.metrics.calls.labels(outcome=self.outcome).inc()
        log.info("call %s: ended (%s)", self.call_id, self.outcome)

    async def _hand_over_recording(self) -> None:
        if self.start is None or self.plan is None:
            return
        recording = Recording(
            call_sid=self.start.call_sid,
            stream_sid=self.start.stream_sid,
            audio_format=self.plan.telephony,
            caller_audio=bytes(self.caller_audio),
            agent_audio=bytes(self.agent_audio),
            started_at=self._started_at,
            ended_at=self.s.clock.now(),
            outcome=self.outcome,
            log=[(entry.kind, entry.text) for entry in self.dialog.log],
        )
        # Release the per-call buffers now: only the recording (owned by the sink from here) keeps the audio.
        self.caller_audio = bytearray()
        self.agent_audio = bytearray()
        if self.s.call_memory is not None:
            self.s.call_memory.call_ended(recording)  # safeguard 5: broken keeps the buffers past the call
        started = self.s.clock.now()
        try:
            await self.s.recording_sink.store(recording)
            self.s.metrics.recordings.labels(outcome="stored").inc()
        except Exception:
            log.exception("call %s: recording lost", self.call_id)
            self.s.metrics.recordings.labels(outcome="lost").inc()
        finally:
            self.s.metrics.recording_latency.observe(self.s.clock.now() - started)
