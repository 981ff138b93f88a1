"""The ``voicechaos`` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from harness.run import EXIT_STACK, EXIT_USAGE, run_scenario
from harness.safety import UnsafeTargetError
from harness.scenario import ScenarioError, load_scenario
from harness.stack import StackError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voicechaos", description="Chaos and load testing for voice-AI platforms.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a scenario and write a run folder")
    run.add_argument("scenario", type=Path)
    run.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where run folders go (default: runs/)")
    run.add_argument("--allow-remote", action="store_true",
                     help="allow a target outside loopback (only for systems you own)")
    run.add_argument("--calls", type=int, default=None, help="place at most this many calls")
    validate = sub.add_parser("validate", help="check a scenario without running it")
    validate.add_argument("scenario", type=Path)
    incident = sub.add_parser("incident", help="reproduce an incident broken then fixed and print the contrast")
    incident.add_argument("name", nargs="?", help="an incident of scenarios/incidents/ (or a path)")
    incident.add_argument("--list", action="store_true", help="name the incidents, one line each")
    incident.add_argument("--quick", action="store_true", help="shorten every window for a fast check")
    incident.add_argument("--mode", choices=["broken", "fixed", "both"], default="both")
    incident.add_argument("--runs-dir", type=Path, default=Path("runs"))
    report = sub.add_parser("report", help="judge a run folder against the targets: report.html, summary.json, "
                                           "junit.xml; exit 1 when a target is missed")
    report.add_argument("run_dir", type=Path)
    report.add_argument("--baseline", type=Path, help="an earlier run folder: each metric's change, regressions "
                                                      "flagged")
    report.add_argument("--history", type=Path, help="a folder of past runs: append this one to its index.jsonl "
                                                     "and redraw its trend.html")
    runtime = sub.add_parser("runtime", help="the reference runtime's onboarding tools")
    runtime_sub = runtime.add_subparsers(dest="runtime_command", required=True)
    check = runtime_sub.add_parser("check-config", help="check that telephony, STT and TTS audio formats fit "
                                                         "together, before any call")
    check.add_argument("config", type=Path, help="a reference-runtime config file (YAML or JSON)")
    ui = sub.add_parser("ui", help="start the embedded stack and the Locust web UI on loopback: start, reshape and "
                                   "stop the load in a browser, watch latency and silence gaps, inject faults")
    ui.add_argument("scenario", type=Path)
    ui.add_argument("--port", type=int, default=8089, help="the web UI's port on 127.0.0.1 (default 8089)")
    ui.add_argument("--shape", action="store_true", help="drive the users by the scenario's load shape instead of "
                                                         "the user count typed in the browser")
    ui.add_argument("--time-limit", type=_seconds, default=None,
                    help="the longest one test started from the browser runs (default: the scenario's "
                         "limits.duration), e.g. 10m")
    soak = sub.add_parser("soak", help="run the scenario's load shape headless under Locust (nightly soaks): "
                                       "Locust's CSV/HTML beside the voicechaos report; exit 1 on a missed target, "
                                       "2 when the harness was the bottleneck")
    soak.add_argument("scenario", type=Path)
    soak.add_argument("--duration", type=_seconds, default=None,
                      help="the soak's length, e.g. 2h or 90m (default: the scenario's load shape)")
    soak.add_argument("--workers-wait", type=_seconds, default=None,
                      help="how long the master waits for every worker to connect before it gives up and the soak "
                           "fails (default: 2m when all workers are local, 15m with --remote-workers)")
    worker = sub.add_parser("worker", help="a Locust worker for a `voicechaos ui|soak --workers` master on another "
                                           "machine")
    worker.add_argument("scenario", type=Path)
    worker.add_argument("--master-host", default="127.0.0.1")
    worker.add_argument("--master-port", type=int, default=5557)
    worker.add_argument("--allow-remote", action="store_true", help="allow a master outside loopback")
    worker.add_argument("--max-calls", type=int, default=100_000, help="the most calls this process places")
    for command in (ui, soak):
        command.add_argument("--workers", type=int, default=0,
                             help="run a Locust master and N worker processes (default: one process)")
        command.add_argument("--remote-workers", type=int, default=0,
                             help="also wait for this many `voicechaos worker` processes from other machines")
        command.add_argument("--master-port", type=int, default=5557,
                             help="the master's port for workers (default: a free port when all workers are local)")
        command.add_argument("--master-bind-host", default="127.0.0.1",
                             help="where the master listens for workers (0.0.0.0 for workers on other machines)")
        command.add_argument("--runs-dir", type=Path, default=Path("runs"))
        command.add_argument("--allow-remote", action="store_true",
                             help="allow a target outside loopback (only for systems you own)")
        command.add_argument("--max-calls", type=int, default=100_000,
                             help="the most calls each load process places (every load is bounded)")
    sub.add_parser("toxiproxy", help="run the embedded Toxiproxy server on its own (any Toxiproxy client can use it)",
                   add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["toxiproxy"]:
        from harness.chaos.toxiproxy import main as toxiproxy_main

        return toxiproxy_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "incident":
        return _incident(args)
    if args.command == "report":
        return _report(args)
    if args.command in ("ui", "soak", "worker"):
        return _load(args)
    if args.command == "runtime":
        from reference_runtime.compat import check_config

        problems = check_config(args.config)
        for problem in problems:
            print(f"{args.config}: {problem}", file=sys.stderr)
        if not problems:
            print(f"{args.config}: telephony, STT and TTS formats are compatible")
        return 1 if problems else 0
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        print(f"voicechaos: invalid scenario\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "validate":
        steps = ", ".join(step.kind for step in scenario.script)
        faults = "".join(f"\n  fault: {f.label} at {f.at:g} s"
                         f"{f' for {f.duration:g} s' if f.duration is not None else ' until the end'}"
                         for f in scenario.faults)
        print(f"{args.scenario}: valid. {scenario.callers.count} calls at {scenario.callers.arrival_rate:g}/s; "
              f"script: {steps}{faults}")
        return 0
    try:
        result = asyncio.run(run_scenario(scenario, args.scenario, runs_dir=args.runs_dir,
                                          allow_remote=args.allow_remote, max_calls=args.calls))
    except UnsafeTargetError as exc:
        print(f"voicechaos: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ScenarioError as exc:
        print(f"voicechaos: invalid scenario\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    except StackError as exc:
        print(f"voicechaos: the embedded stack failed to start: {exc}", file=sys.stderr)
        return EXIT_STACK
    return result.exit_code


def _seconds(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``2h``, ``1h30m`` -> seconds."""
    import re

    match = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not text.strip() or match is None or not any(match.groups()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 10m, 2h or 1h30m")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration must be more than 0")
    return total


def _load(args: argparse.Namespace) -> int:
    from harness.load.launch import launch
    from harness.load.shapes import ShapeError

    try:
        if args.command == "worker":
            return launch("worker", args.scenario, master_host=args.master_host, master_port=args.master_port,
                          allow_remote=args.allow_remote, max_calls=args.max_calls)
        return launch(args.command, args.scenario, workers=args.workers, port=getattr(args, "port", 8089),
                      duration_s=getattr(args, "duration", None) or getattr(args, "time_limit", None),
                      runs_dir=args.runs_dir, allow_remote=args.allow_remote, master_port=args.master_port,
                      master_bind_host=args.master_bind_host, use_shape=getattr(args, "shape", False),
                      max_calls=args.max_calls, remote_workers=args.remote_workers,
                      workers_wait_s=getattr(args, "workers_wait", None))
    except ScenarioError as exc:
        print(f"voicechaos: invalid scenario\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ShapeError, UnsafeTargetError) as exc:
        print(f"voicechaos: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StackError as exc:
        print(f"voicechaos: the embedded stack failed to start: {exc}", file=sys.stderr)
        return EXIT_STACK


def _report(args: argparse.Namespace) -> int:
    from reports.build import build_report, describe
    from reports.runfolder import RunFolderError

    try:
        result = build_report(args.run_dir, baseline=args.baseline, history_dir=args.history)
    except RunFolderError as exc:
        print(f"voicechaos report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    sys.stdout.write(describe(result))
    return result.exit_code


def _incident(args: argparse.Namespace) -> int:
    from harness import incidents

    if args.list or not args.name:
        for name, title in incidents.describe_all():
            print(f"{name:<36} {title}")
        return 0 if args.list else EXIT_USAGE
    modes = incidents.MODES if args.mode == "both" else (args.mode,)
    try:
        path = incidents.resolve(args.name)
        result = asyncio.run(incidents.run_incident(path, quick=args.quick, runs_dir=args.runs_dir, out=sys.stdout,
                                                    modes=modes))
    except ScenarioError as exc:
        print(f"voicechaos: invalid incident\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    except StackError as exc:
        print(f"voicechaos: the embedded stack failed to start: {exc}", file=sys.stderr)
        return EXIT_STACK
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
