#!/usr/bin/env bash
# The OCI distribution-spec conformance suite, built once (`go test -c` in a generated wrapper module) into the
# cache; prints the test binary's path.
set -euo pipefail
MODULE="github.com/opencontainers/distribution-spec/conformance"
VERSION="v0.0.0-20260831232431-97274622c111"
prefix="${XDG_CACHE_HOME:-$HOME/.cache}/registry-iac/oci-conformance-${VERSION}"
binary="${prefix}/bin/conformance.test"
if [[ -x "${binary}" ]]; then
    echo "oci-conformance ${VERSION} already installed at ${binary}" >&2
    echo "${binary}"
    exit 0
fi
mkdir -p "${prefix}/bin"
work="$(mktemp -d "${prefix}/build.XXXXXX")"
trap 'rm -rf "${work}"' EXIT
start=$(date +%s)
cd "${work}"
GOTOOLCHAIN="${GOTOOLCHAIN:-local}" go mod init oci-conformance-wrapper >/dev/null 2>&1
GOTOOLCHAIN="${GOTOOLCHAIN:-local}" GOFLAGS=-mod=mod go get "${MODULE}@${VERSION}" 1>&2
GOTOOLCHAIN="${GOTOOLCHAIN:-local}" GOFLAGS=-mod=mod go test -c "${MODULE}" -o "${work}/conformance.test" 1>&2
mv -f "${work}/conformance.test" "${binary}"
echo "built ${binary} in $(( $(date +%s) - start ))s" >&2
echo "${binary}"
