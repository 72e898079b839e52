#!/usr/bin/env bash
# Build one Go command from the Go module proxy, once, into a per-user cache, and print its path.
#
#   scripts/go-install.sh NAME MODULE_PATH VERSION
#   (e.g. registry github.com/distribution/distribution/v3/cmd/registry v3.1.1)
#
# Prints the binary path on stdout; progress and build output go to stderr. Idempotent: does nothing
# when the binary is already there.
#
# Environment:
#   XDG_CACHE_HOME   cache root (default: $HOME/.cache)
#   GOPROXY etc.     passed through to `go`. To build strictly offline from a warm module cache use
#                    GOPROXY=file://$(go env GOMODCACHE)/cache/download (GOPROXY=off fails: `go install pkg@v`
#                    still looks up module deprecation).
set -euo pipefail

if [[ $# -ne 3 ]]; then
    echo "usage: $0 NAME MODULE_PATH VERSION" >&2
    exit 64
fi
name="$1" module="$2" version="$3"

prefix="${XDG_CACHE_HOME:-$HOME/.cache}/registry-iac/${name}-${version}"
binary="${prefix}/bin/$(basename "${module}")"

if [[ -x "${binary}" ]]; then
    echo "${name} ${version} already installed at ${binary}" >&2
    echo "${binary}"
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    echo "error: 'go' not found on PATH; install Go >= 1.23 to build ${name} ${version}" >&2
    exit 1
fi

mkdir -p "${prefix}"
# Build into a temporary GOBIN and move into place, so an interrupted build never leaves a half-written binary
# that the idempotency check above would then trust.
tmp_bin="$(mktemp -d "${prefix}/build.XXXXXX")"
trap 'rm -rf "${tmp_bin}"' EXIT

echo "building ${name} ${version} with $(go version) ..." >&2
start=$(date +%s)
GOBIN="${tmp_bin}" GOTOOLCHAIN="${GOTOOLCHAIN:-local}" go install "${module}@${version}" 1>&2

mkdir -p "$(dirname "${binary}")"
mv -f "${tmp_bin}/$(basename "${module}")" "${binary}"
echo "built ${binary} in $(( $(date +%s) - start ))s" >&2
echo "${binary}"
