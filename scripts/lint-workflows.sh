#!/usr/bin/env bash
# Lint the GitHub Actions workflows with actionlint (built once by install-actionlint.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
actionlint="$(scripts/install-actionlint.sh)"
"${actionlint}" -color "$@"
