"""The harness's object store: an embedded S3 server for the runtime's call recordings, and the client that counts
what arrived.

Incident 1 (workers blocked uploading recordings to a stalled object store) needs a real store to stall. The
embedded default is moto's S3 server in a child process, started like the other services::

    python -m harness.storage serve --host 127.0.0.1 --port 0 --bucket voicechaos-recordings
    # -> {"event": "listening", "name": "storage", "url": "http://127.0.0.1:PORT"}

The bucket exists before the line is printed, so the runtime's first upload never meets ``NoSuchBucket``.
SIGTERM/SIGINT stop it (exit 0). It binds loopback addresses only: it accepts any credentials and keeps
everything in memory, which is fine for a test run and nothing else.

At the end of a run :class:`StorageClient` lists the bucket: ``recordings()`` maps each call (the first key
segment under the prefix) to its object keys, and ``is_complete`` tells a whole recording from a partial one. The
layout is the reference runtime's (``reference_runtime/recording.py``), and any runtime that files recordings as
``<prefix>/<call_sid>/...`` can be counted the same way::

    <prefix>/<call_sid>/caller.wav, agent.wav, meta.json   (meta.json last: its presence means "complete")

Every request has explicit timeouts and a bounded number of attempts: a harness that hangs on a stalled store
would be the incident it is meant to measure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import ipaddress
import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger(__name__)

#: what the embedded store and the runtime it serves agree on (moto accepts any credentials; these are labels).
DEFAULT_BUCKET = "voicechaos-recordings"
DEFAULT_REGION = "us-east-1"
DEFAULT_PREFIX = "recordings"
EMBEDDED_ACCESS_KEY_ID = "voicechaos"
EMBEDDED_SECRET_ACCESS_KEY = "voicechaos-secret"
#: the objects of one complete recording (reference runtime layout).
RECORDING_OBJECTS = ("caller.wav", "agent.wav", "meta.json")
#: written last by the runtime: its presence marks a recording whose upload finished.
COMPLETE_MARKER = "meta.json"


class StorageError(RuntimeError):
    """The store could not be reached or refused a request; the message says which request and why."""


def is_complete(keys: Iterable[str]) -> bool:
    """Whether one call's keys include the marker object the runtime writes last."""
    return any(key.rsplit("/", 1)[-1] == COMPLETE_MARKER for key in keys)


def group_by_call(keys: Iterable[str], prefix: str = DEFAULT_PREFIX) -> dict[str, list[str]]:
    """``<prefix>/<call_sid>/<object>`` keys -> ``{call_sid: [keys, sorted]}``. Keys outside the prefix, or with
    no object under a call folder, are not recordings and are left out. Pure, so the layout is tested without a
    store."""
    folder = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    calls: dict[str, list[str]] = {}
    for key in keys:
        if not key.startswith(folder):
            continue
        call_sid, slash, obj = key[len(folder) :].partition("/")
        if call_sid and slash and obj:
            calls.setdefault(call_sid, []).append(key)
    return {call_sid: sorted(found) for call_sid, found in sorted(calls.items())}


@dataclass(frozen=True)
class StorageEndpoint:
    """Where recordings go: what the harness lists and what it tells the runtime."""

    url: str
    bucket: str = DEFAULT_BUCKET
    region: str = DEFAULT_REGION
    access_key_id: str = EMBEDDED_ACCESS_KEY_ID
    secret_access_key: str = EMBEDDED_SECRET_ACCESS_KEY
    prefix: str = DEFAULT_PREFIX

    def runtime_s3_config(
        self,
        *,
        url: str | None = None,
        connect_timeout_s: float = 1.0,
        read_timeout_s: float = 2.0,
        max_attempts: int = 2,
    ) -> dict[str, Any]:
        """The reference runtime's ``recording.s3`` section for this store. ``url`` replaces the endpoint the
        runtime uses (a Toxiproxy listener in front of the store) while the harness keeps listing the store
        itself. The timeouts are short because a chaos run wants a stalled store to show as failed uploads within
        seconds, not after botocore's 60 s defaults."""
        return {
            "endpoint_url": url or self.url,
            "bucket": self.bucket,
            "region": self.region,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "key_prefix": self.prefix,
            "connect_timeout_s": connect_timeout_s,
            "read_timeout_s": read_timeout_s,
            "max_attempts": max_attempts,
        }


class StorageClient:
    """The harness's view of the bucket, async-friendly: each boto3 request runs in a worker thread, bounded by
    ``timeout_s`` per connect and per read and by ``max_attempts``.

        client = StorageClient(endpoint.url, endpoint.bucket)
        await client.ensure_bucket()
        ...                                  # the run
        arrived = await client.recordings()  # {call_sid: [keys]}
        client.close()
    """

    def __init__(
        self,
        endpoint_url: str,
        bucket: str = DEFAULT_BUCKET,
        *,
        region: str = DEFAULT_REGION,
        access_key_id: str = EMBEDDED_ACCESS_KEY_ID,
        secret_access_key: str = EMBEDDED_SECRET_ACCESS_KEY,
        prefix: str = DEFAULT_PREFIX,
        timeout_s: float = 5.0,
        max_attempts: int = 2,
        page_size: int = 1000,
    ) -> None:
        self.endpoint_url = endpoint_url
        self.page_size = page_size
        self.bucket = bucket
        self.region = region
        self.prefix = prefix
        session = boto3.session.Session(
            aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key, region_name=region
        )
        self._client = session.client(
            "s3",
            endpoint_url=endpoint_url,
            config=BotoConfig(
                connect_timeout=timeout_s,
                read_timeout=timeout_s,
                retries={"total_max_attempts": max_attempts, "mode": "standard"},
                s3={"addressing_style": "path"},  # a loopback endpoint has no per-bucket host names
            ),
        )

    @classmethod
    def for_endpoint(cls, endpoint: StorageEndpoint, **kwargs: Any) -> StorageClient:
        return cls(
            endpoint.url,
            endpoint.bucket,
            region=endpoint.region,
            access_key_id=endpoint.access_key_id,
            secret_access_key=endpoint.secret_access_key,
            prefix=endpoint.prefix,
            **kwargs,
        )

    async def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (idempotent)."""
        await asyncio.to_thread(self._ensure_bucket)

    async def keys(self, prefix: str | None = None) -> list[str]:
        """Every key under ``prefix`` (default: the recordings prefix), all pages."""
        return await asyncio.to_thread(self._keys, self.prefix if prefix is None else prefix)

    async def recordings(self) -> dict[str, list[str]]:
        """What arrived, per call: ``{call_sid: [keys]}``; a call whose upload failed part-way has fewer keys
        (check it with :func:`is_complete`)."""
        return group_by_call(await self.keys(), self.prefix)

    async def get(self, key: str) -> bytes:
        return await asyncio.to_thread(self._get, key)

    def close(self) -> None:
        self._client.close()

    # --- the blocking side (worker threads) ----------------------------------------------------------------

    def _ensure_bucket(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as error:
            if _status(error) != 404:
                raise StorageError(f"{self.endpoint_url}: HEAD bucket {self.bucket}: {error}") from error
        except BotoCoreError as error:  # timeouts, refused connections
            raise StorageError(f"{self.endpoint_url}: HEAD bucket {self.bucket}: {error!r}") from error
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if self.region != "us-east-1":  # S3 rejects an explicit us-east-1 LocationConstraint
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self._client.create_bucket(**kwargs)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code")
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise StorageError(f"{self.endpoint_url}: create bucket {self.bucket}: {error}") from error
        except BotoCoreError as error:
            raise StorageError(f"{self.endpoint_url}: create bucket {self.bucket}: {error!r}") from error

    def _keys(self, prefix: str) -> list[str]:
        folder = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        keys: list[str] = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=folder, PaginationConfig={"PageSize": self.page_size}
            )
            for page in pages:
                keys.extend(item["Key"] for item in page.get("Contents", []))
        except (BotoCoreError, ClientError) as error:
            raise StorageError(f"{self.endpoint_url}: list {self.bucket}/{folder}: {error!r}") from error
        return keys

    def _get(self, key: str) -> bytes:
        try:
            body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"]
            try:
                return bytes(body.read())
            finally:
                body.close()
        except (BotoCoreError, ClientError) as error:
            raise StorageError(f"{self.endpoint_url}: get {self.bucket}/{key}: {error!r}") from error


def _status(error: ClientError) -> int | None:
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status if isinstance(status, int) else None


# --- the embedded server ----------------------------------------------------------------------------------------


def serve_argv(*, bucket: str = DEFAULT_BUCKET, host: str = "127.0.0.1", port: int = 0) -> list[str]:
    """The command that starts the embedded store (for the stack to spawn)."""
    return [sys.executable, "-m", "harness.storage", "serve", "--host", host, "--port", str(port), "--bucket", bucket]


@contextlib.contextmanager
def embedded_storage(bucket: str = DEFAULT_BUCKET, *, ready_timeout_s: float = 30.0) -> Iterator[StorageEndpoint]:
    """Run ``python -m harness.storage serve`` for the duration of the block (tests, scripts); yields where it
    listens. Its stderr is this process's. Stops only the process it started, by its PID (SIGTERM, then SIGKILL
    after 5 s); on Linux the child also gets SIGTERM if this process dies first. The harness's stack spawns the
    same command with its own service bookkeeping (:func:`serve_argv`)."""
    process = subprocess.Popen(
        serve_argv(bucket=bucket),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=_die_with_parent(),
    )
    try:
        assert process.stdout is not None
        url = _listening_url(process, process.stdout, ready_timeout_s)
        yield StorageEndpoint(url=url, bucket=bucket)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux for a SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG), so a test run
    killed hard leaves no store behind; ``None`` where there is no prctl. libc is loaded here, in the parent: after
    fork only the one async-signal-safe call runs (``find_library`` may even start a subprocess)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG (linux/prctl.h)

    return preexec


def _listening_url(process: subprocess.Popen[bytes], stdout: Any, timeout_s: float) -> str:
    """Read the child's stdout until its ``listening`` line, with a deadline (never a bare blocking read)."""
    deadline = time.monotonic() + timeout_s
    buffered = b""
    with selectors.DefaultSelector() as selector:
        selector.register(stdout, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if not selector.select(timeout=left):
                continue
            chunk = os.read(stdout.fileno(), 4096)
            if not chunk:
                raise StorageError(f"the storage server exited with code {process.wait()} before it was ready")
            buffered += chunk
            while b"\n" in buffered:
                line, buffered = buffered.split(b"\n", 1)
                with contextlib.suppress(json.JSONDecodeError):
                    message = json.loads(line)
                    if isinstance(message, dict) and message.get("event") == "listening":
                        return str(message["url"])
    raise StorageError(f"the storage server did not report listening within {timeout_s:g} s")


def _require_loopback(host: str) -> None:
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SystemExit(f"harness.storage: refusing to listen on {host!r}: the embedded store is loopback only")


def serve(host: str, port: int, buckets: Sequence[str]) -> int:
    """Run moto's S3 server until SIGTERM/SIGINT; prints the ``listening`` line once the buckets exist."""
    # moto's own app and request handler, on a werkzeug server made here in the main thread rather than through
    # ThreadedMotoServer: its start() waits forever when the bind fails in its thread, where make_server here
    # ends the process at once (a taken port: werkzeug says so and exits 1; other socket errors: exit 2).
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    # Block the stop signals in every thread (the server threads inherit the mask) and take them with
    # sigwait in this one: no handler races with the server's own threads.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    try:
        server = make_server(
            host,
            port,
            DomainDispatcherApplication(create_backend_app),
            threaded=True,
            request_handler=MotoRequestHandler,
        )
    except OSError as error:
        print(f"harness.storage: cannot listen on {host}:{port}: {error}", file=sys.stderr)
        return 2
    bound_host, bound_port = server.server_address[:2]
    shown = f"[{bound_host}]" if ":" in str(bound_host) else str(bound_host)
    url = f"http://{shown}:{bound_port}"
    thread = threading.Thread(target=server.serve_forever, name="moto-s3", daemon=True)
    thread.start()
    try:
        for bucket in buckets:  # before anyone else knows the URL
            client = StorageClient(url, bucket, timeout_s=5.0)
            try:
                client._ensure_bucket()
            finally:
                client.close()
    except StorageError as error:
        print(f"harness.storage: {error}", file=sys.stderr)
        server.shutdown()
        return 2
    print(json.dumps({"event": "listening", "name": "storage", "url": url}), flush=True)
    received = signal.sigwait(stop_signals)
    log.info("stopping on %s", signal.Signals(received).name)
    server.shutdown()
    thread.join(timeout=5.0)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.storage", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the embedded S3 store (moto) on loopback")
    serve_cmd.add_argument("--host", default="127.0.0.1", help="a loopback address (default 127.0.0.1)")
    serve_cmd.add_argument("--port", type=int, default=0, help="0 = any free port (default)")
    serve_cmd.add_argument(
        "--bucket", action="append", default=None, help=f"create this bucket at startup (repeatable; default "
        f"{DEFAULT_BUCKET})"
    )
    serve_cmd.add_argument("--log-level", default="WARNING", help="WARNING hides the per-request access log")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # werkzeug gives its logger INFO (and a handler) when it finds it unset: set it, or every request is logged.
    logging.getLogger("werkzeug").setLevel(args.log_level.upper())
    _require_loopback(args.host)
    return serve(args.host, args.port, args.bucket or [DEFAULT_BUCKET])


if __name__ == "__main__":
    sys.exit(main())
