# Build Go commands of a module that cannot be `go install`ed directly (its go.mod has replace directives, or
# its staging modules live in the same repository), inside a small wrapper module generated here from the
# version: nothing upstream is vendored into this repository; everything comes from the Go module proxy.
#
# Source this file, then call
#   go_wrapper_build NAME VERSION MODULE MODULE_VERSION REPLACES_FN LDFLAGS PACKAGE...
# NAME-VERSION is the cache directory (${XDG_CACHE_HOME:-$HOME/.cache}/registry-iac/NAME-VERSION/bin);
# REPLACES_FN is a function called with the path of MODULE's go.mod that prints `old=new@version` replace
# arguments, one per line (or `-` for none). Prints each binary path on stdout; progress goes to stderr.
#
# The build uses its own module and build caches, removed afterwards: only the binaries are kept (the Go caches
# of these builds reach several GiB; the builds are reproducible, so they are cheaper to redo than to keep).
# Set REGISTRY_IAC_KEEP_GO_CACHES=1 to use and keep the user's normal Go caches instead.
# A PACKAGE starting with ./ is a package of the wrapper module itself, written by a `go_wrapper_prebuild`
# function the caller defines (see install-pulumi-kubernetes.sh).

# REPLACES_FN helper: for each replace in GOMOD that points into the module's own tree (`=> ./api`), a replace of
# that module path by its published version: VERSION if given, else the version GOMOD requires.
local_replaces() {
    local gomod="$1" version="${2:-}"
    go mod edit -json "${gomod}" | python3 -c '
import json, sys
mod, version = json.load(sys.stdin), sys.argv[1]
required = {r["Path"]: r["Version"] for r in mod.get("Require") or []}
for r in mod.get("Replace") or []:
    if r["New"]["Path"].startswith("./"):
        path = r["Old"]["Path"]
        print(f"{path}={path}@{version or required[path]}")
' "${version}"
}

go_wrapper_build() {
    local name="$1" version="$2" module="$3" module_version="$4" replaces_fn="$5" ldflags="$6"
    shift 6
    local packages=("$@") prefix binary missing=0 pkg
    prefix="${XDG_CACHE_HOME:-$HOME/.cache}/registry-iac/${name}-${version}"
    for pkg in "${packages[@]}"; do
        [[ -x "${prefix}/bin/$(basename "${pkg}")" ]] || missing=1
    done
    if [[ "${missing}" == 0 ]]; then
        echo "${name} ${version} already installed in ${prefix}/bin (0s)" >&2
        for pkg in "${packages[@]}"; do echo "${prefix}/bin/$(basename "${pkg}")"; done
        return 0
    fi
    if ! command -v go >/dev/null 2>&1; then
        echo "error: 'go' not found on PATH; Go >= 1.26 is needed to build ${name} ${version}" >&2
        return 1
    fi

    mkdir -p "${prefix}"
    local work start
    work="$(mktemp -d "${prefix}/build.XXXXXX")"
    # Module cache files are read-only: make them writable so the cleanup can remove them.
    trap "chmod -R u+w '${work}' 2>/dev/null; rm -rf '${work}'" EXIT
    start=$(date +%s)
    echo "building ${name} ${version} (${module}@${module_version}) with $(go version) ..." >&2
    (
        set -euo pipefail
        cd "${work}"
        export GOTOOLCHAIN="${GOTOOLCHAIN:-local}" GOFLAGS="-mod=mod -buildvcs=false"
        if [[ "${REGISTRY_IAC_KEEP_GO_CACHES:-0}" != 1 ]]; then
            export GOMODCACHE="${work}/gomodcache" GOCACHE="${work}/gocache"
        fi
        mkdir src && cd src
        go mod init "registry-iac.local/build/${name}" >/dev/null 2>&1
        local gomod replace
        gomod="$(go mod download -json "${module}@${module_version}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
        go mod edit -require="${module}@${module_version}"
        while read -r replace; do
            [[ -z "${replace}" || "${replace}" == - ]] && continue
            go mod edit -replace="${replace}"
        done < <("${replaces_fn}" "${gomod}")
        for pkg in "${packages[@]}"; do
            [[ "${pkg}" == ./* ]] || go get "${pkg}@${module_version}" >&2
        done
        # Optional hook for a module whose command cannot be built as published (generated files missing
        # from its module zip): called in the wrapper module with the module's directory.
        if declare -F go_wrapper_prebuild >/dev/null; then
            go get "${module}@${module_version}" >&2
            go_wrapper_prebuild "$(go list -m -f '{{.Dir}}' "${module}")" >&2
        fi
        mkdir -p "${work}/bin"
        go build -trimpath -ldflags="${ldflags}" -o "${work}/bin/" "${packages[@]}" >&2
    )
    mkdir -p "${prefix}/bin"
    for pkg in "${packages[@]}"; do
        mv -f "${work}/bin/$(basename "${pkg}")" "${prefix}/bin/"
    done
    echo "built ${name} ${version} in $(( $(date +%s) - start ))s (cold: empty Go caches)" >&2
    for pkg in "${packages[@]}"; do echo "${prefix}/bin/$(basename "${pkg}")"; done
}
