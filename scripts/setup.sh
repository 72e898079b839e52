#!/usr/bin/env bash
# Set up this checkout. Idempotent: each step is skipped when its result is already in place.
#
#   scripts/setup.sh plan   the program's virtualenv (venv/, as Pulumi.yaml names it) with what the
#                           offline plan and the policy pack need
#   scripts/setup.sh test   the above plus test dependencies and the real tools the tests run:
#                           promtool (Debian), checkov (own virtualenv), Distribution v3 and
#                           actionlint (built with `go install`), the registry clients (skopeo and
#                           containerd from Debian; oras, cosign and the OCI conformance suite from the Go
#                           module proxy), and the real peers: the Pulumi CLI,
#                           Consul, kube-apiserver + kube-controller-manager, the Pulumi kubernetes
#                           provider (built from the Go module proxy) with etcd (Debian)
#
# Builds and downloads are cached under ${XDG_CACHE_HOME:-$HOME/.cache} (pip's cache, registry-iac/).
set -euo pipefail

mode="${1:-test}"
case "${mode}" in plan|test) ;; *) echo "usage: $0 plan|test" >&2; exit 64 ;; esac

root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/registry-iac"
python="${PYTHON:-python3}"
mkdir -p "${cache}"

step() { printf '==> %s\n' "$*" >&2; }

# Install a requirements file into a virtualenv unless the same requirements were installed there before.
install_requirements() {
    local venv="$1" requirements="$2" stamp
    stamp="${venv}/.installed-$(basename "${requirements}" .txt)-$(cat requirements*.txt policies/requirements.txt | sha256sum | cut -c1-16)"
    [[ -f "${stamp}" ]] && return
    [[ -x "${venv}/bin/python" ]] || "${python}" -m venv "${venv}"
    step "pip install -r $(basename "${requirements}") into ${venv}"
    "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check -r "${requirements}"
    touch "${stamp}"
}

cd "${root}"
if [[ "${mode}" == plan ]]; then
    # The test requirements include the plan's; an environment set up for tests is ready to plan.
    if ! compgen -G "${root}/venv/.installed-requirements-dev-*" >/dev/null \
        || [[ ! -f "${root}/venv/.installed-requirements-dev-$(cat requirements*.txt policies/requirements.txt | sha256sum | cut -c1-16)" ]]; then
        install_requirements "${root}/venv" "${root}/requirements-plan.txt"
    fi
    exit 0
fi

install_requirements "${root}/venv" "${root}/requirements-dev.txt"

# Debian packages: promtool (prometheus); skopeo and containerd (ctr), real registry clients the access tests use.
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v ctr >/dev/null 2>&1 || missing+=(containerd)
if [[ ${#missing[@]} -gt 0 ]]; then
    step "apt-get install ${missing[*]}"
    # CI machines run this as root; a GitHub-hosted runner as a user with passwordless sudo.
    as_root=()
    [[ "$(id -u)" -eq 0 ]] || as_root=(sudo DEBIAN_FRONTEND=noninteractive)
    export DEBIAN_FRONTEND=noninteractive
    "${as_root[@]}" apt-get update -qq >/dev/null
    "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

checkov_venv="${cache}/checkov-$(sha256sum requirements-checkov.txt | cut -c1-12)"
if [[ ! -x "${checkov_venv}/bin/checkov" ]]; then
    step "checkov into ${checkov_venv} (its own virtualenv: it pins an old boto3)"
    rm -rf "${checkov_venv}"
    "${python}" -m venv "${checkov_venv}"
    "${checkov_venv}/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
fi
ln -sfn "${checkov_venv}" "${cache}/checkov"

scripts/install-registry.sh >/dev/null
scripts/install-actionlint.sh >/dev/null
scripts/install-oras.sh >/dev/null
scripts/install-conformance.sh >/dev/null
scripts/install-eso-template.sh >/dev/null
# cosign (5.6 min cold alone, 1.4 GB peak) builds in the background beside the Pulumi CLI and Consul, whose
# download and link phases leave a core idle; kube-apiserver and the kubernetes provider (4.5 GB) start once it
# is done, so at most ~3.5 GB are in use at a time. Its log is printed only if it fails.
cosign_log="${cache}/install-cosign.log"
scripts/install-cosign.sh >/dev/null 2>"${cosign_log}" &
cosign_pid=$!
# If a foreground step fails, let the build finish (its own trap tidies up) rather than leave it running.
trap '[[ -z "${cosign_pid}" ]] || wait "${cosign_pid}" || true' EXIT
# The real peers (docs/peers.md): minutes each when cold, one at a time (each peaks at ~2 GB).
scripts/install-pulumi.sh >/dev/null
scripts/install-consul.sh >/dev/null
if ! wait "${cosign_pid}"; then
    cosign_pid=
    tail -n 40 "${cosign_log}" >&2
    echo "error: scripts/install-cosign.sh failed (log: ${cosign_log})" >&2
    exit 1
fi
cosign_pid=
tail -n 1 "${cosign_log}" >&2
scripts/install-kube.sh >/dev/null
scripts/install-pulumi-kubernetes.sh >/dev/null
