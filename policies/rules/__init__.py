"""The registry's policy rules, one module per concern; ``POLICIES`` is what the pack enforces."""

from . import alerting, config_secrets, consul, iam, network, rbac, s3, workload

POLICIES = [
    *s3.POLICIES,
    *iam.POLICIES,
    *workload.POLICIES,
    *rbac.POLICIES,
    *network.POLICIES,
    *config_secrets.POLICIES,
    *consul.POLICIES,
    *alerting.POLICIES,
]

__all__ = ["POLICIES"]
