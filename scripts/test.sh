#!/usr/bin/env bash
# Set up everything the tests need, then run them all. Arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"${root}/scripts/setup.sh" test
cd "${root}"
exec venv/bin/python -m pytest "$@"
