"""Safeguard 1 (incident 1, a stalled object store): the durable spool, its background uploader, and the runtime in
both modes.

- the spool: atomic entries, what a restart finds (complete entries queued oldest first, interrupted writes
  discarded, unreadable entries quarantined), its byte limit;
- the uploader, driven step by step with a manual clock and an in-memory store: objects in order with
  ``meta.json`` last, an entry deleted only after all of them, capped exponential backoff, and the breaker (open:
  the store is not called at all; half-open: one trial);
- the runtime against a stalling proxy in front of the real embedded store (moto): broken holds the call's slot
  while its upload hangs, so the next call is rejected at capacity 1; fixed frees the slot at once, takes the next
  call, and uploads the recording once the store answers again.

The kill test (SIGKILL mid-upload, then a new process uploads everything) is in test_runtime_spool_kill.py.
"""

from __future__ import annotations

import asyncio
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from harness.audio.formats import TWILIO_MULAW_8K, to_bytes
from harness.clock import ManualClock
from harness.storage import StorageClient, StorageEndpoint, embedded_storage, is_complete
from reference_runtime.app import RUNTIME
from reference_runtime.breaker import BreakerState
from reference_runtime.config import ConfigError, parse_config
from reference_runtime.recording import Recording, RecordingUploadError, recording_objects
from reference_runtime.spool import (
    ENTRY_FILE,
    OBJECTS,
    QUARANTINE,
    TMP_PREFIX,
    Backoff,
    NullSpoolObserver,
    Spool,
    SpoolFull,
    SpoolingRecordingSink,
    SpoolUploader,
)
from tests.test_runtime_app import PROVIDERS
from tests.test_runtime_call import STEP_TIMEOUT_S, TwilioSide, metric, webhook
from tests.test_runtime_recording_s3 import config_built_stack

#: a condition the background uploader should reach is given this long (only a broken build waits it out)
WAIT_S = 20.0


def make_recording(i: int, *, seconds: float = 0.3) -> Recording:
    """A small, distinct recording per ``i`` (a tone whose pitch depends on ``i``)."""
    n = int(8000 * seconds)
    tone = (0.3 * np.sin(np.arange(n) * (0.05 + 0.01 * i))).astype(np.float32)
    return Recording(
        call_sid=f"CA{i:032x}",
        stream_sid=f"MZ{i:032x}",
        audio_format=TWILIO_MULAW_8K,
        caller_audio=to_bytes(tone, TWILIO_MULAW_8K),
        agent_audio=to_bytes(tone[: n // 2], TWILIO_MULAW_8K),
        started_at=1.0,
        ended_at=2.0,
        outcome="completed",
        log=[("agent", "Hello."), ("caller", f"Call {i}.")],
    )


async def until(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    """Poll a condition the background reaches on its own (bounded; the bound only matters when it is broken).
    Polling, not an event: the condition changes in the uploader's thread (files, the spool index)."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - see above
            await asyncio.sleep(0.02)
    assert condition(), what


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- the spool ---------------------------------------------------------------------------------------------------


def test_an_entry_is_written_atomically_with_the_objects_as_they_will_be_uploaded(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", wall=lambda: 1000.0)
    recording = make_recording(1)
    entry = spool.put(recording)
    folder = tmp_path / "spool" / entry.id
    assert sorted(p.name for p in (tmp_path / "spool").iterdir()) == [entry.id]  # no temporary folder left
    assert sorted(p.name for p in folder.iterdir()) == sorted([*OBJECTS, ENTRY_FILE])
    for name, body, _ in recording_objects(recording):
        assert (folder / name).read_bytes() == body
    assert json.loads((folder / ENTRY_FILE).read_text())["call_name"] == recording.call_sid
    assert (spool.entries, spool.nbytes) == (1, entry.nbytes)
    assert [name for name, _, _ in spool.read(entry)] == ["caller.wav", "agent.wav", "meta.json"]


def test_a_new_process_finds_complete_entries_oldest_first_and_discards_interrupted_writes(tmp_path: Path) -> None:
    now = [1000.0]
    first = Spool(tmp_path, wall=lambda: now[0])
    entries = []
    for i in range(3):
        entries.append(first.put(make_recording(i)))
        now[0] += 1.0
    (tmp_path / f"{TMP_PREFIX}00000000000000000001-x").mkdir()  # a write cut short by a crash
    (tmp_path / f"{TMP_PREFIX}00000000000000000001-x" / "caller.wav").write_bytes(b"partial")
    broken = tmp_path / "00000000000000000002-00000000-bad"  # looks like an entry, has no entry.json
    broken.mkdir()
    (broken / "caller.wav").write_bytes(b"x")

    second = Spool(tmp_path, wall=lambda: 1010.0)
    assert [e.call_name for e in second.pending()] == [make_recording(i).call_sid for i in range(3)]
    assert (second.recovered, second.discarded, second.quarantined) == (3, 1, 1)
    assert second.nbytes == sum(e.nbytes for e in entries)
    assert second.oldest_age_s() == pytest.approx(10.0)  # wall clock: it still means something after a restart
    assert not any(p.name.startswith(TMP_PREFIX) for p in tmp_path.iterdir())
    assert (tmp_path / QUARANTINE / broken.name / "caller.wav").exists()  # kept for a human, not deleted


def test_remove_deletes_the_entry_and_max_bytes_refuses_what_does_not_fit(tmp_path: Path) -> None:
    size = sum(len(body) for _, body, _ in recording_objects(make_recording(0)))
    spool = Spool(tmp_path, max_bytes=size + size // 2)
    entry = spool.put(make_recording(0))
    with pytest.raises(SpoolFull):
        spool.put(make_recording(0))
    assert sorted(p.name for p in tmp_path.iterdir()) == [entry.id]  # the refused one left nothing behind
    spool.remove(entry)
    assert (spool.entries, spool.nbytes, list(tmp_path.iterdir())) == (0, 0, [])
    spool.put(make_recording(0))  # room again
    assert spool.entries == 1


def test_spool_config_defaults_and_validation() -> None:
    recording = parse_config({"providers": PROVIDERS}).recording
    assert (recording.spool.dir, recording.spool.max_bytes) == (None, None)
    assert (recording.spool.retry_initial_s, recording.spool.retry_max_s) == (0.5, 10.0)
    assert (recording.breaker.failure_threshold, recording.breaker.reset_after_s) == (3, 5.0)
    for bad, path in (
        ({"spool": {"retry_initial_s": 5, "retry_max_s": 1}}, "recording.spool"),
        ({"spool": {"max_bytes": 0}}, "recording.spool.max_bytes"),
        ({"spool": {"folder": "/tmp"}}, "recording.spool.folder"),
        ({"breaker": {"failure_threshold": 0}}, "recording.breaker.failure_threshold"),
    ):
        with pytest.raises(ConfigError) as caught:
            parse_config({"providers": PROVIDERS, "recording": bad})
        assert any(line.strip().startswith(f"{path}:") for line in str(caught.value).splitlines()), caught.value


# --- backoff and the uploader (manual clock, in-memory store) ----------------------------------------------------


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    top = Backoff(0.5, 4.0, rng=lambda: 1.0)
    assert [top.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    bottom = Backoff(0.5, 4.0, rng=lambda: 0.0)
    assert [bottom.next() for _ in range(4)] == [0.25, 0.5, 1.0, 2.0]  # never below half the step
    top.reset()
    assert top.next() == 0.5


class MemoryStore:
    """An object store in memory; ``fail(key)`` decides whether a put raises (as the S3 store would)."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.puts: list[str] = []
        self.fail: Callable[[str], str | None] = lambda key: None
        self.closed = False

    def key(self, call_name: str, obj: str) -> str:
        return f"recordings/{call_name}/{obj}"

    def put(self, key: str, body: bytes, content_type: str) -> None:
        self.puts.append(key)
        reason = self.fail(key)
        if reason is not None:
            raise RecordingUploadError(reason, key, "injected")
        self.objects[key] = body

    def close(self) -> None:
        self.closed = True


class Counted(NullSpoolObserver):
    def __init__(self) -> None:
        self.uploaded = 0
        self.failed: list[str] = []
        self.breaker: list[tuple[str, str]] = []

    def upload_succeeded(self, seconds: float, nbytes: int) -> None:
        self.uploaded += 1

    def upload_failed(self, reason: str, seconds: float) -> None:
        self.failed.append(reason)

    def recording_breaker_changed(self, old: str, new: str) -> None:
        self.breaker.append((old, new))


def uploader_for(spool: Spool, store: MemoryStore, clock: ManualClock, observer: Counted) -> SpoolUploader:
    return SpoolUploader(spool, store, clock=clock, retry_initial_s=0.5, retry_max_s=4.0, failure_threshold=3,
                         reset_after_s=10.0, observer=observer, rng=lambda: 1.0)


async def test_the_uploader_puts_meta_last_and_deletes_an_entry_only_once_all_objects_are_stored(
    tmp_path: Path,
) -> None:
    spool, store, clock, seen = Spool(tmp_path), MemoryStore(), ManualClock(), Counted()
    uploader = uploader_for(spool, store, clock, seen)
    first, second = make_recording(1), make_recording(2)
    spool.put(first)
    spool.put(second)
    store.fail = lambda key: "timeout" if key.endswith(f"{first.call_sid}/agent.wav") else None

    assert await uploader.step() == 0.5  # the first backoff step
    assert store.puts == [f"recordings/{first.call_sid}/caller.wav", f"recordings/{first.call_sid}/agent.wav"]
    assert spool.entries == 2  # caller.wav reached the store, but the entry stays whole until all objects do
    assert seen.failed == ["timeout"] and uploader.breaker.state is BreakerState.CLOSED

    store.fail = lambda key: None
    assert await uploader.step() == 0.0
    assert await uploader.step() == 0.0
    assert await uploader.step() is None  # empty
    assert store.puts[2:] == [f"recordings/{r.call_sid}/{name}" for r in (first, second) for name in OBJECTS]
    assert spool.entries == 0 and listing(tmp_path) == []
    for recording in (first, second):
        for name, body, _ in recording_objects(recording):
            assert store.objects[f"recordings/{recording.call_sid}/{name}"] == body
    assert seen.uploaded == 2


async def test_the_breaker_stops_calling_a_dead_store_then_lets_one_trial_through(tmp_path: Path) -> None:
    spool, store, clock, seen = Spool(tmp_path), MemoryStore(), ManualClock(), Counted()
    uploader = uploader_for(spool, store, clock, seen)
    for i in range(3):
        spool.put(make_recording(i))
    store.fail = lambda key: "timeout"  # the store is down

    delays = [await uploader.step()]
    clock.advance(delays[-1])
    delays.append(await uploader.step())
    clock.advance(delays[-1])
    delays.append(await uploader.step())  # the third failure in a row trips the breaker
    assert delays[:2] == [0.5, 1.0]  # capped exponential backoff
    assert uploader.breaker.state is BreakerState.OPEN and uploader.breaker.trips == 1
    assert delays[2] == pytest.approx(10.0)  # after the trip: wait for the half-open trial, not the backoff
    assert seen.breaker == [("closed", "open")]

    # open: no call reaches the store, however often the uploader looks
    calls = len(store.puts)
    clock.advance(4.0)  # 4 s into the 10 s the breaker stays open
    assert await uploader.step() == pytest.approx(6.0)
    assert len(store.puts) == calls

    # half-open: exactly one trial; it fails -> open again
    clock.advance(6.0)
    assert await uploader.step() == pytest.approx(10.0)
    assert len(store.puts) == calls + 1
    assert uploader.breaker.trips == 2

    # the store is back: the next trial closes the breaker and everything flows, oldest first
    store.fail = lambda key: None
    clock.advance(10.0)
    while (await uploader.step()) is not None:
        pass
    assert uploader.breaker.state is BreakerState.CLOSED
    assert seen.breaker[-2:] == [("open", "half_open"), ("half_open", "closed")]
    assert [k.split("/")[1] for k in store.puts[calls + 1 :: 3]] == [make_recording(i).call_sid for i in range(3)]
    assert spool.entries == 0 and seen.uploaded == 3 and seen.failed == ["timeout"] * 4


async def test_the_sink_returns_once_spooled_and_the_background_uploader_catches_up(tmp_path: Path) -> None:
    spool, store = Spool(tmp_path / "spool"), MemoryStore()
    store.fail = lambda key: "connection"
    uploader = SpoolUploader(spool, store, retry_initial_s=0.01, retry_max_s=0.05, failure_threshold=100)
    sink = SpoolingRecordingSink(spool, uploader)
    sink.start()
    try:
        for i in range(3):
            await sink.store(make_recording(i))  # returns while the store refuses everything
        assert spool.entries == 3
        await until(lambda: uploader.failures >= 2, "the uploader retries")
        store.fail = lambda key: None
        await until(lambda: spool.entries == 0, "the spool drains once the store answers")
    finally:
        await sink.stop()
    assert len(store.objects) == 9 and store.closed
    assert uploader.uploaded == 3


async def test_stopping_keeps_what_was_not_uploaded(tmp_path: Path) -> None:
    spool, store = Spool(tmp_path), MemoryStore()
    store.fail = lambda key: "timeout"
    sink = SpoolingRecordingSink(spool, SpoolUploader(spool, store, retry_initial_s=0.01, retry_max_s=0.02))
    sink.start()
    await sink.store(make_recording(7))
    await sink.stop(timeout_s=2.0)
    assert [e.call_name for e in Spool(tmp_path).pending()] == [make_recording(7).call_sid]


# --- the runtime against a stalling store ------------------------------------------------------------------------


class StallingProxy:
    """A TCP proxy in front of the object store that can stall the way Toxiproxy's ``timeout`` toxic does: while
    stalled, what the client sends is swallowed and never answered. ``stall_after_puts=k`` lets k PUT requests
    through, then stalls by itself; :meth:`release` closes the stalled connections and forwards again."""

    def __init__(self, upstream_url: str, *, stalled: bool = False, stall_after_puts: int | None = None) -> None:
        parts = urlsplit(upstream_url)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.stalled = stalled
        self.stall_after_puts = stall_after_puts
        self.puts = 0
        self.holding = asyncio.Event()  # set once a request was swallowed
        self.url = ""
        self._server: asyncio.Server | None = None
        self._held: list[asyncio.StreamWriter] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> StallingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def release(self) -> None:
        """The store answers again: stalled connections are closed (their clients see the failure) and new
        requests are forwarded."""
        self.stalled = False
        self.stall_after_puts = None
        for writer in self._held:
            writer.close()
        self._held.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.append(writer)
        held = False
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
            self._writers.append(up_writer)

            async def answers() -> None:
                while data := await up_reader.read(65536):
                    if not held:
                        writer.write(data)
                        await writer.drain()

            relay = asyncio.create_task(answers())
            try:
                while data := await reader.read(65536):
                    self.puts += data.count(b"PUT /")  # one request line per request (no pipelining)
                    if self.stall_after_puts is not None and self.puts > self.stall_after_puts:
                        self.stalled = True
                    if held or self.stalled:
                        if not held:
                            held = True
                            self._held.append(writer)
                        self.holding.set()
                        continue
                    up_writer.write(data)
                    await up_writer.drain()
            finally:
                relay.cancel()
                up_writer.close()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)


@pytest.fixture(scope="module")
def store() -> Iterator[StorageEndpoint]:
    with embedded_storage() as endpoint:
        yield endpoint


def through(proxy: StallingProxy, store: StorageEndpoint, **overrides: Any) -> dict[str, Any]:
    """The runtime's ``recording.s3`` section, through the proxy: one attempt per put and a read timeout long
    enough that an upload hangs for as long as the test looks at it."""
    return {**store.runtime_s3_config(url=proxy.url, connect_timeout_s=2.0, read_timeout_s=8.0, max_attempts=1),
            **overrides}


async def second_call_is_refused(s: Any) -> bool:
    """Whether the runtime turns a new call away: TwiML <Reject> at the webhook (and a stream closed with 1013)."""
    root = ET.fromstring(await webhook(s, sid="CA" + "2" * 32))
    if root.find("./Reject") is None:
        assert root.find("./Connect/Stream") is not None
        return False
    assert root.find("./Reject").get("reason") == "busy"
    async with connect(s.url.replace("http", "ws") + "/media") as ws:
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(STEP_TIMEOUT_S):
                await ws.recv()
        assert ws.close_code == 1013
    return True


@pytest.mark.e2e
async def test_broken_the_call_holds_its_slot_while_its_upload_hangs_so_the_next_call_is_rejected(
    store: StorageEndpoint,
) -> None:
    async with StallingProxy(store.url, stalled=True) as proxy, config_built_stack(
        capacity=1, recording={"s3": through(proxy, store)}, safeguards={"recording": "broken"}
    ) as s:
        caller = await TwilioSide.dial(s, n=0x61)
        await caller.listen(sentences=2)
        await caller.hang_up()
        async with asyncio.timeout(STEP_TIMEOUT_S):
            await proxy.holding.wait()  # the call's upload is in flight, stalled
        assert await second_call_is_refused(s)  # incident 1: no worker free for the next caller
        assert len(s.app[RUNTIME].admission.active) == 1
        proxy.release()  # the store fails the stalled request: the call gives up and frees its slot
        await s.idle()
        text = await s.metrics()
    assert metric(text, "runtime_recordings_total", outcome="lost") == 1.0
    assert metric(text, "runtime_calls_total", outcome="rejected_busy") == 1.0


@pytest.mark.e2e
async def test_fixed_the_slot_is_free_at_once_and_the_recording_is_uploaded_when_the_store_answers(
    store: StorageEndpoint, tmp_path: Path
) -> None:
    client = StorageClient.for_endpoint(store)
    spool_dir = tmp_path / "spool"
    try:
        async with StallingProxy(store.url, stalled=True) as proxy:
            recording = {"s3": through(proxy, store),
                         "spool": {"dir": str(spool_dir), "retry_initial_s": 0.1, "retry_max_s": 0.5},
                         "breaker": {"failure_threshold": 3, "reset_after_s": 0.5}}
            async with config_built_stack(capacity=1, recording=recording, safeguards={"recording": "fixed"}) as s:
                caller = await TwilioSide.dial(s, n=0x62)
                await caller.listen(sentences=2)
                await caller.hang_up()
                await s.idle()  # the slot is free: the call did not wait for the store
                async with asyncio.timeout(STEP_TIMEOUT_S):
                    await proxy.holding.wait()  # ...while its upload hangs in the background
                assert not await second_call_is_refused(s)
                async with s.http.get(f"{s.url}/readyz") as response:
                    assert response.status == 200
                during = await s.metrics()
                sink = s.app[RUNTIME].recording_sink
                assert isinstance(sink, SpoolingRecordingSink) and sink.spool.folder == spool_dir
                proxy.release()  # the outage ends
                await until(lambda: sink.spool.entries == 0, "the spooled recording is uploaded after the outage")
                after = await s.metrics()
        arrived = await client.recordings()
    finally:
        client.close()
    call_sid = f"CA{0x62:032x}"
    assert metric(during, "runtime_recordings_total", outcome="stored") == 1.0
    assert metric(during, "runtime_recordings_spooled_total") == 1.0
    assert metric(during, "runtime_recording_spool_entries") == 1.0
    assert metric(during, "runtime_recording_spool_bytes") > 0
    assert metric(during, "runtime_recording_store_seconds_sum") < 8.0  # not the store's read timeout
    assert metric(during, "runtime_recordings_uploaded_total") == 0.0
    assert is_complete(arrived[call_sid]) and len(arrived[call_sid]) == 3
    assert metric(after, "runtime_recordings_uploaded_total") == 1.0
    assert metric(after, "runtime_recording_spool_entries") == 0.0
    assert metric(after, "runtime_recording_spool_oldest_age_seconds") == 0.0
    assert metric(after, "runtime_recording_upload_errors_total", reason="connection") >= 1.0
    assert listing(spool_dir) == []
