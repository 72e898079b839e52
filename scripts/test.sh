#!/usr/bin/env bash
# Set up everything the tests need, then run them all (the full tier). Arguments go to pytest.
# The full tier runs in two passes (tests/conftest.py): the pull-request tier on every core (pytest-xdist
# `-n auto`), then every other test in one process, where the real-peer tests' read-only windows and timings
# were measured; the run fails if either pass fails. `scripts/test.sh --tier pr` (or TEST_TIER=pr) runs the
# first pass only, `--tier rest` the second only. Giving `-n` yourself applies it to every pass.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"${root}/scripts/setup.sh" test
cd "${root}"
tier="${TEST_TIER:-full}"
workers=(-n auto)
args=()
previous=""
for arg in "$@"; do
    case "${arg}" in
        --tier=*) tier="${arg#--tier=}"; previous="${arg}"; continue ;;
        --tier) previous="${arg}"; continue ;;
        -n|-n*|--numprocesses|--numprocesses=*) workers=() ;;
    esac
    if [[ "${previous}" == --tier ]]; then
        tier="${arg}"
    else
        args+=("${arg}")
    fi
    previous="${arg}"
done
[[ "${previous}" == --tier ]] && args+=(--tier)  # no value: pytest says so
pass() {  # pass TIER [pytest workers...]: pytest's status (5: nothing collected)
    local name="$1"
    shift
    echo "test.sh: ${name} tier"
    venv/bin/python -m pytest "$@" --tier "${name}" "${args[@]+"${args[@]}"}"
}
case "${tier}" in
    pr) pass pr "${workers[@]+"${workers[@]}"}" ;;
    rest) pass rest ;;
    full)
        started=$(date +%s)
        pr=0 rest=0
        pass pr "${workers[@]+"${workers[@]}"}" || pr=$?
        pass rest || rest=$?
        echo "test.sh: full tier finished in $(( $(date +%s) - started ))s: pr pass ${pr}, rest pass ${rest}"
        # A pass that collects nothing (5: the files asked for are all in the other pass) is fine when the
        # other one ran tests; nothing collected by both is pytest's 5 again.
        if [[ "${pr}" == 5 && "${rest}" == 5 ]]; then exit 5; fi
        [[ "${pr}" == 5 ]] && pr=0
        [[ "${rest}" == 5 ]] && rest=0
        exit $(( pr != 0 ? pr : rest )) ;;
    *)  # pytest names what is allowed: as --tier if it was given so, else as TEST_TIER (tests/conftest.py)
        if [[ "${tier}" == "${TEST_TIER:-}" ]]; then exec venv/bin/python -m pytest "${args[@]+"${args[@]}"}"; fi
        exec venv/bin/python -m pytest --tier "${tier}" "${args[@]+"${args[@]}"}" ;;
esac
