#!/usr/bin/env bash
# Build actionlint (the GitHub Actions workflow linter) from the Go module proxy, once, into a per-user cache.
# Prints the binary path on stdout; all progress and build output goes to stderr.
# Idempotent: does nothing when the binary is already there.
#
# Environment:
#   XDG_CACHE_HOME   cache root (default: $HOME/.cache)
#   GOPROXY etc.     passed through to `go`.
set -euo pipefail

ACTIONLINT_VERSION="v1.7.12"

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/registry-iac"
prefix="${cache_root}/actionlint-${ACTIONLINT_VERSION}"
bin_dir="${prefix}/bin"
binary="${bin_dir}/actionlint"

if [[ -x "${binary}" ]]; then
    echo "actionlint ${ACTIONLINT_VERSION} already installed at ${binary}" >&2
    echo "${binary}"
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    echo "error: 'go' not found on PATH; install Go >= 1.23 to build actionlint ${ACTIONLINT_VERSION}" >&2
    exit 1
fi

mkdir -p "${prefix}"
# Build into a temporary GOBIN and move into place, so an interrupted build never leaves a half-written binary
# that the idempotency check above would then trust.
tmp_bin="$(mktemp -d "${prefix}/build.XXXXXX")"
trap 'rm -rf "${tmp_bin}"' EXIT

echo "building actionlint ${ACTIONLINT_VERSION} with $(go version) ..." >&2
start=$(date +%s)
GOBIN="${tmp_bin}" GOTOOLCHAIN="${GOTOOLCHAIN:-local}" \
    go install "github.com/rhysd/actionlint/cmd/actionlint@${ACTIONLINT_VERSION}" 1>&2

mkdir -p "${bin_dir}"
mv -f "${tmp_bin}/actionlint" "${binary}"
echo "built ${binary} in $(( $(date +%s) - start ))s" >&2
echo "${binary}"
