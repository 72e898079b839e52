#!/usr/bin/env bash
# kube-apiserver and kube-controller-manager, built once from the Go module proxy into the cache.
# k8s.io/kubernetes replaces each of its ./staging/src/k8s.io/X modules by
# the in-tree copy; the wrapper module points each at its published version v0.<minor>.<patch> instead.
# Then the CRDs the program's objects need, from the Go modules that ship them (the Prometheus Operator's, the
# VolumeSnapshot CRDs, and the External Secrets Operator's ExternalSecret and ClusterSecretStore: Apache-2.0, see
# docs/security.md "Pull credentials"), and etcd from Debian
# (etcd-server). Prints the binaries' paths (one per line), the CRD directory and etcd's path.
set -euo pipefail
KUBERNETES_VERSION="v1.35.4"
source "$(dirname "$0")/lib/go-wrapper-build.sh"
staging_version="v0.${KUBERNETES_VERSION#v1.}"
minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
published_staging() { local_replaces "$1" "${staging_version}"; }
go_wrapper_build kube "${KUBERNETES_VERSION}" k8s.io/kubernetes "${KUBERNETES_VERSION}" published_staging \
    "-s -w -X k8s.io/component-base/version.gitVersion=${KUBERNETES_VERSION} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor} -X k8s.io/component-base/version.gitTreeState=clean" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager

PROMETHEUS_OPERATOR_VERSION="v0.85.0"
EXTERNAL_SNAPSHOTTER_CLIENT_VERSION="v8.7.0"
EXTERNAL_SECRETS_VERSION="v1.3.2"
crds="${XDG_CACHE_HOME:-$HOME/.cache}/registry-iac/kube-crds-prometheus-operator-${PROMETHEUS_OPERATOR_VERSION}-snapshotter-${EXTERNAL_SNAPSHOTTER_CLIENT_VERSION}-external-secrets-${EXTERNAL_SECRETS_VERSION}"
if [[ ! -f "${crds}/.complete" ]]; then
    work="$(mktemp -d)"
    (
        cd "${work}"
        export GOMODCACHE="${work}/gomodcache" GOFLAGS=-mod=mod
        dirs="$(go mod download -json \
            "github.com/prometheus-operator/prometheus-operator@${PROMETHEUS_OPERATOR_VERSION}" \
            "github.com/kubernetes-csi/external-snapshotter/client/v8@${EXTERNAL_SNAPSHOTTER_CLIENT_VERSION}" \
            "github.com/external-secrets/external-secrets@${EXTERNAL_SECRETS_VERSION}" \
            | python3 -c 'import json,sys; d=json.JSONDecoder(); s=sys.stdin.read().strip()
while s:
    o,i=d.raw_decode(s); print(o["Dir"]); s=s[i:].strip()')"
        operator="$(sed -n 1p <<<"${dirs}")" snapshotter="$(sed -n 2p <<<"${dirs}")"
        external_secrets="$(sed -n 3p <<<"${dirs}")"
        mkdir -p "${crds}"
        cp "${operator}/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml" \
           "${operator}/example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml" \
           "${snapshotter}"/config/crd/snapshot.storage.k8s.io_*.yaml \
           "${external_secrets}/config/crds/bases/external-secrets.io_externalsecrets.yaml" \
           "${external_secrets}/config/crds/bases/external-secrets.io_clustersecretstores.yaml" "${crds}/"
        chmod u+w "${crds}"/*.yaml
        touch "${crds}/.complete"
    )
    chmod -R u+w "${work}"; rm -rf "${work}"
fi
echo "${crds}"

if ! command -v etcd >/dev/null 2>&1; then
    echo "apt-get install etcd-server (etcd for the API server)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends etcd-server >/dev/null
fi
command -v etcd
