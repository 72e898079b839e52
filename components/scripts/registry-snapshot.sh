#!/bin/sh
# Take a VolumeSnapshot of the registry's volume, wait until it is usable, then delete the oldest
# snapshots beyond the retention count. Kubernetes has no snapshot scheduler of its own; this runs
# from a CronJob. Old snapshots are pruned only after the new one is ready, so a failing snapshot
# never shrinks the set of good ones.
set -eu

: "${NAMESPACE:?NAMESPACE is required}"
: "${CLAIM:?CLAIM (the PersistentVolumeClaim to snapshot) is required}"
: "${SNAPSHOT_CLASS:?SNAPSHOT_CLASS is required}"
: "${RETENTION:?RETENTION (snapshots to keep) is required}"
: "${SELECTOR_LABELS:?SELECTOR_LABELS (key=value,... identifying this schedule's snapshots) is required}"
READY_TIMEOUT_SECONDS=${READY_TIMEOUT_SECONDS:-1800}
POLL_SECONDS=${POLL_SECONDS:-5}

log() {
    printf 'registry-snapshot: %s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"
}

name="$CLAIM-$(date -u +%Y%m%d-%H%M%S)"
labels=$(printf '%s' "$SELECTOR_LABELS" | tr ',' '\n' | sed 's/^\([^=]*\)=\(.*\)$/    \1: "\2"/')

kubectl -n "$NAMESPACE" create -f - >/dev/null <<EOF
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata:
  name: $name
  labels:
$labels
spec:
  volumeSnapshotClassName: $SNAPSHOT_CLASS
  source:
    persistentVolumeClaimName: $CLAIM
EOF
log "created volumesnapshot/$name of pvc/$CLAIM (class $SNAPSHOT_CLASS)"

deadline=$(($(date +%s) + READY_TIMEOUT_SECONDS))
until [ "$(kubectl -n "$NAMESPACE" get volumesnapshot "$name" -o 'jsonpath={.status.readyToUse}')" = true ]; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
        log "volumesnapshot/$name not ready after ${READY_TIMEOUT_SECONDS}s; keeping every older snapshot"
        exit 1
    fi
    sleep "$POLL_SECONDS"
done
log "volumesnapshot/$name is ready to use"

# Oldest first; names carry a UTC timestamp, so the name order is the creation order.
snapshots=$(kubectl -n "$NAMESPACE" get volumesnapshots -l "$SELECTOR_LABELS" \
    -o 'jsonpath={range .items[*]}{.metadata.name}{"\n"}{end}' | grep . | sort)
count=$(printf '%s\n' "$snapshots" | grep -c .)
excess=$((count - RETENTION))
if [ "$excess" -gt 0 ]; then
    printf '%s\n' "$snapshots" | head -n "$excess" | while read -r old; do
        kubectl -n "$NAMESPACE" delete volumesnapshot "$old" --wait=false >/dev/null
        log "pruned volumesnapshot/$old"
    done
fi
log "keeping $((count > RETENTION ? RETENTION : count)) snapshots"
