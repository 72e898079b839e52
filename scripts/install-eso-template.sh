#!/usr/bin/env bash
# eso-template (tests/support/eso_template/main.go): the External Secrets Operator's template semantics (engine
# v2: text/template + Sprig v3, the version external-secrets v1.3.2 requires), built once into the cache keyed
# by the Sprig version and the program's own hash. Prints the binary's path.
set -euo pipefail
SPRIG_VERSION="v3.3.0"
# Sprig's dependencies at the versions external-secrets v1.3.2's go.mod requires, so the functions behave as in
# the operator's build.
DEPENDENCIES=(dario.cat/mergo@v1.0.2 github.com/Masterminds/goutils@v1.1.1 github.com/Masterminds/semver/v3@v3.4.0
              github.com/google/uuid@v1.6.0 github.com/huandu/xstrings@v1.5.0 github.com/mitchellh/copystructure@v1.2.0
              github.com/shopspring/decimal@v1.4.0 github.com/spf13/cast@v1.10.0 golang.org/x/crypto@v0.46.0)
source_dir="$(cd "$(dirname "$0")/../tests/support/eso_template" && pwd)"
digest="$(cat "${source_dir}/main.go" "$0" | sha256sum | cut -c1-12)"
prefix="${XDG_CACHE_HOME:-$HOME/.cache}/registry-iac/eso-template-sprig-${SPRIG_VERSION}-${digest}"
binary="${prefix}/bin/eso-template"
if [[ -x "${binary}" ]]; then
    echo "eso-template already installed at ${binary}" >&2
    echo "${binary}"
    exit 0
fi
started=$(date +%s)
work="$(mktemp -d)"
trap 'chmod -R u+w "${work}"; rm -rf "${work}"' EXIT
cp "${source_dir}/main.go" "${work}/"
(
    cd "${work}"
    go mod init registry-iac/eso-template >/dev/null 2>&1
    go mod edit -require="github.com/Masterminds/sprig/v3@${SPRIG_VERSION}"
    for dependency in "${DEPENDENCIES[@]}"; do go mod edit -require="${dependency}"; done
    GOFLAGS=-mod=mod go mod tidy >&2
    mkdir -p "${prefix}/bin"
    GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -o "${binary}.tmp" . >&2
    mv "${binary}.tmp" "${binary}"
)
echo "eso-template built in $(( $(date +%s) - started ))s" >&2
echo "${binary}"
