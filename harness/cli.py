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
