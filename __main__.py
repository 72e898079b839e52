"""The private Docker registry: stack settings in; storage, secrets, configuration, workload,
network, alerting and operations out. Each concern is one component in components/."""

import pulumi

from components.consul_config import RegistryConsulConfig, RegistryConsulConfigArgs
from components.monitoring import RegistryMonitoring, RegistryMonitoringArgs
from components.network import RegistryNetwork, RegistryNetworkArgs
from components.operations import RegistryOperations, RegistryOperationsArgs
from components.settings import S3Storage, load_settings
from components.storage import S3BucketStorage, S3BucketStorageArgs
from components.vault_secrets import RegistryVaultSecrets, RegistryVaultSecretsArgs
from components.workload import RegistryWorkload, RegistryWorkloadArgs

settings = load_settings()

bucket = None
if isinstance(settings.storage, S3Storage):
    bucket = S3BucketStorage(
        "registry-storage",
        S3BucketStorageArgs(storage=settings.storage, environment=settings.environment, namespace=settings.namespace),
    )
    pulumi.export("bucket_name", bucket.bucket_name)
    pulumi.export("bucket_arn", bucket.bucket_arn)
    pulumi.export("role_arn", bucket.role_arn)

secrets = RegistryVaultSecrets("registry-secrets", RegistryVaultSecretsArgs(settings=settings))
RegistryConsulConfig(
    "registry-consul", RegistryConsulConfigArgs(settings=settings, kms_key_arn=bucket and bucket.kms_key_arn)
)
registry = RegistryWorkload(
    "registry", RegistryWorkloadArgs(
        settings=settings, role_arn=bucket and bucket.role_arn, pod_annotations=secrets.pod_annotations,
    ),
)
RegistryNetwork("registry-network", RegistryNetworkArgs(settings=settings))
RegistryMonitoring("registry-monitoring", RegistryMonitoringArgs(settings=settings))
RegistryOperations("registry-operations", RegistryOperationsArgs(settings=settings, bucket=bucket))

pulumi.export("namespace", settings.namespace)
pulumi.export("service_dns_name", registry.service_dns_name)
