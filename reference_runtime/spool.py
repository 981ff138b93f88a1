"""The durable recording spool and its background uploader: safeguard 1 (incident 1), the fixed way.

Why: a call worker must never wait on non-critical remote I/O. At call end the recording is written to local disk
(the call waits only for that) and the call frees its slot; a background task uploads the spooled recordings to the
object store, retrying with capped exponential backoff behind a circuit breaker, and deletes a recording from the
spool only once every one of its objects is stored. A stalled store then costs retries in the background, never a
call slot; and a process that dies loses nothing it had spooled: the next process on the same folder uploads it.

What "durable" means here (the contract :class:`Spool` keeps):

- an entry is one folder ``<spool>/<entry id>/`` holding the objects exactly as they will be uploaded
  (``caller.wav``, ``agent.wav``, ``meta.json``) and ``entry.json`` (the call's name in the store, when it was
  spooled). Entry ids sort oldest first;
- it is written as ``<spool>/.tmp-<entry id>/``, every file fsynced, then renamed into place and the spool folder
  fsynced: a folder without the ``.tmp-`` prefix is a complete entry, and it survives a crash (or a power cut)
  once :meth:`Spool.put` has returned;
- it is deleted only after all its objects were uploaded (``meta.json`` last), and by renaming it back to
  ``.tmp-`` first, so a half-deleted entry never looks complete;
- at start, ``.tmp-`` folders (a write or a delete that was cut short) are removed, complete entries are queued
  for upload oldest first, and an entry that cannot be read is moved to ``.quarantine/`` (kept and logged).

An upload cut short by a crash is done again from the start: the object keys are the call's own
(``<prefix>/<call_sid>/...``), so the second upload overwrites the same objects and the store ends up holding each
recording exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import random
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

from harness.clock import Clock, MonotonicClock
from reference_runtime.breaker import BreakerState, CircuitBreaker
from reference_runtime.config import RecordingConfig
from reference_runtime.recording import (
    AGENT_OBJECT,
    CALLER_OBJECT,
    META_OBJECT,
    NullRecordingObserver,
    Recording,
    RecordingObserver,
    RecordingUploadError,
    S3ObjectStore,
    recording_name,
    recording_objects,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

ENTRY_FILE = "entry.json"
TMP_PREFIX = ".tmp-"
QUARANTINE = ".quarantine"
#: upload order: ``meta.json`` last, so that its presence in the store means "complete"
OBJECTS = (CALLER_OBJECT, AGENT_OBJECT, META_OBJECT)
CONTENT_TYPES = {CALLER_OBJECT: "audio/wav", AGENT_OBJECT: "audio/wav", META_OBJECT: "application/json"}


class SpoolFull(Exception):
    """The spool holds ``max_bytes`` already: the recording is refused (the call counts it lost)."""


class SpoolEntryError(Exception):
    """An entry on disk that cannot be read (missing or corrupt files): it is quarantined, not retried."""


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    id: str
    """the entry's folder name; ids sort oldest first"""
    call_name: str
    """the call's folder in the store (:func:`~reference_runtime.recording.recording_name`)"""
    spooled_at: float
    """wall-clock seconds (epoch): unlike the monotonic clock, it still means something to the next process"""
    nbytes: int
    """bytes of the objects to upload"""


def _fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (POSIX: the directory entry lives in the directory)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


class Spool:
    """The spool folder and an index of its complete entries. Thread-safe: calls write from a writer thread while
    the uploader reads and deletes from its own."""

    def __init__(
        self, folder: str | Path, *, max_bytes: int | None = None, wall: Callable[[], float] = time.time
    ) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self._wall = wall
        self._lock = threading.Lock()
        self._entries: dict[str, SpoolEntry] = {}  # insertion order = id order = oldest first
        self._bytes = 0
        self._reserved = 0  # bytes being written (counted against max_bytes before they land)
        self._sequence = itertools.count()
        self._token = secrets.token_hex(3)  # this process's: ids stay unique across processes sharing the folder
        self.recovered = 0
        self.discarded = 0
        self.quarantined = 0
        self.folder.mkdir(parents=True, exist_ok=True)
        self._recover()

    # --- state ---------------------------------------------------------------------------------------------------

    @property
    def entries(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes

    def oldest(self) -> SpoolEntry | None:
        with self._lock:
            return next(iter(self._entries.values()), None)

    def pending(self) -> list[SpoolEntry]:
        with self._lock:
            return list(self._entries.values())

    def oldest_age_s(self) -> float:
        """Seconds the oldest entry has waited (0 when empty): how far uploads lag behind calls."""
        oldest = self.oldest()
        return 0.0 if oldest is None else max(0.0, self._wall() - oldest.spooled_at)

    # --- writing -------------------------------------------------------------------------------------------------

    def put(self, recording: Recording) -> SpoolEntry:
        """Encode and spool one recording; blocking (file I/O and fsync: call it from a worker thread). Returns once
        the entry is durable; raises :class:`SpoolFull` or ``OSError`` (nothing is left behind then)."""
        return self.put_objects(recording_name(recording), recording_objects(recording))

    def put_objects(self, call_name: str, objects: list[tuple[str, bytes, str]]) -> SpoolEntry:
        bodies = {name: body for name, body, _ in objects}
        if set(bodies) != set(OBJECTS):
            raise ValueError(f"a spool entry holds exactly {OBJECTS}, got {sorted(bodies)}")
        nbytes = sum(len(body) for body in bodies.values())
        spooled_at = self._wall()
        with self._lock:
            if self.max_bytes is not None and self._bytes + self._reserved + nbytes > self.max_bytes:
                raise SpoolFull(
                    f"spool {self.folder} holds {self._bytes} of {self.max_bytes} bytes; {call_name} needs {nbytes}"
                )
            self._reserved += nbytes
            entry_id = f"{int(spooled_at * 1e9):020d}-{next(self._sequence):08d}-{self._token}"
        entry = SpoolEntry(entry_id, call_name, spooled_at, nbytes)
        tmp = self.folder / f"{TMP_PREFIX}{entry_id}"
        try:
            tmp.mkdir()
            for name in OBJECTS:
                _write_durably(tmp / name, bodies[name])
            meta = {"call_name": call_name, "spooled_at": spooled_at, "nbytes": nbytes}
            _write_durably(tmp / ENTRY_FILE, json.dumps(meta).encode("utf-8"))
            _fsync_dir(tmp)
            os.rename(tmp, self.folder / entry_id)  # atomic: the entry appears complete or not at all
            _fsync_dir(self.folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            with self._lock:
                self._reserved -= nbytes
            raise
        with self._lock:
            self._reserved -= nbytes
            self._entries[entry_id] = entry
            self._bytes += nbytes
        return entry

    # --- reading and removing ------------------------------------------------------------------------------------

    def read(self, entry: SpoolEntry) -> list[tuple[str, bytes, str]]:
        """The entry's objects in upload order, ``(object name, body, content type)``; blocking."""
        try:
            return [(name, (self.folder / entry.id / name).read_bytes(), CONTENT_TYPES[name]) for name in OBJECTS]
        except OSError as error:
            raise SpoolEntryError(f"spool entry {entry.id} ({entry.call_name}): {error}") from error

    def remove(self, entry: SpoolEntry) -> None:
        """Delete an uploaded entry; blocking. Renamed to ``.tmp-`` first: a crash mid-delete leaves a folder the
        next start discards, never a partial entry that looks complete."""
        path = self.folder / entry.id
        doomed = self.folder / f"{TMP_PREFIX}{entry.id}"
        try:
            os.rename(path, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
        except FileNotFoundError:
            pass
        except OSError as error:
            # uploaded but still on disk: the next process uploads it again (same keys, so no duplicate)
            log.error("recording spool: cannot delete uploaded entry %s: %s", entry.id, error)
        self._forget(entry)

    def quarantine(self, entry: SpoolEntry) -> None:
        """Move an unreadable entry aside (kept for a human, never retried, never silently deleted)."""
        self._quarantine_path(self.folder / entry.id)
        self._forget(entry)

    def _forget(self, entry: SpoolEntry) -> None:
        with self._lock:
            if self._entries.pop(entry.id, None) is not None:
                self._bytes -= entry.nbytes

    def _quarantine_path(self, path: Path) -> None:
        target = self.folder / QUARANTINE
        try:
            target.mkdir(exist_ok=True)
            os.rename(path, target / path.name)
        except OSError as error:
            log.error("recording spool: cannot quarantine %s: %s", path, error)
        self.quarantined += 1

    # --- start-up ------------------------------------------------------------------------------------------------

    def _recover(self) -> None:
        """Index what a previous process left: complete entries (queued oldest first), interrupted writes or deletes
        (removed), unreadable entries (quarantined)."""
        found: list[SpoolEntry] = []
        for path in sorted(self.folder.iterdir()):
            if path.name == QUARANTINE or not path.is_dir():
                continue
            if path.name.startswith(TMP_PREFIX):
                shutil.rmtree(path, ignore_errors=True)
                self.discarded += 1
                continue
            try:
                meta = json.loads((path / ENTRY_FILE).read_text(encoding="utf-8"))
                nbytes = sum((path / name).stat().st_size for name in OBJECTS)
                found.append(SpoolEntry(path.name, str(meta["call_name"]), float(meta["spooled_at"]), nbytes))
            except (OSError, ValueError, KeyError, TypeError) as error:
                log.error("recording spool: unreadable entry %s moved to %s: %s", path.name, QUARANTINE, error)
                self._quarantine_path(path)
        with self._lock:
            for entry in found:
                self._entries[entry.id] = entry
                self._bytes += entry.nbytes
        self.recovered = len(found)
        if found or self.discarded:
            log.warning(
                "recording spool %s: %d recording(s) (%d bytes) left by a previous process, queued for upload; "
                "%d interrupted write(s) discarded",
                self.folder, len(found), self._bytes, self.discarded,
            )


# --- the background uploader -------------------------------------------------------------------------------------


class ObjectStore(Protocol):
    """Where the uploader puts objects (blocking; it runs in the uploader's thread). Raises
    :class:`~reference_runtime.recording.RecordingUploadError` with a metric ``reason`` when a put fails."""

    def key(self, call_name: str, obj: str) -> str: ...

    def put(self, key: str, body: bytes, content_type: str) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class SpoolObserver(RecordingObserver, Protocol):
    """The runtime's metrics, as the spool and its uploader report to them (beside each upload's outcome)."""

    def spooled(self, nbytes: int) -> None: ...

    def spool_refused(self, reason: str) -> None: ...

    def recording_breaker_changed(self, old: str, new: str) -> None: ...

    def watch_spool(self, spool: Spool) -> None: ...


class NullSpoolObserver(NullRecordingObserver):
    def spooled(self, nbytes: int) -> None:
        return None

    def spool_refused(self, reason: str) -> None:
        return None

    def recording_breaker_changed(self, old: str, new: str) -> None:
        return None

    def watch_spool(self, spool: Spool) -> None:
        return None


class Backoff:
    """Capped exponential backoff with jitter: the n-th wait is drawn from ``[d/2, d]`` with
    ``d = min(max_s, initial_s * 2**n)`` ("equal jitter": never shorter than half the step, so the store gets its
    rest, and spread so that runtimes recovering together do not retry in lockstep)."""

    def __init__(self, initial_s: float, max_s: float, *, rng: Callable[[], float] = random.random) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self._rng = rng
        self.failures = 0

    def next(self) -> float:
        step = min(self.max_s, self.initial_s * 2 ** min(self.failures, 62))
        self.failures += 1
        return step / 2 + self._rng() * step / 2

    def reset(self) -> None:
        self.failures = 0


def _settle(future: asyncio.Future[T], result: T | None, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]


def in_daemon_thread(fn: Callable[..., T], *args: object) -> asyncio.Future[T]:
    """Run ``fn(*args)`` in a new daemon thread; await the result. Not an executor's worker: the interpreter joins
    those at exit, so an upload stalled on a dead store would hold a stopping (or drained) process for its whole
    read timeout. A daemon thread dies with the process, and its entry, not yet deleted, stays in the spool."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def target() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = fn(*args)
        except BaseException as caught:  # handed to the awaiting task, not swallowed
            error = caught
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody awaits any more
            loop.call_soon_threadsafe(_settle, future, result, error)

    threading.Thread(target=target, name="spool-upload", daemon=True).start()
    return future


class SpoolUploader:
    """Uploads spooled entries one at a time, oldest first, in a daemon thread (never the event loop, never
    asyncio's default executor). :meth:`step` is one decision (skip while the breaker is open, or one upload
    attempt) and returns how long to wait before the next: tests drive it with a manual clock; :meth:`run` loops
    it in the background."""

    def __init__(
        self,
        spool: Spool,
        store: ObjectStore,
        *,
        clock: Clock | None = None,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 10.0,
        failure_threshold: int = 3,
        reset_after_s: float = 5.0,
        observer: SpoolObserver | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.spool = spool
        self.store = store
        self._clock = clock or MonotonicClock()
        self._observer = observer or NullSpoolObserver()
        self.backoff = Backoff(retry_initial_s, retry_max_s, rng=rng)
        self.breaker = CircuitBreaker(
            "recording-upload",
            clock=self._clock,
            failure_threshold=failure_threshold,
            reset_after_s=reset_after_s,
            on_change=self._breaker_changed,
        )
        self._opened_at = 0.0
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.uploaded = 0
        self.failures = 0

    def _breaker_changed(self, name: str, old: BreakerState, new: BreakerState) -> None:
        if new is BreakerState.OPEN:
            self._opened_at = self._clock.now()
            log.warning("recording uploads: breaker open, the store is left alone for %.1f s",
                        self.breaker.reset_after_s)
        elif new is BreakerState.CLOSED:
            log.info("recording uploads: breaker closed, the store answers again")
        self._observer.recording_breaker_changed(str(old), str(new))

    def _until_half_open(self) -> float:
        if self.breaker.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.breaker.reset_after_s - self._clock.now())

    def wake(self) -> None:
        """A new entry was spooled (call from the event loop). Ends an idle wait, never a backoff."""
        self._wake.set()

    async def step(self) -> float | None:
        """One upload decision. Returns the seconds to wait before the next step, ``None`` when the spool is
        empty."""
        entry = self.spool.oldest()
        if entry is None:
            return None
        if self.breaker.state is BreakerState.OPEN:
            return self._until_half_open()  # don't hammer a dead store: wait for the half-open trial
        try:
            objects = await in_daemon_thread(self.spool.read, entry)
        except SpoolEntryError as error:
            log.error("recording spool: %s; moved to %s", error, QUARANTINE)
            self.spool.quarantine(entry)
            return 0.0
        if not self.breaker.allow():
            return self._until_half_open()
        started = self._clock.now()
        try:
            await in_daemon_thread(self._upload, entry, objects)
        except Exception as error:  # every failure is the store's until proven otherwise: retry later
            reason = error.reason if isinstance(error, RecordingUploadError) else "error"
            if not isinstance(error, RecordingUploadError):
                log.exception("recording %s: upload failed unexpectedly", entry.call_name)
            self.failures += 1
            self.breaker.failure()
            self._observer.upload_failed(reason, self._clock.now() - started)
            delay = max(self.backoff.next(), self._until_half_open())
            log.warning("recording %s: upload failed (%s), %d waiting; next try in %.1f s",
                        entry.call_name, reason, self.spool.entries, delay)
            return delay
        self.breaker.success()
        self.backoff.reset()
        self.uploaded += 1
        self._observer.upload_succeeded(self._clock.now() - started, entry.nbytes)
        return 0.0

    def _upload(self, entry: SpoolEntry, objects: list[tuple[str, bytes, str]]) -> None:
        """In the uploader thread: every object in order (``meta.json`` last), then delete the entry. The first
        failure raises and leaves the entry whole in the spool."""
        for name, body, content_type in objects:
            self.store.put(self.store.key(entry.call_name, name), body, content_type)
        self.spool.remove(entry)

    async def run(self) -> None:
        """Upload until stopped: at once while entries wait, after the backoff when the store failed, and on
        :meth:`wake` when the spool was empty."""
        while not self._stop.is_set():
            delay = await self.step()
            if delay is None:
                self._wake.clear()
                if self.spool.oldest() is None:  # re-check: an entry may have landed before the clear
                    await self._wait_for(self._wake, None)
            elif delay > 0:
                await self._wait_for(self._stop, delay)

    async def _wait_for(self, event: asyncio.Event, timeout: float | None) -> None:
        waiters = {asyncio.ensure_future(event.wait()), asyncio.ensure_future(self._stop.wait())}
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def start(self) -> None:
        if self._task is None:
            pending = self.spool.entries
            if pending:
                log.info("recording uploads: %d spooled recording(s) to upload", pending)
            self._task = asyncio.create_task(self.run(), name="recording-uploader")

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Graceful stop (SIGTERM, drain): an upload in flight gets ``timeout_s`` to finish; whatever is not
        uploaded stays in the spool for the next process. Nothing is deleted that was not stored."""
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout=timeout_s)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        # an upload thread still blocked on a stalled store ends at its own timeout or with the process; either way
        # its entry stays spooled unless the upload completed
        self.store.close()
        left = self.spool.entries
        if left:
            log.warning("recording uploads stopped: %d recording(s) (%d bytes) stay in %s for the next process",
                        left, self.spool.nbytes, self.spool.folder)


# --- the sink a call hands its recording to ----------------------------------------------------------------------


class SpoolingRecordingSink:
    """The fixed way of incident 1: ``store`` returns once the recording is durable in the local spool; the upload
    happens later, in the background. Spool writes run in this sink's own small thread pool."""

    def __init__(
        self,
        spool: Spool,
        uploader: SpoolUploader,
        *,
        observer: SpoolObserver | None = None,
        temporary: bool = False,
    ) -> None:
        self.spool = spool
        self.uploader = uploader
        self._observer = observer or NullSpoolObserver()
        self._writers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="spool-write")
        self._temporary = temporary
        self._observer.watch_spool(spool)

    async def store(self, recording: Recording) -> None:
        loop = asyncio.get_running_loop()
        try:
            entry = await loop.run_in_executor(self._writers, self.spool.put, recording)
        except SpoolFull:
            self._observer.spool_refused("full")
            raise
        except OSError:
            self._observer.spool_refused("io_error")
            raise
        self._observer.spooled(entry.nbytes)
        self.uploader.wake()

    def start(self) -> None:
        """Start the background uploader (inside the running loop); it begins with what an earlier process left."""
        self.uploader.start()

    async def stop(self, timeout_s: float = 5.0) -> None:
        await self.uploader.stop(timeout_s)
        await asyncio.to_thread(self._writers.shutdown, True)  # let spool writes in progress land
        if self._temporary:
            with contextlib.suppress(OSError):
                (self.spool.folder / QUARANTINE).rmdir()
            with contextlib.suppress(OSError):
                self.spool.folder.rmdir()  # only when empty: spooled recordings are never deleted unsent

    def close(self) -> None:
        """Synchronous release for callers outside the loop (tests); prefer :meth:`stop`."""
        self._writers.shutdown(wait=False)


def build_spooling_sink(
    config: RecordingConfig, *, observer: RecordingObserver | None = None, clock: Clock | None = None
) -> SpoolingRecordingSink:
    """The fixed-mode sink for ``recording.s3``: the spool folder from ``recording.spool.dir`` (or a fresh
    temporary one), an uploader to the S3 store, the breaker from ``recording.breaker``."""
    assert config.s3 is not None
    spool_observer = observer if isinstance(observer, SpoolObserver) else None
    temporary = config.spool.dir is None
    if temporary:
        folder = tempfile.mkdtemp(prefix="voicechaos-spool-")
        log.warning(
            "recording.spool.dir is not set: spooling to %s, a new temporary folder. Recordings left there at exit "
            "are kept but only a process configured with that folder uploads them; set recording.spool.dir so a "
            "restarted runtime picks them up", folder,
        )
    else:
        folder = config.spool.dir
    spool = Spool(folder, max_bytes=config.spool.max_bytes)
    uploader = SpoolUploader(
        spool,
        S3ObjectStore(config.s3, max_pool_connections=2),
        clock=clock,
        retry_initial_s=config.spool.retry_initial_s,
        retry_max_s=config.spool.retry_max_s,
        failure_threshold=config.breaker.failure_threshold,
        reset_after_s=config.breaker.reset_after_s,
        observer=spool_observer,
    )
    return SpoolingRecordingSink(spool, uploader, observer=spool_observer, temporary=temporary)
