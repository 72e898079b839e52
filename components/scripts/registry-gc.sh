#!/bin/sh
# Garbage-collect the registry's storage without stopping pulls.
#
# The registry reads its configuration only at start, so read-only mode means a restart of every
# replica. To keep pulls served while replicas restart (staging has exactly one), this Job pod first
# starts its own read-only registry on the same storage; the pod carries the registry's selector
# labels, so once it is Ready the client Service (and the mesh) send pulls to it as well. Then:
#
#   1. flip the Consul KV read-only flag on and start the Job's own read-only replica;
#   2. restart the StatefulSet pods one at a time, each waited for until it is Ready again (and,
#      with probe credentials, until it answers 405 to an upload);
#   3. run `registry garbage-collect` (with --delete-untagged where GC_DELETE_UNTAGGED=true) against
#      the same storage;
#   4. always, also on failure or SIGTERM: flip the flag off, restart the pods again and wait until
#      they accept uploads; only then take the Job's replica out of the Service and stop it.
#
# Kubernetes and Consul are reached only through `kubectl` and `consul kv put`, so the sequence runs
# unchanged against stubs in the tests. Every log line starts with "registry-gc:" and a UTC time.
set -eu

: "${NAMESPACE:?NAMESPACE is required}"
: "${READONLY_KV_KEY:?READONLY_KV_KEY (registry/<env>/maintenance/REGISTRY_STORAGE_MAINTENANCE_READONLY) is required}"
STATEFULSET=${STATEFULSET:-registry}
GC_CONFIG_FILE=${GC_CONFIG_FILE:-/etc/distribution/config.yml}
# The Job's own replica: config-cli loads the same KV (now read-only) and Vault secrets as the pods.
SERVE_COMMAND=${GC_SERVE_COMMAND:-config-cli run docker-registry}
case "${GC_DELETE_UNTAGGED:-false}" in
    true) COLLECT_FLAGS=--delete-untagged ;;
    false) COLLECT_FLAGS= ;;
    *) echo "registry-gc: GC_DELETE_UNTAGGED must be true or false, got '$GC_DELETE_UNTAGGED'" >&2; exit 64 ;;
esac
COLLECT_COMMAND=${GC_COLLECT_COMMAND:-registry garbage-collect $COLLECT_FLAGS $GC_CONFIG_FILE}
REPLICA_URL=${GC_REPLICA_URL:-http://127.0.0.1:5000}
# The readiness probe of the Job pod fails while this file exists: the replica leaves the Service
# before it is stopped, so no pull is sent to a registry that is shutting down.
DRAIN_MARKER=${GC_DRAIN_MARKER:-/tmp/registry-gc-draining}
# Optional: check each restarted pod directly (@POD@ is replaced by the pod name) with a CI
# credential ("user:password" in a file) - unauthenticated uploads get 401 before read-only is seen.
POD_URL_TEMPLATE=${GC_POD_URL_TEMPLATE:-}
PROBE_CREDENTIALS_FILE=${GC_PROBE_CREDENTIALS_FILE:-}
PROBE_REPOSITORY=${GC_PROBE_REPOSITORY:-registry-gc/probe}
# Time for endpoint changes (Service, mesh) to reach every client after a readiness change.
SETTLE_SECONDS=${GC_SETTLE_SECONDS:-15}
POLL_SECONDS=${GC_POLL_SECONDS:-2}
# Consul ACL login with the pod's service account token (the token may write only the read-only key).
CONSUL_LOGIN_METHOD=${GC_CONSUL_LOGIN_METHOD:-}
SERVICE_ACCOUNT_TOKEN=${GC_SERVICE_ACCOUNT_TOKEN:-/var/run/secrets/kubernetes.io/serviceaccount/token}
# Consul's dataplane sidecar never exits by itself; a Job pod asks it to once the work is done.
SIDECAR_SHUTDOWN_URL=${GC_SIDECAR_SHUTDOWN_URL:-}
POD_TIMEOUT_SECONDS=${GC_POD_TIMEOUT_SECONDS:-600}

window_open=0
replica_pid=
collector_pid=
replicas=

log() {
    printf 'registry-gc: %s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"
}

set_read_only() {
    # $1: true or false. Retried: a lost write here would leave the registry read-only.
    attempt=1
    while ! consul kv put "$READONLY_KV_KEY" "{\"enabled\":$1}" >/dev/null; do
        [ "$attempt" -ge 5 ] && return 1
        attempt=$((attempt + 1))
        sleep "$POLL_SECONDS"
    done
}

http_status() {
    # $1: method, $2: URL; prints the status code (000 when unreachable). Credentials go through
    # curl's config on stdin, never the command line.
    if [ -n "$PROBE_CREDENTIALS_FILE" ]; then
        printf 'user = "%s"\n' "$(cat "$PROBE_CREDENTIALS_FILE")" |
            curl -K - -s -o /dev/null -w '%{http_code}' -X "$1" --max-time 10 "$2" || true
    else
        curl -s -o /dev/null -w '%{http_code}' -X "$1" --max-time 10 "$2" || true
    fi
}

upload_status() {
    # POST an upload and, if one was opened, cancel it again. Prints the POST's status.
    location_file=$(mktemp)
    if [ -n "$PROBE_CREDENTIALS_FILE" ]; then
        status=$(printf 'user = "%s"\n' "$(cat "$PROBE_CREDENTIALS_FILE")" |
            curl -K - -s -D "$location_file" -o /dev/null -w '%{http_code}' -X POST --max-time 10 \
                "$1/v2/$PROBE_REPOSITORY/blobs/uploads/" || true)
    else
        status=$(curl -s -D "$location_file" -o /dev/null -w '%{http_code}' -X POST --max-time 10 \
            "$1/v2/$PROBE_REPOSITORY/blobs/uploads/" || true)
    fi
    if [ "$status" = 202 ]; then
        location=$(sed -n 's/^[Ll]ocation: *\([^[:space:]]*\).*/\1/p' "$location_file")
        case "$location" in
            http*) ;;
            *) location="$1$location" ;;
        esac
        http_status DELETE "$location" >/dev/null
    fi
    rm -f "$location_file"
    printf '%s' "$status"
}

wait_until() {
    # $1: what, $2...: a command that succeeds once the condition holds.
    what=$1
    shift
    deadline=$(($(date +%s) + POD_TIMEOUT_SECONDS))
    until "$@"; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            log "gave up after ${POD_TIMEOUT_SECONDS}s waiting for $what"
            return 1
        fi
        sleep "$POLL_SECONDS"
    done
}

pod_state() {
    kubectl -n "$NAMESPACE" get pod "$1" \
        -o 'jsonpath={.metadata.uid} {.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true
}

pod_replaced_and_ready() {
    # $1: pod, $2: uid of the pod that was deleted
    set -- "$1" "$2" $(pod_state "$1")
    [ "$#" -eq 4 ] && [ "$3" != "$2" ] && [ "$4" = True ]
}

own_pod_ready() {
    set -- $(pod_state "$1")
    [ "${2:-}" = True ]
}

replica_serves() {
    kill -0 "$replica_pid" 2>/dev/null || { log "own read-only replica exited"; exit 1; }
    [ "$(http_status GET "$REPLICA_URL/")" = 200 ]
}

pod_answers() {
    # $1: pod, $2: expected upload status (405 read-only, 202 writable)
    [ "$(upload_status "$(printf '%s' "$POD_URL_TEMPLATE" | sed "s/@POD@/$1/g")")" = "$2" ]
}

restart_pod() {
    # $1: pod, $2: upload status to expect afterwards
    old_uid=$(pod_state "$1" | cut -d' ' -f1)
    log "restarting $1 (uid ${old_uid:-none})"
    kubectl -n "$NAMESPACE" delete pod "$1" --wait=false >/dev/null
    wait_until "$1 to be replaced and Ready" pod_replaced_and_ready "$1" "$old_uid"
    if [ -n "$POD_URL_TEMPLATE" ] && [ -n "$PROBE_CREDENTIALS_FILE" ]; then
        wait_until "$1 to answer $2 to an upload" pod_answers "$1" "$2"
    fi
    log "$1 is Ready (uploads: $2)"
}

restart_all() {
    # $1: upload status to expect. Ordinal order, one at a time, like the StatefulSet's own rollout.
    ordinal=0
    while [ "$ordinal" -lt "$replicas" ]; do
        restart_pod "$STATEFULSET-$ordinal" "$1" || return 1
        ordinal=$((ordinal + 1))
    done
}

stop_replica() {
    [ -n "$replica_pid" ] || return 0
    touch "$DRAIN_MARKER"
    log "own read-only replica leaves the Service; stopping it in ${SETTLE_SECONDS}s"
    sleep "$SETTLE_SECONDS"
    kill -TERM "$replica_pid" 2>/dev/null || true
    wait "$replica_pid" 2>/dev/null || true
    replica_pid=
    log "own read-only replica stopped"
}

finish() {
    status=$?
    trap - EXIT INT TERM
    set +e
    if [ -n "$collector_pid" ] && kill -0 "$collector_pid" 2>/dev/null; then
        # Write mode must not return while a sweep may still delete blobs: stop it first. A sweep cut
        # short deletes less, never more (everything it deletes was unreferenced when it marked).
        log "stopping the garbage collection (pid $collector_pid)"
        kill -TERM "$collector_pid" 2>/dev/null
        wait "$collector_pid" 2>/dev/null
    fi
    if [ "$window_open" = 1 ]; then
        log "restoring write mode"
        if set_read_only false && restart_all 202; then
            log "read-only window closed: write mode restored on every replica"
        else
            log "FAILED to restore write mode: run the manual steps of docs/operations.md (Garbage collection)"
            status=1
        fi
    fi
    stop_replica
    if [ -n "$SIDECAR_SHUTDOWN_URL" ]; then
        curl -s -o /dev/null -X POST --max-time 10 "$SIDECAR_SHUTDOWN_URL" || true
    fi
    log "finished with exit status $status"
    exit "$status"
}

trap finish EXIT
trap 'log "interrupted"; exit 143' TERM
trap 'log "interrupted"; exit 130' INT

if [ -n "$CONSUL_LOGIN_METHOD" ]; then
    CONSUL_HTTP_TOKEN_FILE=$(mktemp)
    export CONSUL_HTTP_TOKEN_FILE
    consul login -method="$CONSUL_LOGIN_METHOD" -bearer-token-file="$SERVICE_ACCOUNT_TOKEN" \
        -token-sink-file="$CONSUL_HTTP_TOKEN_FILE" >/dev/null
fi

replicas=$(kubectl -n "$NAMESPACE" get statefulset "$STATEFULSET" -o 'jsonpath={.spec.replicas}')
case "$replicas" in
    '' | *[!0-9]*) log "cannot read the replica count of statefulset/$STATEFULSET: '$replicas'"; exit 1 ;;
esac
log "statefulset/$STATEFULSET has $replicas replicas"

window_open=1
set_read_only true
log "read-only window opened: $READONLY_KV_KEY is read-only"

rm -f "$DRAIN_MARKER"
$SERVE_COMMAND &
replica_pid=$!
wait_until "the own read-only replica to serve" replica_serves
if [ -n "$PROBE_CREDENTIALS_FILE" ]; then
    status=$(upload_status "$REPLICA_URL")
    [ "$status" = 405 ] || { log "own replica answered $status to an upload, expected 405"; exit 1; }
fi
if [ -n "${POD_NAME:-}" ]; then
    wait_until "pod $POD_NAME to be Ready" own_pod_ready "$POD_NAME"
fi
log "own read-only replica is serving; waiting ${SETTLE_SECONDS}s for the Service to include it"
sleep "$SETTLE_SECONDS"

restart_all 405
log "every replica serves read-only; collecting garbage"
# In the background, so that SIGTERM (the Job's deadline) reaches the trap without waiting for it.
$COLLECT_COMMAND &
collector_pid=$!
wait "$collector_pid"
collector_pid=
log "garbage collection finished"
