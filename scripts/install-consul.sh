#!/usr/bin/env bash
# Consul, built once from the Go module proxy into the cache; prints its path.
# v1.14.4 is the newest release whose every module is MPL-2.0 (v1.15+ pull in modules under a licence that is
# not open source). Its go.mod replaces consul/api, consul/sdk and consul/proto-public by ./api etc., so it is
# built in a generated wrapper module that points them at the versions that go.mod requires.
set -euo pipefail
CONSUL_VERSION="v1.14.4"
source "$(dirname "$0")/lib/go-wrapper-build.sh"
required_versions() { local_replaces "$1"; }
go_wrapper_build consul "${CONSUL_VERSION}" github.com/hashicorp/consul "${CONSUL_VERSION}" required_versions \
    "-s -w" github.com/hashicorp/consul
