"""Recordings to an S3 object store: the runtime's ``recording.s3`` config, :class:`S3RecordingSink` against the
real embedded store (moto, through boto3) with the harness listing what arrived, and the failures of incident 1:
a store that accepts and never answers, one that refuses, a missing bucket. Each failure must end within the
configured timeouts and be counted in ``/metrics`` with its reason, by the sink that saw it.

No test sleeps: waits are on the upload itself, bounded by the botocore timeouts under test.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import wave
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)

from fake_providers.deepgram import DeepgramConfig, create_deepgram_app
from fake_providers.elevenlabs import ElevenLabsConfig, create_elevenlabs_app
from fake_providers.openai_chat import OpenAIConfig, create_openai_app
from harness.storage import StorageClient, StorageEndpoint, embedded_storage, is_complete
from reference_runtime.app import RUNTIME, create_app
from reference_runtime.config import ConfigError, S3StorageConfig, parse_config
from reference_runtime.metrics import RuntimeMetrics
from reference_runtime.recording import (
    FolderRecordingSink,
    MemoryRecordingSink,
    RecordingUploadError,
    S3RecordingSink,
    build_recording_sink,
    upload_error_reason,
)
from reference_runtime.tools import StaticToolRunner
from reference_runtime.workflow import LoggingWorkflowClient
from tests.test_runtime_app import PROVIDERS, running
from tests.test_runtime_call import (
    FAST,
    SCRIPT,
    STEP_TIMEOUT_S,
    RecordingBox,
    Stack,
    TwilioSide,
    metric,
    runtime_config,
    serving,
)
from tests.test_runtime_seams import recording
from tests.test_storage import free_port

#: short, so a stalled store fails in about half a second; the bounds below are generous multiples of them.
STALL_TIMEOUTS = {"connect_timeout_s": 0.5, "read_timeout_s": 0.5}
#: an upload that should end at its timeouts ends well within this on a busy 2-core machine.
UPLOAD_DEADLINE_S = 15.0
#: the call waits for its upload: today's sink, the broken way of incident 1
BROKEN_RECORDING = {"recording": "broken"}


@pytest.fixture(scope="module")
def store() -> Iterator[StorageEndpoint]:
    with embedded_storage() as endpoint:
        yield endpoint


def s3_section(endpoint: StorageEndpoint, **overrides: Any) -> dict[str, Any]:
    return {**endpoint.runtime_s3_config(), **overrides}


def new_metrics() -> RuntimeMetrics:
    return RuntimeMetrics(active_calls=lambda: 0.0, capacity=lambda: 1.0, ready=lambda: 1.0)


class StalledStore:
    """A TCP server on loopback that accepts, reads whatever it is sent, and never answers: an object store stuck
    behind a network fault. Counts connections, so retries can be seen."""

    def __init__(self) -> None:
        self.connections = 0
        self.url = ""
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> StalledStore:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass

    async def __aexit__(self, *exc: object) -> None:
        for writer in self._writers:
            writer.close()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


# --- config -----------------------------------------------------------------------------------------------------


def test_an_s3_section_validates_with_explicit_defaults() -> None:
    config = parse_config({"providers": PROVIDERS, "recording": {"s3": {"bucket": "calls"}}})
    s3 = config.recording.s3
    assert s3 is not None
    assert (s3.endpoint_url, s3.region, s3.key_prefix) == (None, "us-east-1", "recordings")
    assert (s3.connect_timeout_s, s3.read_timeout_s, s3.max_attempts) == (2.0, 5.0, 3)
    assert S3StorageConfig(bucket="calls", key_prefix="/tenant-1/recordings/").key_prefix == "tenant-1/recordings"


@pytest.mark.parametrize(
    ("recording_section", "path"),
    [
        ({"s3": {"bucket": "Not_A_Bucket"}}, "recording.s3.bucket"),
        ({"s3": {"bucket": "calls", "read_timeout_s": 0}}, "recording.s3.read_timeout_s"),
        ({"s3": {"bucket": "calls", "max_attempts": 0}}, "recording.s3.max_attempts"),
        ({"s3": {"bucket": "calls", "endpoint_url": "127.0.0.1:9000"}}, "recording.s3.endpoint_url"),
        ({"s3": {"bucket": "calls", "timeout_s": 1}}, "recording.s3.timeout_s"),  # a typo, not a silent default
        ({"s3": {"endpoint_url": "http://127.0.0.1:9000"}}, "recording.s3.bucket"),
        ({"s3": {"bucket": "calls", "access_key_id": "only-half"}}, "recording.s3"),
        ({"folder": "/tmp/rec", "s3": {"bucket": "calls"}}, "recording"),
    ],
)
def test_a_bad_s3_section_fails_naming_the_field_path(recording_section: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"providers": PROVIDERS, "recording": recording_section}, source="runtime.yaml")
    lines = str(caught.value).splitlines()
    assert lines[0] == "runtime.yaml: invalid runtime config"
    assert any(line.strip().startswith(f"{path}:") for line in lines[1:]), lines


def test_the_recording_section_picks_the_sink() -> None:
    assert isinstance(build_recording_sink(parse_config({"providers": PROVIDERS}).recording), MemoryRecordingSink)
    folder = parse_config({"providers": PROVIDERS, "recording": {"folder": "/tmp/rec"}}).recording
    assert isinstance(build_recording_sink(folder), FolderRecordingSink)
    s3 = parse_config({"providers": PROVIDERS, "recording": {"s3": {"bucket": "calls"}}}).recording
    sink = build_recording_sink(s3)
    assert isinstance(sink, S3RecordingSink)
    sink.close()


# --- failure reasons (pure) -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ReadTimeoutError(endpoint_url="http://127.0.0.1:1/b/k"), "timeout"),
        (ConnectTimeoutError(endpoint_url="http://127.0.0.1:1/b/k"), "timeout"),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1/b/k"), "connection"),
        (ConnectionClosedError(endpoint_url="http://127.0.0.1:1/b/k"), "connection"),
        (ClientError({"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "PutObject"),
         "http_503"),
        (ClientError({"Error": {"Code": "NoSuchBucket"}, "ResponseMetadata": {"HTTPStatusCode": 404}}, "PutObject"),
         "http_404"),
        (ClientError({"Error": {"Code": "Weird"}}, "PutObject"), "http_error"),
        (NoCredentialsError(), "client"),
        (ParamValidationError(report="Bucket is required"), "client"),
    ],
)
def test_botocore_failures_map_to_a_small_set_of_reasons(error: Exception, reason: str) -> None:
    assert upload_error_reason(error) == reason


# --- uploads to the real store ----------------------------------------------------------------------------------


async def test_a_recording_is_uploaded_as_two_wavs_and_metadata_and_the_harness_finds_it(
    store: StorageEndpoint,
) -> None:
    metrics = new_metrics()
    sink = S3RecordingSink(S3StorageConfig.model_validate(s3_section(store)), observer=metrics)
    client = StorageClient.for_endpoint(store)
    call_sid = "CA" + "5" * 32
    try:
        await sink.store(recording(call_sid))
        arrived = await client.recordings()
        caller = await client.get(f"recordings/{call_sid}/caller.wav")
        meta = json.loads(await client.get(f"recordings/{call_sid}/meta.json"))
    finally:
        sink.close()
        client.close()
    assert arrived[call_sid] == [f"recordings/{call_sid}/{name}" for name in ("agent.wav", "caller.wav", "meta.json")]
    assert is_complete(arrived[call_sid])
    with wave.open(io.BytesIO(caller)) as wav:
        assert (wav.getframerate(), wav.getsampwidth(), wav.getnchannels(), wav.getnframes()) == (8000, 2, 1, 800)
    assert meta["call_sid"] == call_sid and meta["outcome"] == "completed" and meta["audio_format"] == "mulaw@8000"
    assert meta["log"] == [{"kind": "agent", "text": "Hello."}, {"kind": "caller", "text": "Hi."}]
    text = metrics.exposition().decode()
    assert metric(text, "runtime_recordings_uploaded_total") == 1.0
    assert metric(text, "runtime_recording_uploaded_bytes_total") > 2 * 44 + 2 * (800 + 400)
    assert metric(text, "runtime_recording_upload_seconds_count", outcome="uploaded") == 1.0
    assert metric(text, "runtime_recording_upload_errors_total", reason="timeout") == 0.0


async def test_a_missing_bucket_is_counted_as_the_stores_http_status(store: StorageEndpoint) -> None:
    metrics = new_metrics()
    config = S3StorageConfig.model_validate(s3_section(store, bucket="no-such-bucket", max_attempts=1))
    sink = S3RecordingSink(config, observer=metrics)
    try:
        with pytest.raises(RecordingUploadError) as caught:
            await sink.store(recording())
    finally:
        sink.close()
    assert caught.value.reason == "http_404" and caught.value.key == "recordings/CA1/caller.wav"
    assert metric(metrics.exposition().decode(), "runtime_recording_upload_errors_total", reason="http_404") == 1.0


# --- incident 1: a store that does not answer -------------------------------------------------------------------


async def test_an_upload_to_a_stalled_store_fails_within_its_read_timeout_and_is_counted() -> None:
    metrics = new_metrics()
    async with StalledStore() as stalled:
        config = S3StorageConfig.model_validate(
            {"endpoint_url": stalled.url, "bucket": "calls", "access_key_id": "k", "secret_access_key": "s",
             "max_attempts": 1, **STALL_TIMEOUTS}
        )
        sink = S3RecordingSink(config, observer=metrics)
        started = time.monotonic()
        try:
            with pytest.raises(RecordingUploadError) as caught:
                async with asyncio.timeout(UPLOAD_DEADLINE_S):
                    await sink.store(recording())
        finally:
            sink.close()
        elapsed = time.monotonic() - started
    assert caught.value.reason == "timeout"
    assert stalled.connections == 1
    assert elapsed >= 0.45  # it did wait for the store: the read timeout, not some earlier failure
    text = metrics.exposition().decode()
    assert metric(text, "runtime_recording_upload_errors_total", reason="timeout") == 1.0
    assert metric(text, "runtime_recording_upload_seconds_count", outcome="failed") == 1.0
    assert metric(text, "runtime_recordings_uploaded_total") == 0.0


async def test_max_attempts_is_how_many_times_the_stalled_store_is_tried() -> None:
    async with StalledStore() as stalled:
        config = S3StorageConfig.model_validate(
            {"endpoint_url": stalled.url, "bucket": "calls", "access_key_id": "k", "secret_access_key": "s",
             "max_attempts": 2, **STALL_TIMEOUTS}
        )
        sink = S3RecordingSink(config)
        try:
            with pytest.raises(RecordingUploadError, match="timeout"):
                async with asyncio.timeout(UPLOAD_DEADLINE_S):
                    await sink.store(recording())
        finally:
            sink.close()
        assert stalled.connections == 2  # botocore's standard mode retried once: 2 attempts in total


async def test_a_refused_connection_is_counted_as_connection() -> None:
    metrics = new_metrics()
    config = S3StorageConfig.model_validate(
        {"endpoint_url": f"http://127.0.0.1:{free_port()}", "bucket": "calls", "access_key_id": "k",
         "secret_access_key": "s", "max_attempts": 1, **STALL_TIMEOUTS}
    )
    sink = S3RecordingSink(config, observer=metrics)
    try:
        with pytest.raises(RecordingUploadError) as caught:
            async with asyncio.timeout(UPLOAD_DEADLINE_S):
                await sink.store(recording())
    finally:
        sink.close()
    assert caught.value.reason == "connection"
    assert metric(metrics.exposition().decode(), "runtime_recording_upload_errors_total", reason="connection") == 1


# --- the runtime: config -> sink -> /metrics --------------------------------------------------------------------


@pytest.mark.parametrize("stalled_store", [False, True], ids=["healthy", "stalled"])
async def test_the_runtime_builds_the_s3_sink_from_its_config_and_counts_in_metrics(
    store: StorageEndpoint, stalled_store: bool
) -> None:
    async with StalledStore() as stalled:
        stall = {"endpoint_url": stalled.url, "max_attempts": 1, **STALL_TIMEOUTS} if stalled_store else {}
        section = s3_section(store, **stall)
        # the synchronous sink is safeguards.recording: broken (fixed spools first: test_runtime_spool*.py)
        async with running(recording={"s3": section}, safeguards=BROKEN_RECORDING) as (url, app, http):
            sink = app[RUNTIME].recording_sink
            assert isinstance(sink, S3RecordingSink) and sink.config.endpoint_url == section["endpoint_url"]
            try:
                async with asyncio.timeout(UPLOAD_DEADLINE_S):
                    await sink.store(recording("CA" + "7" * 32))
            except RecordingUploadError:
                assert stalled_store
            finally:
                sink.close()
            async with http.get(f"{url}/metrics") as response:
                text = await response.text()
    uploaded, timeouts = (0.0, 1.0) if stalled_store else (1.0, 0.0)
    assert metric(text, "runtime_recordings_uploaded_total") == uploaded
    assert metric(text, "runtime_recording_upload_errors_total", reason="timeout") == timeouts


@asynccontextmanager
async def config_built_stack(**overrides: Any) -> AsyncIterator[Stack]:
    """The runtime against the fakes with every seam built from its config (unlike test_runtime_call's stack, which
    injects in-memory seams): what ``python -m reference_runtime serve`` runs."""
    deepgram = create_deepgram_app(DeepgramConfig.model_validate({"stt": FAST, "tts": FAST}))
    elevenlabs = create_elevenlabs_app(ElevenLabsConfig.model_validate({"latency": FAST}))
    openai = create_openai_app(OpenAIConfig.model_validate({"script": SCRIPT, "latency": FAST}))
    async with serving(deepgram) as stt, serving(elevenlabs) as tts, serving(openai) as llm:
        app = create_app(runtime_config(stt, tts, llm, **overrides))
        try:
            async with serving(app) as url, aiohttp.ClientSession() as http:
                yield Stack(url, app, http, RecordingBox(), LoggingWorkflowClient(), StaticToolRunner())
        finally:
            close = getattr(app[RUNTIME].recording_sink, "close", None)
            if close is not None:
                close()


async def test_a_call_recording_reaches_the_store_before_the_slot_is_freed(store: StorageEndpoint) -> None:
    client = StorageClient.for_endpoint(store)
    try:
        async with config_built_stack(recording={"s3": s3_section(store)}, safeguards=BROKEN_RECORDING) as s:
            caller = await TwilioSide.dial(s, n=0x51)
            await caller.listen(sentences=2)
            await caller.hang_up()
            await s.idle()  # the slot is freed only after the upload: the objects must be there now
            arrived = await client.recordings()
            text = await s.metrics()
    finally:
        client.close()
    call_sid = f"CA{0x51:032x}"
    assert is_complete(arrived[call_sid]) and len(arrived[call_sid]) == 3
    assert metric(text, "runtime_recordings_total", outcome="stored") == 1.0
    assert metric(text, "runtime_recordings_uploaded_total") == 1.0


async def test_a_stalled_store_holds_the_call_slot_for_the_timeout_then_the_recording_is_lost() -> None:
    # Incident 1, the broken way: the call waits for its upload before freeing its slot.
    async with StalledStore() as stalled:
        section = {"endpoint_url": stalled.url, "bucket": "calls", "access_key_id": "k", "secret_access_key": "s",
                   "max_attempts": 1, **STALL_TIMEOUTS}
        async with config_built_stack(recording={"s3": section}, safeguards=BROKEN_RECORDING) as s:
            caller = await TwilioSide.dial(s)
            await caller.listen(sentences=2)
            await caller.hang_up()
            async with asyncio.timeout(STEP_TIMEOUT_S):
                await s.app[RUNTIME].admission.wait_idle()
            text = await s.metrics()
        assert stalled.connections == 1
    assert metric(text, "runtime_recordings_total", outcome="lost") == 1.0
    assert metric(text, "runtime_recording_upload_errors_total", reason="timeout") == 1.0
    assert metric(text, "runtime_recording_store_seconds_sum") >= 0.45  # the slot waited out the read timeout
