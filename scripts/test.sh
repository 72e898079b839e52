#!/usr/bin/env bash
# Set up everything the tests need, then run them all (the full tier). Arguments go to pytest:
# `scripts/test.sh --tier pr` (or TEST_TIER=pr) runs the pull-request tier only (tests/conftest.py),
# on every core (pytest-xdist `-n auto`) unless the arguments choose `-n` themselves.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"${root}/scripts/setup.sh" test
cd "${root}"
tier="${TEST_TIER:-}"
workers=(-n auto)
previous=""
for arg in "$@"; do
    case "${arg}" in
        --tier=*) tier="${arg#--tier=}" ;;
        -n|-n*|--numprocesses|--numprocesses=*) workers=() ;;
    esac
    [[ "${previous}" == --tier ]] && tier="${arg}"
    previous="${arg}"
done
[[ "${tier}" == pr ]] || workers=()
exec venv/bin/python -m pytest "${workers[@]}" "$@"
