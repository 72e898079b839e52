#!/usr/bin/env bash
# oras (OCI artifacts client, the CI artifact path), built once into the cache; prints its path.
set -euo pipefail
ORAS_VERSION="v1.3.6"
exec "$(dirname "$0")/go-install.sh" oras oras.land/oras/cmd/oras "${ORAS_VERSION}"
