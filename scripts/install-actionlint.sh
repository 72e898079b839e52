#!/usr/bin/env bash
# actionlint (the GitHub Actions workflow linter), built once into the cache; prints its path.
set -euo pipefail
ACTIONLINT_VERSION="v1.7.12"
exec "$(dirname "$0")/go-install.sh" actionlint github.com/rhysd/actionlint/cmd/actionlint "${ACTIONLINT_VERSION}"
