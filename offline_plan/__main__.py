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

from .policy_runner import PolicyAnalyzer, PolicyPackError
from .recorder import PROJECT_DIR, ConfigFileError, Plan, record_plan
from .render import print_plan, write_plan

DEFAULT_STACKS = ("staging", "prod")


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
    parser.add_argument("stacks", nargs="*", default=list(DEFAULT_STACKS), help="stacks to plan (default: staging prod)")
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / "build", help="output directory (default: build/)")
    parser.add_argument("--config", action="append", type=_override, default=[], metavar="KEY=VALUE",
                        help="override a config value, as `pulumi config set` would; a JSON list stays a list (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="print only the summary line per stack")
    parser.add_argument("--preview", action="store_true",
                        help="record a first `pulumi preview`: values providers compute (IDs, ARNs, passwords) unknown")
    parser.add_argument("--no-policy", action="store_true", help="do not run the policy pack on the plans")
    parser.add_argument("--policy-config", type=Path, metavar="FILE",
                        help="policy pack config, JSON as for `pulumi preview --policy-pack-config`")
    args = parser.parse_args(argv)

    failed = False
    planned: list[Plan] = []
    for stack in args.stacks:
        started = time.perf_counter()
        try:
            plan = record_plan(stack, overrides=dict(args.config), preview=args.preview)
        except ConfigFileError as exc:
            print(f"error: stack {stack}: {exc}", file=sys.stderr)
            failed = True
            continue
        if plan.error:
            print(f"error: stack {stack}: {plan.error}", file=sys.stderr)
            failed = True
            continue
        if not args.quiet:
            print_plan(plan, sys.stdout)
        directory = write_plan(plan, args.out)
        elapsed = time.perf_counter() - started
        print(f"{stack}: {len(plan.registrations)} resources planned in {elapsed:.2f}s, written to {directory}")
        planned.append(plan)
    if failed:
        return 2
    if args.no_policy or not planned:
        return 0
    return run_policies(planned, args.policy_config)


def run_policies(plans: list[Plan], config_file: Path | None) -> int:
    """Print every policy diagnostic and a count line per stack; 1 if any is mandatory."""
    config = json.loads(config_file.read_text()) if config_file else None
    try:
        with PolicyAnalyzer(config=config) as analyzer:
            reports = [analyzer.analyze(plan) for plan in plans]
    except PolicyPackError as exc:
        print(f"error: policy pack: {exc}", file=sys.stderr)
        return 1
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
