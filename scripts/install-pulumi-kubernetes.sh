#!/usr/bin/env bash
# The Pulumi kubernetes provider (pulumi-resource-kubernetes), built once from the Go module proxy into the
# cache; prints its path. Only tests use it: the engine then renders or applies the program's Kubernetes objects
# with the real provider (tests/test_peer_pulumi_cli.py).
#
# The module proxy serves only a pseudo-version of provider/v4 (tag v4.25.0). Its module zip lacks the files its
# main package embeds (schema-embed.json, terraform-mapping-embed.json, made by `go generate` from schema.json),
# so the main package is copied into the generated wrapper module and its generate step is run there.
set -euo pipefail
PROVIDER_PSEUDO_VERSION="v4.0.0-20260115033456-f47bc2d6f199"
PROVIDER_VERSION="4.25.0"  # the tag that pseudo-version is
source "$(dirname "$0")/lib/go-wrapper-build.sh"
required_versions() { local_replaces "$1"; }
go_wrapper_prebuild() {
    local cmd="$1/cmd/pulumi-resource-kubernetes"
    mkdir -p pulumi-resource-kubernetes
    cp "${cmd}/main.go" "${cmd}/generate.go" "${cmd}/schema.json" "${cmd}/terraform-mapping.json" \
        pulumi-resource-kubernetes/
    chmod u+w pulumi-resource-kubernetes/*
    (cd pulumi-resource-kubernetes && VERSION="${PROVIDER_VERSION}" go run ./generate.go)
}
go_wrapper_build pulumi-kubernetes "v${PROVIDER_VERSION}" github.com/pulumi/pulumi-kubernetes/provider/v4 \
    "${PROVIDER_PSEUDO_VERSION}" required_versions \
    "-s -w -X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=${PROVIDER_VERSION}" \
    ./pulumi-resource-kubernetes
