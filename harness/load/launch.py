"""``voicechaos ui``, ``voicechaos soak`` and ``voicechaos worker``: start Locust on the harness's locustfile.

Locust runs in processes of its own (it patches the whole process with gevent at import; ``voicechaos run`` must not
be): one local process, or with ``--workers N`` a master and N worker processes on this machine. Workers on other
machines run ``voicechaos worker SCENARIO --master-host HOST`` (see the README). The master (or the local process)
owns the run folder and the verdict; its exit code is this command's: 0 pass, 1 a target missed, 2 invalid (the
harness was the bottleneck).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web

from harness.load.control import RunControl
from harness.load.settings import ENV, LoadSettings, dial_json
from harness.load.shapes import default_shape
from harness.safety import UnsafeTargetError, check_target, is_loopback_host
from harness.scenario import Scenario, load_scenario
from harness.session import RunSession, new_run_dir

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
WORKER_STOP_GRACE_S = 20.0
#: how long a headless master waits for its workers before giving up (Locust's default is forever: a worker that
#: died at start-up would hang a nightly soak)
WORKERS_WAIT_LOCAL_S = 120.0
WORKERS_WAIT_REMOTE_S = 900.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(settings: LoadSettings) -> dict[str, str]:
    env = dict(os.environ)
    env[ENV] = settings.to_env()
    env.pop("LOCUST_SKIP_MONKEY_PATCH", None)  # set in the test process; locust_main patches, then sets it itself
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _locust(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness.load.locust_main", "-f", str(LOCUSTFILE), *args]


def soak_plan_seconds(scenario: Scenario, duration_s: float | None) -> float:
    """How long a soak runs: ``--duration``, else the scenario's load shape, else its default ramp-and-hold."""
    shape = scenario.load or default_shape(scenario.callers.count, scenario.callers.concurrency,
                                           scenario.callers.arrival_rate, scenario.limits.duration)
    if duration_s is not None:
        shape = shape.with_duration(duration_s)
    return shape.total_s


def launch(command: str, scenario_path: Path, **options: Any) -> int:
    return asyncio.run(run_load(command, scenario_path, **options))


async def run_load(command: str, scenario_path: Path, *, workers: int = 0, port: int = 8089,
                   duration_s: float | None = None, runs_dir: Path = Path("runs"), allow_remote: bool = False,
                   master_host: str = "127.0.0.1", master_port: int = 5557, master_bind_host: str = "127.0.0.1",
                   use_shape: bool = False, max_calls: int = 100_000, remote_workers: int = 0,
                   workers_wait_s: float | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    scenario = load_scenario(scenario_path)  # a malformed scenario is refused before any process starts
    if command == "worker":
        check_target(f"http://{master_host}:{master_port}", allow_remote=allow_remote, what="--master-host")
        settings = LoadSettings(scenario=scenario_path, role="worker", allow_remote=allow_remote,
                                max_calls=max_calls)
        worker = await _start(_locust("--worker", "--master-host", master_host, "--master-port", str(master_port)),
                              settings)
        return await _wait(worker, [], out)
    if not allow_remote and not is_loopback_host(master_bind_host):
        raise UnsafeTargetError(f"--master-bind-host {master_bind_host}: workers on other machines need "
                                "--allow-remote (and the target must be yours)")
    stop_timeout = f"{scenario.limits.call_timeout:g}"
    if command == "soak":
        duration: float | None = soak_plan_seconds(scenario, duration_s)
        run_dir: Path | None = new_run_dir(runs_dir, scenario.name)
        assert run_dir is not None
        args = ["--headless", "--only-summary", "--stop-timeout", stop_timeout, "--csv", str(run_dir / "locust"),
                "--html", str(run_dir / "locust.html")]
        use_shape = True
    else:
        duration = duration_s or scenario.limits.duration
        run_dir = None
        args = ["--web-host", "127.0.0.1", "--web-port", str(port), "--stop-timeout", stop_timeout]
    session = RunSession(scenario, scenario_path, runs_dir=runs_dir, allow_remote=allow_remote, out=out,
                         calls_planned=0, mode=f"locust-{command}", faults_on_demand=True, run_dir=run_dir,
                         callers_here=False)
    control = RunControl(session)
    try:
        dials = await session.open()
    except BaseException:
        await session.close([], {}, report=False)
        raise
    server = web.AppRunner(control.app(), access_log=None)
    await server.setup()
    site = web.TCPSite(server, "127.0.0.1", 0)
    await site.start()
    control_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    settings = LoadSettings(scenario=scenario_path, mode="soak" if command == "soak" else "ui", runs_dir=runs_dir,
                            run_dir=session.run_dir, allow_remote=allow_remote, use_shape=use_shape,
                            duration_s=duration, max_calls=max_calls,
                            control_url=control_url, dial=dial_json(dials))
    if command == "soak":
        out.write(f"voicechaos: soak {scenario.name!r} for {duration:g} s ({workers or 'no'} local workers"
                  f"{f', waiting for {remote_workers} more' if remote_workers else ''}); Locust's "
                  f"CSV and HTML go to {session.run_dir}\n")
    else:
        out.write(f"voicechaos: Locust web UI on http://127.0.0.1:{port}/ (its Voice and Chaos tabs: live voice "
                  f"figures and faults; also on one page at http://127.0.0.1:{port}/voicechaos/); Ctrl-C ends the run "
                  "and writes its report\n")
    out.flush()
    helpers: list[asyncio.subprocess.Process] = []
    try:
        if workers or remote_workers:
            # a free port when every worker is ours; a known one when workers on other machines must find it
            bind_port = _free_port() if master_port == 5557 and not remote_workers else master_port
            args += ["--master", "--master-bind-host", master_bind_host, "--master-bind-port", str(bind_port),
                     "--expect-workers", str(workers + remote_workers)]
            if command == "soak":
                wait_s = workers_wait_s or (WORKERS_WAIT_REMOTE_S if remote_workers else WORKERS_WAIT_LOCAL_S)
                args += ["--expect-workers-max-wait", str(max(1, math.ceil(wait_s)))]
            main = await _start(_locust(*args), settings.model_copy(update={"role": "master"}))
            worker_settings = LoadSettings(scenario=scenario_path, role="worker", allow_remote=allow_remote,
                                           max_calls=max_calls)
            for _ in range(workers):
                helpers.append(await _start(_locust("--worker", "--master-host", "127.0.0.1", "--master-port",
                                                    str(bind_port)), worker_settings, own_group=True))
        else:
            main = await _start(_locust(*args), settings)
        code = await _wait(main, helpers, out)
    finally:
        if not control.closed:  # the master ended without closing the run: keep what it sent
            await control.finish({}, {"locust": {"master_exit": "ended without its last figures"}},
                                 interrupted="the Locust master ended before closing the run")
            out.write(control.report_line)
        await server.cleanup()
    if code not in (0, 1, 2):  # Locust itself failed (bad arguments, a crash): that is this command's answer
        return code
    return control.exit_code


async def _start(argv: list[str], settings: LoadSettings, *, own_group: bool = False) -> asyncio.subprocess.Process:
    """Start a Locust process. Workers get a process group of their own: Ctrl-C reaches the master only, which
    stops them after their calls ended and their last records were sent."""
    return await asyncio.create_subprocess_exec(*argv, env=_env(settings), stdin=asyncio.subprocess.DEVNULL,
                                                start_new_session=own_group)


async def _wait(main: asyncio.subprocess.Process, helpers: list[asyncio.subprocess.Process], out: TextIO) -> int:
    """Wait for the master (or the only process), then for the workers it started to quit on their own; the ones
    that do not are ended by their PID."""
    loop = asyncio.get_running_loop()

    def say_stopping() -> None:
        # a closed stdout (a CI log pipe gone, `| head`) must not cost the run its end: the signal is what matters
        with contextlib.suppress(OSError, ValueError):
            out.write("\nvoicechaos: stopping: calls in progress end, then the report is written...\n")
            out.flush()

    def on_interrupt() -> None:  # the terminal sent SIGINT to the master too: it stops the load and reports
        say_stopping()

    def on_terminate() -> None:  # a CI job or a supervisor: the master ends the run as on Ctrl-C
        if main.returncode is None:
            main.send_signal(signal.SIGTERM)
        say_stopping()

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, on_interrupt)
        loop.add_signal_handler(signal.SIGTERM, on_terminate)
    try:
        code = await main.wait()
        # one grace period for all of them, not one each: a master that quit before a worker had re-registered
        # after a stop never told it to quit (Locust drops a worker when it reports "stopped" until it is ready)
        if helpers:
            await asyncio.wait([asyncio.ensure_future(h.wait()) for h in helpers], timeout=WORKER_STOP_GRACE_S)
        for helper in helpers:
            if helper.returncode is not None:
                continue
            helper.terminate()
            try:
                await asyncio.wait_for(helper.wait(), timeout=5)
            except TimeoutError:
                helper.kill()
                await helper.wait()
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)
        for process in (main, *helpers):
            if process.returncode is None:
                process.kill()
                await process.wait()
    return code
