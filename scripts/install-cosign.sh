#!/usr/bin/env bash
# cosign (sigstore: signs images and verifies their signatures), built once from the Go module proxy into the
# cache; prints its path. Built in a wrapper module with its own Go caches, removed afterwards (a few GiB of
# dependencies no other build here shares); the same binary as `go install .../cmd/cosign@VERSION`, with the
# version stamped the way cosign's release build stamps it.
set -euo pipefail
COSIGN_VERSION="v3.1.3"
source "$(dirname "$0")/lib/go-wrapper-build.sh"
no_replaces() { echo -; }
go_wrapper_build cosign "${COSIGN_VERSION}" github.com/sigstore/cosign/v3 "${COSIGN_VERSION}" no_replaces \
    "-s -w -X sigs.k8s.io/release-utils/version.gitVersion=${COSIGN_VERSION}" \
    github.com/sigstore/cosign/v3/cmd/cosign
