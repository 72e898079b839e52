"""Operations: the garbage-collection CronJob, volume snapshots and the S3 disaster-recovery copy."""

from __future__ import annotations

# The Consul KV key config-cli exports as REGISTRY_STORAGE_MAINTENANCE_READONLY (the config branch owns
# the KV layout; this is the one place that spells the key's path).
READONLY_KV_KEY_TEMPLATE = "registry/{environment}/REGISTRY_STORAGE_MAINTENANCE_READONLY"


def readonly_kv_key(environment: str) -> str:
    return READONLY_KV_KEY_TEMPLATE.format(environment=environment)


def gc_role_rules(statefulset: str, replicas: int) -> list[dict]:
    """The least the GC script needs: read its StatefulSet, watch pods, delete only the registry's pods.

    Reading pods cannot be limited by name: the Job also waits for its own pod, whose name is random.
    """
    return [
        {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": ["get"], "resourceNames": [statefulset]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"],
         "resourceNames": [f"{statefulset}-{ordinal}" for ordinal in range(replicas)]},
    ]
