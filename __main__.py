"""The private Docker registry: stack settings in; storage, secrets, configuration, workload, network,
alerting and operations out. Each concern is one component of the ``components`` package; this program
builds each component's Args from the stack's settings and hands one component's outputs to the next."""

from dataclasses import fields

import pulumi
import pulumi_aws as aws

from components.consul_config import RegistryConsulConfig, RegistryConsulConfigArgs
from components.monitoring import RegistryMonitoring, RegistryMonitoringArgs
from components.names import APP_NAME, WORKLOAD_NAME, RegistryNames
from components.network import RegistryNetwork, RegistryNetworkArgs
from components.operations import RegistryOperations, RegistryOperationsArgs
from components.pull_credentials import RegistryPullCredentials, RegistryPullCredentialsArgs
from components.settings import S3Storage, Settings, load_settings
from components.storage import DisasterRecoveryReplica, S3BucketStorage, S3BucketStorageArgs
from components.token_service import TOKEN_SERVICE_RESOURCES, TokenService, TokenServiceArgs
from components.vault_secrets import RegistryVaultSecrets, RegistryVaultSecretsArgs
from components.workload import RegistryWorkload, RegistryWorkloadArgs

STORAGE = "registry-storage"
# Where the DR replica, replication and the collector's IAM role lived before storage owned them: their
# aliases keep the same cloud resources (tests/test_aliases.py).
FORMER_OPERATIONS = ("registry:operations:RegistryOperations", "registry-operations")


def args_from(args_type, settings: Settings, **wiring):
    """``args_type`` filled from the settings field of the same name; ``wiring`` gives the rest
    (names, other components' outputs)."""
    values = {f.name: getattr(settings, f.name) for f in fields(args_type) if f.name not in wiring and hasattr(settings, f.name)}
    return args_type(**values, **wiring)


def moved_from_operations(new_prefix: str):
    """A transformation giving each child of the storage component its name under RegistryOperations."""
    former_type, former_name = FORMER_OPERATIONS
    former_parent = pulumi.create_urn(former_name, former_type)

    def alias(resource: pulumi.ResourceTransformationArgs):
        suffix = resource.name.removeprefix(new_prefix)
        if not suffix.startswith(("-dr-", "-gc-", "-replication")):
            return None
        moved = pulumi.ResourceOptions(aliases=[pulumi.Alias(name=f"{former_name}{suffix}", parent=former_parent)])
        return pulumi.ResourceTransformationResult(resource.props, pulumi.ResourceOptions.merge(resource.opts, moved))
    return alias


def aws_provider(name: str, region: str, tags: dict[str, str], former_name: str, former_parent: tuple[str, str]):
    """The AWS provider of one region; it was a child of ``former_parent`` before components took providers."""
    return aws.Provider(name, region=region, default_tags={"tags": tags}, opts=pulumi.ResourceOptions(
        aliases=[pulumi.Alias(name=former_name, parent=pulumi.create_urn(former_parent[1], former_parent[0]))]))


settings = load_settings()
names = RegistryNames(WORKLOAD_NAME, settings.environment)

storage = None
if isinstance(settings.storage, S3Storage):
    tags = {"app": APP_NAME, "environment": settings.environment, "managed-by": "pulumi"}
    primary = aws_provider(f"{STORAGE}-aws", settings.storage.region, tags,
                           f"{STORAGE}-aws", ("registry:storage:S3BucketStorage", STORAGE))
    replica = None
    if settings.disaster_recovery is not None:
        replica = DisasterRecoveryReplica(
            bucket=settings.disaster_recovery.bucket, region=settings.disaster_recovery.region,
            provider=aws_provider(f"{STORAGE}-dr-aws", settings.disaster_recovery.region,
                                  {**tags, "role": "disaster-recovery"}, f"{FORMER_OPERATIONS[1]}-dr-aws", FORMER_OPERATIONS),
        )
    storage = S3BucketStorage(STORAGE, args_from(
        S3BucketStorageArgs, settings.storage, names=names, environment=settings.environment,
        namespace=settings.namespace, replica=replica,
    ), opts=pulumi.ResourceOptions(providers={"aws": primary}, transformations=[moved_from_operations(STORAGE)]))
    pulumi.export("bucket_name", storage.bucket_name)
    pulumi.export("bucket_arn", storage.bucket_arn)
    pulumi.export("role_arn", storage.role_arn)

secrets = RegistryVaultSecrets("registry-secrets", args_from(RegistryVaultSecretsArgs, settings, names=names))
RegistryConsulConfig("registry-consul", args_from(
    RegistryConsulConfigArgs, settings, names=names, kms_key_arn=storage and storage.kms_key_arn))
registry = RegistryWorkload(names.base, args_from(
    RegistryWorkloadArgs, settings, names=names,
    role_arn=storage and storage.role_arn, pod_annotations=secrets.pod_annotations,
))
RegistryNetwork("registry-network", args_from(RegistryNetworkArgs, settings, names=names))
RegistryMonitoring("registry-monitoring", args_from(RegistryMonitoringArgs, settings, names=names))
RegistryOperations("registry-operations", args_from(
    RegistryOperationsArgs, settings, names=names,
    kms_key_arn=storage and storage.kms_key_arn, gc_role_arn=storage and storage.gc_role_arn,
))

# authMode token: the token service the registry's realm points at (components/token_service.py).
if settings.token_service is not None:
    deployed = settings.token_service
    token_service = TokenService(names.token_service, args_from(
        TokenServiceArgs, settings, names=names, image=deployed.image, replicas=deployed.replicas,
        resources=TOKEN_SERVICE_RESOURCES, realm_host=deployed.realm_host,
        realm_tls_secret_name=deployed.realm_tls_secret_name, oidc=deployed.oidc,
    ))
    pulumi.export("token_realm", token_service.realm)
# The kubelets' pull path: the pull robot's credentials from Vault into each consuming namespace.
if settings.pull_secret_namespaces:
    RegistryPullCredentials("registry-pull-credentials", args_from(
        RegistryPullCredentialsArgs, settings, names=names, registry_hosts=(settings.ingress_host,),
        pull_robot=settings.pull_robot,
    ), opts=pulumi.ResourceOptions(depends_on=[secrets]))

pulumi.export("namespace", settings.namespace)
pulumi.export("service_dns_name", registry.service_dns_name)
