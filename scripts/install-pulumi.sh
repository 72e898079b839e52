#!/usr/bin/env bash
# The Pulumi CLI, built once from the Go module proxy into the cache; prints its path.
# Its installers download from the vendor, which this CI cannot reach; pkg/v3's go.mod has replace directives,
# so `go install pkg@version` refuses it and it is built inside a generated wrapper module.
set -euo pipefail
PULUMI_VERSION="v3.274.1"
source "$(dirname "$0")/lib/go-wrapper-build.sh"
no_replaces() { echo -; }
go_wrapper_build pulumi "${PULUMI_VERSION}" github.com/pulumi/pulumi/pkg/v3 "${PULUMI_VERSION}" no_replaces \
    "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=${PULUMI_VERSION}" \
    github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
