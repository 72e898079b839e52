"""The registry's policy rules, one module per concern; ``POLICIES`` is what the pack enforces."""

from . import alerting, config_secrets, consul, iam, network, rbac, s3, workload
from . import pull_credentials

POLICIES = [
    *s3.POLICIES,
    *iam.POLICIES,
    *workload.POLICIES,
    *rbac.POLICIES,
    *network.POLICIES,
    *config_secrets.POLICIES,
    *consul.POLICIES,
    *alerting.POLICIES,
    *pull_credentials.POLICIES,
]

__all__ = ["POLICIES"]
