#!/usr/bin/env bash
# The main job: set up if needed, then plan every stack offline (print, write build/<stack>/, run the
# policy pack). Arguments go to `python -m offline_plan` (for example: staging --config registry:replicas=2).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"${root}/scripts/setup.sh" plan
cd "${root}"
exec venv/bin/python -m offline_plan "$@"
