"""The harness's object store: the embedded moto server (``python -m harness.storage serve``) starts on loopback,
prints its ``listening`` line with the bucket already made, and :class:`StorageClient` lists what arrived, per
call. The layout rules are pure functions, tested without a server."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import boto3
import pytest
from botocore.config import Config as BotoConfig

from harness.storage import (
    DEFAULT_BUCKET,
    StorageClient,
    StorageEndpoint,
    StorageError,
    embedded_storage,
    group_by_call,
    is_complete,
    main,
)
from reference_runtime.config import S3StorageConfig

CALL_A = "CA" + "a" * 32
CALL_B = "CA" + "b" * 32


@pytest.fixture(scope="module")
def store() -> Iterator[StorageEndpoint]:
    with embedded_storage() as endpoint:
        yield endpoint


def put(endpoint: StorageEndpoint, bucket: str, *keys: str) -> None:
    """Objects written as the runtime would, with a plain boto3 client (the listing must not depend on ours)."""
    client = boto3.session.Session(
        aws_access_key_id=endpoint.access_key_id,
        aws_secret_access_key=endpoint.secret_access_key,
        region_name=endpoint.region,
    ).client(
        "s3",
        endpoint_url=endpoint.url,
        config=BotoConfig(connect_timeout=5, read_timeout=5, s3={"addressing_style": "path"}),
    )
    try:
        for key in keys:
            client.put_object(Bucket=bucket, Key=key, Body=b"x")
    finally:
        client.close()


def free_port() -> int:
    """A loopback port nobody listens on (bound, then released: connecting to it is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the layout (pure) ------------------------------------------------------------------------------------------


def test_keys_are_grouped_by_the_call_folder_under_the_prefix() -> None:
    keys = [
        f"recordings/{CALL_B}/meta.json",
        f"recordings/{CALL_A}/caller.wav",
        f"recordings/{CALL_A}/agent.wav",
        f"recordings/{CALL_B}/caller.wav",
        "recordings/stray.txt",  # not in a call folder
        "other/CA1/caller.wav",  # another prefix
        f"recordings/{CALL_A}/",  # a "folder" object, nothing in it
    ]
    assert group_by_call(keys) == {
        CALL_A: [f"recordings/{CALL_A}/agent.wav", f"recordings/{CALL_A}/caller.wav"],
        CALL_B: [f"recordings/{CALL_B}/caller.wav", f"recordings/{CALL_B}/meta.json"],
    }
    assert group_by_call(["CA1/caller.wav", "CA1/meta.json", "loose"], prefix="") == {
        "CA1": ["CA1/caller.wav", "CA1/meta.json"]
    }
    assert group_by_call(["a/b/CA1/meta.json"], prefix="/a/b/") == {"CA1": ["a/b/CA1/meta.json"]}


def test_a_recording_is_complete_once_its_metadata_object_is_there() -> None:
    assert is_complete([f"recordings/{CALL_A}/caller.wav", f"recordings/{CALL_A}/meta.json"])
    assert not is_complete([f"recordings/{CALL_A}/caller.wav", f"recordings/{CALL_A}/agent.wav"])
    assert not is_complete([])


def test_the_runtime_section_it_hands_out_is_a_valid_runtime_s3_config() -> None:
    endpoint = StorageEndpoint(url="http://127.0.0.1:9000")
    config = S3StorageConfig.model_validate(endpoint.runtime_s3_config(url="http://127.0.0.1:9100"))
    assert (config.endpoint_url, config.bucket, config.key_prefix) == ("http://127.0.0.1:9100", DEFAULT_BUCKET,
                                                                       "recordings")
    assert (config.read_timeout_s, config.max_attempts) == (2.0, 2)


# --- the embedded server ----------------------------------------------------------------------------------------


async def test_the_server_starts_with_its_bucket_and_lists_recordings_per_call(store: StorageEndpoint) -> None:
    assert store.url.startswith("http://127.0.0.1:")
    client = StorageClient.for_endpoint(store)
    try:
        await client.ensure_bucket()  # made at startup: a no-op now
        put(store, store.bucket, f"recordings/{CALL_A}/caller.wav", f"recordings/{CALL_A}/agent.wav",
            f"recordings/{CALL_A}/meta.json", f"recordings/{CALL_B}/caller.wav", "unrelated/object")
        arrived = await client.recordings()
        assert sorted(arrived) == [CALL_A, CALL_B]
        assert is_complete(arrived[CALL_A]) and not is_complete(arrived[CALL_B])  # B's upload stopped part-way
        assert await client.get(f"recordings/{CALL_A}/caller.wav") == b"x"
    finally:
        client.close()


async def test_ensure_bucket_creates_a_missing_bucket_and_listing_follows_pages(store: StorageEndpoint) -> None:
    client = StorageClient(store.url, "paged-bucket", page_size=2)
    try:
        await client.ensure_bucket()
        await client.ensure_bucket()  # idempotent
        put(store, "paged-bucket", *(f"recordings/CA{i}/meta.json" for i in range(5)))
        assert await client.keys() == [f"recordings/CA{i}/meta.json" for i in range(5)]  # 3 pages of 2
        assert sorted(await client.recordings()) == [f"CA{i}" for i in range(5)]
    finally:
        client.close()


async def test_an_unreachable_store_fails_fast_with_the_request_named() -> None:
    client = StorageClient(f"http://127.0.0.1:{free_port()}", timeout_s=1.0, max_attempts=1)
    try:
        with pytest.raises(StorageError, match="list"):
            await client.recordings()
        with pytest.raises(StorageError, match="HEAD bucket"):
            await client.ensure_bucket()
    finally:
        client.close()


def test_it_refuses_to_listen_beyond_loopback() -> None:
    with pytest.raises(SystemExit, match="loopback only"):
        main(["serve", "--host", "0.0.0.0"])


def test_a_taken_port_is_an_error_not_a_hang() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "harness.storage", "serve", "--port", str(port)],
            capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
        )
    # werkzeug reports the taken port and exits 1 (ThreadedMotoServer would wait forever for its thread instead)
    assert done.returncode != 0 and done.stdout == b""
    assert str(port).encode() in done.stderr
