"""Call recordings and the :class:`RecordingSink` seam.

At call end the call hands its :class:`Recording` (the caller's audio and the agent's audio as two tracks,
plus the dialog's log) to the sink, and only then frees its capacity slot. That ordering is the point of
incident 1: a sink that uploads synchronously to a stalled object store keeps the slot busy, so the process
stops answering calls. The safeguards issue adds a spooling sink; today's sinks keep recordings in memory or
write them to a folder.

Contract: ``store`` either keeps the recording or raises; the call counts the outcome in its metrics.
"""

from __future__ import annotations

import asyncio
import json
import wave
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from harness.audio.formats import AudioFormat, from_bytes, to_bytes


@dataclass(slots=True)
class Recording:
    call_sid: str
    stream_sid: str
    audio_format: AudioFormat
    """format of both tracks (the telephony format the call used)"""
    caller_audio: bytes
    agent_audio: bytes
    started_at: float
    ended_at: float
    outcome: str
    log: list[tuple[str, str]] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return len(self.caller_audio) + len(self.agent_audio)


class RecordingSink(Protocol):
    async def store(self, recording: Recording) -> None: ...


class MemoryRecordingSink:
    """Keeps the last ``keep_last`` recordings (bounded, so a soak test does not read it as a leak)."""

    def __init__(self, keep_last: int = 20) -> None:
        self.recordings: deque[Recording] = deque(maxlen=keep_last)
        self.stored = 0

    async def store(self, recording: Recording) -> None:
        self.recordings.append(recording)
        self.stored += 1


def _write_wav(path: Path, audio: bytes, fmt: AudioFormat) -> None:
    pcm = (
        audio
        if fmt.encoding == "linear16"
        else to_bytes(from_bytes(audio, fmt), AudioFormat("linear16", fmt.sample_rate))
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(fmt.sample_rate)
        out.writeframes(pcm)


class FolderRecordingSink:
    """Writes ``<call_sid>.caller.wav``, ``<call_sid>.agent.wav`` (16-bit PCM) and ``<call_sid>.json``
    (metadata and the dialog log). File I/O runs in a worker thread so the event loop keeps serving other
    calls."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    async def store(self, recording: Recording) -> None:
        await asyncio.to_thread(self._write, recording)

    def _write(self, recording: Recording) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        stem = recording.call_sid or recording.stream_sid or "call"
        _write_wav(self.folder / f"{stem}.caller.wav", recording.caller_audio, recording.audio_format)
        _write_wav(self.folder / f"{stem}.agent.wav", recording.agent_audio, recording.audio_format)
        meta = {
            "call_sid": recording.call_sid,
            "stream_sid": recording.stream_sid,
            "audio_format": str(recording.audio_format),
            "started_at": recording.started_at,
            "ended_at": recording.ended_at,
            "outcome": recording.outcome,
            "log": [{"kind": kind, "text": text} for kind, text in recording.log],
        }
        (self.folder / f"{stem}.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
