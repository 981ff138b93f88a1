"""Call recordings and the :class:`RecordingSink` seam.

At call end the call hands its :class:`Recording` (the caller's audio and the agent's audio as two tracks,
plus the dialog's log) to the sink, and only then frees its capacity slot. That ordering is the point of
incident 1: a sink that uploads synchronously to a stalled object store keeps the slot busy, so the process
stops answering calls. The sinks keep recordings in memory, write them to a folder, or send them to an
S3-compatible object store in one of two ways, picked by ``safeguards.recording``:

- ``broken``: :class:`S3RecordingSink` uploads while the call waits (incident 1, on purpose);
- ``fixed``: :class:`~reference_runtime.spool.SpoolingRecordingSink` writes the recording to a durable local
  spool (the call waits only for the local write) and a background uploader sends it to the store with retries
  behind a circuit breaker (reference_runtime/spool.py).

Contract: ``store`` either keeps the recording or raises; the call counts the outcome in its metrics
(``runtime_recordings_total{outcome}``). A sink that talks to a remote store also reports each upload, with the
reason it failed, to a :class:`RecordingObserver`: that count comes from the code that saw the failure.

Object layout in the store (one "folder" per call; the harness lists the bucket by this layout)::

    <key_prefix>/<call_sid>/caller.wav   16-bit PCM mono, the caller's track
    <key_prefix>/<call_sid>/agent.wav    16-bit PCM mono, the agent's track
    <key_prefix>/<call_sid>/meta.json    metadata and the dialog log; written last, so its presence marks a
                                         complete recording
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import wave
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    HTTPClientError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from harness.audio.formats import AudioFormat, from_bytes, to_bytes
from harness.clock import Clock, MonotonicClock
from reference_runtime.config import Mode, RecordingConfig, S3StorageConfig

#: the objects of one recording, in upload order: ``meta.json`` goes last so that its presence means "complete".
CALLER_OBJECT = "caller.wav"
AGENT_OBJECT = "agent.wav"
META_OBJECT = "meta.json"


@dataclass(slots=True, weakref_slot=True)  # weakref: the memory ledger sees whether it outlives its call
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


def wav_bytes(audio: bytes, fmt: AudioFormat) -> bytes:
    """One track as a WAV file (16-bit PCM mono at the track's rate: what every audio tool opens)."""
    pcm = (
        audio
        if fmt.encoding == "linear16"
        else to_bytes(from_bytes(audio, fmt), AudioFormat("linear16", fmt.sample_rate))
    )
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(fmt.sample_rate)
        wav.writeframes(pcm)
    return out.getvalue()


def metadata(recording: Recording) -> dict[str, Any]:
    """What a recording's JSON side file holds, whichever sink writes it."""
    return {
        "call_sid": recording.call_sid,
        "stream_sid": recording.stream_sid,
        "audio_format": str(recording.audio_format),
        "started_at": recording.started_at,
        "ended_at": recording.ended_at,
        "outcome": recording.outcome,
        "log": [{"kind": kind, "text": text} for kind, text in recording.log],
    }


def recording_objects(recording: Recording) -> list[tuple[str, bytes, str]]:
    """The objects of one recording in upload order, as ``(object name, body, content type)``: the two tracks as
    WAV, then ``meta.json`` last (its presence in the store marks a complete recording)."""
    return [
        (CALLER_OBJECT, wav_bytes(recording.caller_audio, recording.audio_format), "audio/wav"),
        (AGENT_OBJECT, wav_bytes(recording.agent_audio, recording.audio_format), "audio/wav"),
        (META_OBJECT, json.dumps(metadata(recording), indent=2).encode("utf-8"), "application/json"),
    ]


def recording_name(recording: Recording) -> str:
    """The name a recording is filed under: its CallSid (a Twilio ``CA`` + 32 hex digits). The ``start``
    message comes from the network, so anything outside a safe file/key alphabet is replaced."""
    stem = recording.call_sid or recording.stream_sid or "call"
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", stem).lstrip(".") or "call"


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
        stem = recording_name(recording)
        (self.folder / f"{stem}.caller.wav").write_bytes(wav_bytes(recording.caller_audio, recording.audio_format))
        (self.folder / f"{stem}.agent.wav").write_bytes(wav_bytes(recording.agent_audio, recording.audio_format))
        (self.folder / f"{stem}.json").write_text(json.dumps(metadata(recording), indent=2), encoding="utf-8")


# --- object storage ---------------------------------------------------------------------------------------------


def object_key(key_prefix: str, call_name: str, obj: str) -> str:
    """``<key_prefix>/<call_sid>/<object>`` (no leading slash; an empty prefix puts calls at the bucket root)."""
    return f"{key_prefix}/{call_name}/{obj}" if key_prefix else f"{call_name}/{obj}"


class RecordingObserver(Protocol):
    """Where a remote sink reports each recording's upload, once, with its outcome (implemented by the runtime's
    metrics). Called from the sink's upload thread, so an implementation must be thread-safe."""

    def upload_succeeded(self, seconds: float, nbytes: int) -> None: ...

    def upload_failed(self, reason: str, seconds: float) -> None: ...


class NullRecordingObserver:
    def upload_succeeded(self, seconds: float, nbytes: int) -> None:
        return None

    def upload_failed(self, reason: str, seconds: float) -> None:
        return None


class RecordingUploadError(Exception):
    """An upload failed after botocore's attempts; ``reason`` is the metric label (see :func:`upload_error_reason`)."""

    def __init__(self, reason: str, key: str, detail: str) -> None:
        super().__init__(f"upload of {key} failed ({reason}): {detail}")
        self.reason = reason
        self.key = key


def upload_error_reason(error: BaseException) -> str:
    """A botocore failure -> a small, bounded label set for ``runtime_recording_upload_errors_total{reason}``:

    - ``timeout``: no TCP connection within ``connect_timeout_s``, or the store stayed silent for
      ``read_timeout_s`` (a stalled store: incident 1);
    - ``connection``: refused, reset, or closed mid-response;
    - ``http_<status>``: the store answered with an error status (``http_503`` SlowDown, ``http_404`` no bucket);
    - ``client``: anything botocore refused before sending (missing credentials, invalid parameters).

    Timeouts are checked first: botocore's timeout classes also derive from its connection error classes.
    """
    if isinstance(error, ConnectTimeoutError | ReadTimeoutError):
        return "timeout"
    if isinstance(error, BotoConnectionError | HTTPClientError):
        return "connection"
    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return f"http_{status}" if isinstance(status, int) else "http_error"
    return "client"


def s3_client(config: S3StorageConfig, *, max_pool_connections: int = 10) -> Any:
    """A boto3 S3 client with every timeout and the retry policy explicit (see :class:`S3StorageConfig`).

    Path-style addressing (``http://host/bucket/key``), because a loopback endpoint, a Toxiproxy listener or a
    MinIO has no per-bucket DNS names. The session is private so that a process-wide ``~/.aws`` profile or
    ``AWS_PROFILE`` does not change where recordings go; credentials left out fall back to boto3's chain.
    """
    session = boto3.session.Session(
        aws_access_key_id=config.access_key_id,
        aws_secret_access_key=config.secret_access_key,
        region_name=config.region,
    )
    return session.client(
        "s3",
        endpoint_url=config.endpoint_url,
        config=BotoConfig(
            connect_timeout=config.connect_timeout_s,
            read_timeout=config.read_timeout_s,
            # total_max_attempts counts the first attempt (botocore's max_attempts would count retries only).
            retries={"total_max_attempts": config.max_attempts, "mode": "standard"},
            max_pool_connections=max_pool_connections,
            s3={"addressing_style": "path"},
        ),
    )


class S3ObjectStore:
    """Blocking puts to an S3 bucket (call from a worker thread): each failure after botocore's attempts is raised
    as a :class:`RecordingUploadError` whose ``reason`` is the metric label. Shared by the synchronous sink and the
    spool's background uploader, so both count failures the same way."""

    def __init__(self, config: S3StorageConfig, *, max_pool_connections: int = 10) -> None:
        self.config = config
        self._client = s3_client(config, max_pool_connections=max_pool_connections)

    def key(self, call_name: str, obj: str) -> str:
        return object_key(self.config.key_prefix, call_name, obj)

    def put(self, key: str, body: bytes, content_type: str) -> None:
        try:
            self._client.put_object(Bucket=self.config.bucket, Key=key, Body=body, ContentType=content_type)
        except (BotoCoreError, ClientError) as error:
            raise RecordingUploadError(upload_error_reason(error), key, str(error)) from error

    def close(self) -> None:
        self._client.close()


class S3RecordingSink:
    """Uploads each recording as ``caller.wav``, ``agent.wav`` then ``meta.json`` under
    ``<key_prefix>/<call_sid>/``, and returns only when all three are stored: the call waits (today's behaviour,
    the broken way of incident 1; the safeguards issue puts a spool in front of this sink).

    boto3 is synchronous, so each upload runs in this sink's own thread pool, never on the event loop. The pool is
    not asyncio's default executor: uploads stalled for ``read_timeout_s`` must not starve the other users of
    that executor (``getaddrinfo`` for every provider connection, the folder sink). ``workers`` is the number of
    calls that can upload at once (the runtime passes its capacity, so no call ever queues behind another's
    upload: each one waits only for the store, as in the incident).
    """

    def __init__(
        self,
        config: S3StorageConfig,
        *,
        observer: RecordingObserver | None = None,
        workers: int = 8,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self._observer = observer or NullRecordingObserver()
        self._clock = clock or MonotonicClock()
        self._store = S3ObjectStore(config, max_pool_connections=workers)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="s3-recording")

    def keys(self, recording: Recording) -> list[str]:
        name = recording_name(recording)
        return [object_key(self.config.key_prefix, name, obj) for obj in (CALLER_OBJECT, AGENT_OBJECT, META_OBJECT)]

    async def store(self, recording: Recording) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._upload, recording)

    def _upload(self, recording: Recording) -> None:
        """In a pool thread: encode and put the three objects; the first failure ends the upload.

        The outcome is reported from here, not from :meth:`store`: if the awaiting call is cancelled (shutdown),
        the thread still finishes or times out, and the metrics say which. (Prometheus metrics are thread-safe.)
        """
        started = self._clock.now()
        name = recording_name(recording)
        objects = recording_objects(recording)
        for obj, body, content_type in objects:
            try:
                self._store.put(self._store.key(name, obj), body, content_type)
            except RecordingUploadError as error:
                self._observer.upload_failed(error.reason, self._clock.now() - started)
                raise
        self._observer.upload_succeeded(self._clock.now() - started, sum(len(body) for _, body, _ in objects))

    def close(self) -> None:
        """Stop taking uploads and release the connection pool; an upload in flight ends at its own timeout."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._store.close()


def build_recording_sink(
    config: RecordingConfig,
    *,
    observer: RecordingObserver | None = None,
    workers: int = 8,
    mode: Mode = "broken",
    clock: Clock | None = None,
) -> RecordingSink:
    """The sink the ``recording`` config section asks for: S3, a folder, or memory. ``mode`` is
    ``safeguards.recording`` and matters only for S3: ``broken`` (this function's default, the plain sink) uploads
    while the call waits; ``fixed`` spools to local disk and uploads in the background. Folder and memory sinks
    never wait on the network, so they are the same in both modes. The runtime passes its configured mode."""
    if config.s3 is not None:
        if mode == "fixed":
            from reference_runtime.spool import build_spooling_sink  # spool.py builds on this module

            return build_spooling_sink(config, observer=observer, clock=clock)
        return S3RecordingSink(config.s3, observer=observer, workers=workers, clock=clock)
    if config.folder:
        return FolderRecordingSink(config.folder)
    return MemoryRecordingSink(config.keep_last)
