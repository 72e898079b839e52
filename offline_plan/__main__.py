"""``python -m offline_plan [STACK ...]``: print each stack's plan and write it under build/<stack>/.

Then the policy pack (policies/) analyses each plan as the Pulumi engine would (skip with --no-policy).
Exits 0 when every stack planned and no mandatory policy is violated, 1 on a mandatory violation, 2 on
bad configuration (one line per stack naming the key).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .policy_runner import PendingReport, PolicyAnalyzer, PolicyPackError
from .recorder import PROJECT_DIR, ConfigFileError, Plan, discover_stacks, record_plan
from .render import print_plan, write_plan


def _override(text: str) -> tuple[str, object]:
    """``key=value`` as `pulumi config set` stores it (a string); a JSON list or map stays a list or
    map, as it would be written in the stack file."""
    key, separator, value = text.partition("=")
    if not separator or ":" not in key:
        raise argparse.ArgumentTypeError(f"expected namespace:key=value, got {text!r}")
    if value.startswith(("[", "{")):
        try:
            return key, json.loads(value)
        except json.JSONDecodeError:
            pass
    return key, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m offline_plan", description=__doc__.splitlines()[0])
    parser.add_argument("stacks", nargs="*", help="stacks to plan (default: every Pulumi.<stack>.yaml of the project)")
    parser.add_argument("--project-dir", type=Path, default=PROJECT_DIR,
                        help="the Pulumi project to plan (default: this repository's program)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: <project dir>/build/)")
    parser.add_argument("--config", action="append", type=_override, default=[], metavar="KEY=VALUE",
                        help="override a config value, as `pulumi config set` would; a JSON list stays a list (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="print only the summary line per stack")
    parser.add_argument("--preview", action="store_true",
                        help="record a first `pulumi preview`: values providers compute (IDs, ARNs, passwords) unknown")
    parser.add_argument("--no-policy", action="store_true", help="do not run the policy pack on the plans")
    parser.add_argument("--policy-config", type=Path, metavar="FILE",
                        help="policy pack config, JSON as for `pulumi preview --policy-pack-config`")
    args = parser.parse_args(argv)
    args.out = args.out or args.project_dir / "build"
    if not args.stacks:
        args.stacks = list(discover_stacks(args.project_dir))

    # The pack's process starts first: it imports its SDKs on the other core while the stacks are
    # planned, and analyses each plan as soon as it is recorded (the engine, too, analyses during the run).
    analyzer = None if args.no_policy else PolicyAnalyzer(config=_policy_config(args.policy_config))
    try:
        return _plan_stacks(args, analyzer)
    finally:
        if analyzer is not None:
            analyzer.stop()


def _plan_stacks(args: argparse.Namespace, analyzer: PolicyAnalyzer | None) -> int:
    pack_error = _launch(analyzer)
    failed = False
    planned: list[Plan] = []
    pending: list[PendingReport] = []
    for stack in args.stacks:
        started = time.perf_counter()
        analysis = analyzer.analysis(stack) if analyzer is not None and pack_error is None and not failed else None
        try:
            plan = record_plan(stack, args.project_dir, overrides=dict(args.config), preview=args.preview,
                               on_register=analysis and analysis.resource)
        except ConfigFileError as exc:
            print(f"error: stack {stack}: {exc}", file=sys.stderr)
            failed = True
            continue
        if plan.error:
            print(f"error: stack {stack}: {plan.error}", file=sys.stderr)
            failed = True
            continue
        if analysis is not None:
            try:
                pending.append(analysis.finish(plan))
            except PolicyPackError as exc:
                pack_error = exc
        if not args.quiet:
            print_plan(plan, sys.stdout)
        directory = write_plan(plan, args.out)
        elapsed = time.perf_counter() - started
        print(f"{stack}: {len(plan.registrations)} resources planned in {elapsed:.2f}s, written to {directory}")
        planned.append(plan)
    if failed:
        return 2
    if analyzer is None or not planned:
        return 0
    if pack_error is None:
        try:
            return _report(pending)
        except PolicyPackError as exc:
            pack_error = exc
    print(f"error: policy pack: {pack_error}", file=sys.stderr)
    return 1


def _policy_config(config_file: Path | None) -> dict | None:
    return json.loads(config_file.read_text()) if config_file else None


def _launch(analyzer: PolicyAnalyzer | None) -> PolicyPackError | None:
    if analyzer is None:
        return None
    try:
        analyzer.launch()
    except PolicyPackError as exc:
        return exc
    return None


def run_policies(plans: list[Plan], config_file: Path | None) -> int:
    """Print every policy diagnostic and a count line per stack; 1 if any is mandatory."""
    try:
        with PolicyAnalyzer(config=_policy_config(config_file)) as analyzer:
            return _report([analyzer.submit(plan) for plan in plans])
    except PolicyPackError as exc:
        print(f"error: policy pack: {exc}", file=sys.stderr)
        return 1


def _report(pending: list[PendingReport]) -> int:
    reports = [report.result() for report in pending]
    violated = False
    for report in reports:
        for diagnostic in report.diagnostics:
            print(f"{report.stack}: {diagnostic}")
        print(f"{report.stack}: {report.summary()}")
        violated = violated or bool(report.mandatory)
    return 1 if violated else 0


if __name__ == "__main__":
    try:
        code = main()
    except BrokenPipeError:
        # The reader went away (`| head`): not an error of the plan, and nothing left to print to.
        os._exit(141)
    # After a program error the SDK leaves an event loop whose finaliser prints a spurious traceback
    # at interpreter exit; the plan is written and the streams flushed, so leave without finalisers.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
