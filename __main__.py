"""The private Docker registry: stack settings in, storage and the registry workload out."""

import pulumi

from components.network import RegistryNetwork, RegistryNetworkArgs
from components.operations import RegistryOperations, RegistryOperationsArgs
from components.settings import S3Storage, load_settings
from components.storage import S3BucketStorage, S3BucketStorageArgs
from components.workload import RegistryWorkload, RegistryWorkloadArgs

settings = load_settings()

role_arn = None
bucket = None
if isinstance(settings.storage, S3Storage):
    bucket = S3BucketStorage(
        "registry-storage",
        S3BucketStorageArgs(storage=settings.storage, environment=settings.environment, namespace=settings.namespace),
    )
    role_arn = bucket.role_arn
    pulumi.export("bucket_name", bucket.bucket_name)
    pulumi.export("bucket_arn", bucket.bucket_arn)
    pulumi.export("role_arn", bucket.role_arn)

registry = RegistryWorkload("registry", RegistryWorkloadArgs(settings=settings, role_arn=role_arn))
RegistryNetwork("registry-network", RegistryNetworkArgs(settings=settings))
RegistryOperations("registry-operations", RegistryOperationsArgs(
    settings=settings, storage=bucket, bucket_name=bucket and bucket.bucket_name,
    bucket_arn=bucket and bucket.bucket_arn, kms_key_arn=bucket and bucket.kms_key_arn))

pulumi.export("namespace", settings.namespace)
pulumi.export("service_dns_name", registry.service_dns_name)
