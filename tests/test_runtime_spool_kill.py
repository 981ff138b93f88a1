"""The durable spool loses nothing when the runtime is killed mid-upload (issue 4's required test).

A child process plays the runtime: it spools five recordings through the fixed-mode sink (what a call does at its
end) and starts the background uploader against the real embedded store (moto) behind a proxy that lets four PUTs
through and then stalls: the first recording is stored whole, the second has only ``caller.wav`` in the store when
its ``agent.wav`` hangs. The child is killed with SIGKILL right then. A new uploader on the same spool folder, with
the store answering, must upload everything that was left: in the end every recording is in the store exactly once
and complete (the three objects, byte for byte what was spooled), and the spool is empty.

And the graceful side: a runtime (``python -m reference_runtime serve``) started on a spool a previous process left
picks those recordings up at once; SIGTERM while their upload hangs on a stalled store stops it promptly, exit 0,
with every recording still in the spool.

Run as ``python -m tests.test_runtime_spool_kill SPOOL_DIR ENDPOINT_URL COUNT`` it is the child.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest
import yaml

from harness.storage import StorageClient, embedded_storage, is_complete
from reference_runtime.config import RecordingConfig
from reference_runtime.recording import S3ObjectStore, recording_objects
from reference_runtime.spool import Spool, SpoolUploader, build_spooling_sink
from tests.test_runtime_app import PROVIDERS
from tests.test_runtime_recording_s3 import StalledStore
from tests.test_runtime_spool import StallingProxy, make_recording

REPO = Path(__file__).resolve().parents[1]
COUNT = 5
#: the child's own uploads: entry 1 (3 objects) and entry 2's caller.wav get through; entry 2's agent.wav hangs
PUTS_BEFORE_THE_STALL = 4
DEADLINE_S = 30.0

pytestmark = pytest.mark.e2e


def child_recording_config(spool_dir: str, endpoint: str) -> RecordingConfig:
    return RecordingConfig.model_validate({
        "s3": {"endpoint_url": endpoint, "bucket": "voicechaos-recordings", "access_key_id": "voicechaos",
               "secret_access_key": "voicechaos-secret", "connect_timeout_s": 5, "read_timeout_s": 60,
               "max_attempts": 1},
        "spool": {"dir": spool_dir, "retry_initial_s": 0.1, "retry_max_s": 1.0},
    })


async def child(spool_dir: str, endpoint: str, count: int) -> None:
    sink = build_spooling_sink(child_recording_config(spool_dir, endpoint))
    for i in range(count):
        await sink.store(make_recording(i))  # as each call's hand-over does at call end
    print(json.dumps({"event": "spooled", "count": count, "pid": os.getpid()}), flush=True)
    sink.start()
    await asyncio.Event().wait()  # upload until killed


async def test_a_runtime_killed_mid_upload_loses_no_recording(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    with embedded_storage() as store:
        client = StorageClient.for_endpoint(store)
        try:
            async with StallingProxy(store.url, stall_after_puts=PUTS_BEFORE_THE_STALL) as proxy:
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "tests.test_runtime_spool_kill", str(spool_dir), proxy.url, str(COUNT),
                    cwd=REPO, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                    env={**os.environ, "PYTHONPATH": str(REPO)},
                )
                try:
                    async with asyncio.timeout(DEADLINE_S):
                        assert process.stdout is not None
                        line = json.loads(await process.stdout.readline())
                        assert line == {"event": "spooled", "count": COUNT, "pid": process.pid}
                        await proxy.holding.wait()  # the child is stuck in the middle of recording 2's upload
                    before = await client.recordings()
                finally:
                    if process.returncode is None:
                        process.send_signal(signal.SIGKILL)  # only the child we started, by its pid
                    await process.wait()
            assert process.returncode == -signal.SIGKILL

            # what the kill left: recording 1 whole in the store (and gone from the spool), recording 2 half
            sids = [make_recording(i).call_sid for i in range(COUNT)]
            assert sorted(before) == sids[:2]
            assert is_complete(before[sids[0]]) and not is_complete(before[sids[1]])
            left = Spool(spool_dir)
            assert [e.call_name for e in left.pending()] == sids[1:]

            # a new process on the same spool folder, the store answering
            uploader = SpoolUploader(left, S3ObjectStore(child_recording_config(str(spool_dir), store.url).s3))
            try:
                async with asyncio.timeout(DEADLINE_S):
                    while (delay := await uploader.step()) is not None:
                        assert delay == 0.0, "the store is up: no upload may fail"
            finally:
                uploader.store.close()
            keys = await client.keys()
            arrived = await client.recordings()
            bodies = {key: await client.get(key) for key in keys}
        finally:
            client.close()

    assert sorted(arrived) == sids  # every recording, none twice under another name
    assert len(keys) == len(set(keys)) == 3 * COUNT
    for i, sid in enumerate(sids):
        assert is_complete(arrived[sid])
        for name, body, _ in recording_objects(make_recording(i)):
            assert bodies[f"recordings/{sid}/{name}"] == body, (sid, name)
    assert uploader.uploaded == COUNT - 1
    assert sorted(p.name for p in spool_dir.iterdir()) == []  # nothing left, nothing half-deleted


async def test_a_runtime_uploads_what_it_finds_in_the_spool_and_sigterm_keeps_it_there(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    left = Spool(spool_dir)
    for i in range(2):
        left.put(make_recording(i))  # what a previous process left
    async with StalledStore() as stalled:
        config = {"providers": PROVIDERS, "port": 0, "shutdown_grace_s": 1,
                  "recording": child_recording_config(str(spool_dir), stalled.url).model_dump(mode="json")}
        path = tmp_path / "runtime.yaml"
        path.write_text(yaml.safe_dump(config))
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "reference_runtime", "serve", "--config", str(path), "--log-level", "WARNING",
            cwd=REPO, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        try:
            async with asyncio.timeout(DEADLINE_S):
                assert process.stdout is not None
                assert json.loads(await process.stdout.readline())["event"] == "listening"
                while stalled.connections == 0:  # noqa: ASYNC110 - the child's upload reaching the store
                    await asyncio.sleep(0.02)
                process.send_signal(signal.SIGTERM)  # the process we started, by its pid
                code = await process.wait()  # promptly: not after the upload's 60 s read timeout
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert code == 0
    assert [e.call_name for e in Spool(spool_dir).pending()] == [make_recording(i).call_sid for i in range(2)]


if __name__ == "__main__":
    asyncio.run(child(sys.argv[1], sys.argv[2], int(sys.argv[3])))
