#!/usr/bin/env bash
# Set up everything the tests need, then run them all (the full tier). Arguments go to pytest:
# `scripts/test.sh --tier pr` (or TEST_TIER=pr) runs the pull-request tier only (tests/conftest.py).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"${root}/scripts/setup.sh" test
cd "${root}"
exec venv/bin/python -m pytest "$@"
