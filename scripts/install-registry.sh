#!/usr/bin/env bash
# CNCF Distribution (the `registry:3` binary), built once into the cache; prints its path.
set -euo pipefail
DISTRIBUTION_VERSION="v3.1.1"
exec "$(dirname "$0")/go-install.sh" distribution github.com/distribution/distribution/v3/cmd/registry "${DISTRIBUTION_VERSION}"
