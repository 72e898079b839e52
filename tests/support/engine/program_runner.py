"""Runs a Pulumi Python program against the engine's resource monitor (started by language_host.py's Run)."""

from __future__ import annotations

import argparse
import asyncio
import runpy
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    for flag in ("--monitor", "--engine", "--project", "--stack", "--organization", "--root"):
        parser.add_argument(flag, default="")
    parser.add_argument("--parallel", type=int, default=0)
    parser.add_argument("--dry-run", dest="dry_run", action="store_true")
    parser.add_argument("--no-dry-run", dest="dry_run", action="store_false")
    parser.add_argument("program")
    args = parser.parse_args()

    program = Path(args.program).resolve()
    sys.path.insert(0, str(program))
    import pulumi
    from pulumi.runtime import settings, stack

    settings.configure(settings.Settings(
        project=args.project, stack=args.stack, monitor=args.monitor, engine=args.engine,
        parallel=args.parallel or None, dry_run=args.dry_run, organization=args.organization or None,
        root_directory=args.root or None))
    main_file = program / "__main__.py" if program.is_dir() else program
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(stack.run_in_stack(lambda: runpy.run_path(str(main_file), run_name="__main__")))
    except pulumi.RunError as exc:
        pulumi.log.error(str(exc))
        return 32
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
