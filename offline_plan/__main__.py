"""``python -m offline_plan [STACK ...]``: print each stack's plan and write it under build/<stack>/.

Exits 0 when every stack planned, 2 on bad configuration (one line per stack naming the key).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .recorder import PROJECT_DIR, ConfigFileError, record_plan
from .render import print_plan, write_plan

DEFAULT_STACKS = ("staging", "prod")


def _override(text: str) -> tuple[str, str]:
    key, separator, value = text.partition("=")
    if not separator or ":" not in key:
        raise argparse.ArgumentTypeError(f"expected namespace:key=value, got {text!r}")
    return key, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m offline_plan", description=__doc__.splitlines()[0])
    parser.add_argument("stacks", nargs="*", default=list(DEFAULT_STACKS), help="stacks to plan (default: staging prod)")
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / "build", help="output directory (default: build/)")
    parser.add_argument("--config", action="append", type=_override, default=[], metavar="KEY=VALUE",
                        help="override a config value, as `pulumi config set` would (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="print only the summary line per stack")
    args = parser.parse_args(argv)

    failed = False
    for stack in args.stacks:
        started = time.perf_counter()
        try:
            plan = record_plan(stack, overrides=dict(args.config))
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
    return 2 if failed else 0


if __name__ == "__main__":
    code = main()
    # After a program error the SDK leaves an event loop whose finaliser prints a spurious traceback
    # at interpreter exit; the plan is written and the streams flushed, so leave without finalisers.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
