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
    sub.add_parser("toxiproxy", help="run the embedded Toxiproxy server on its own (any Toxiproxy client can use it)",
                   add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["toxiproxy"]:
        from harness.chaos.toxiproxy import main as toxiproxy_main

        return toxiproxy_main(argv[1:])
    args = _parser().parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
