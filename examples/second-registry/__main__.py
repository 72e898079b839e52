"""A second registry from the components package only: other names, another namespace, a volume.

Every Args is filled here; nothing of the registry program (its Pulumi.yaml, its settings) is used.
"""

import ipaddress

import pulumi

from components.consul_config import RegistryConsulConfig, RegistryConsulConfigArgs
from components.monitoring import RegistryMonitoring, RegistryMonitoringArgs
from components.names import RegistryNames
from components.network import RegistryNetwork, RegistryNetworkArgs
from components.operations import RegistryOperations, RegistryOperationsArgs
from components.settings import FilesystemStorage, HtpasswdAuth, RegistryUser, Resources, VolumeSnapshots
from components.vault_secrets import RegistryVaultSecrets, RegistryVaultSecretsArgs
from components.workload import RegistryWorkload, RegistryWorkloadArgs

config = pulumi.Config()
environment = pulumi.get_stack()
namespace = config.require("namespace")
image = config.require("image")
names = RegistryNames("team-registry", environment)
storage = FilesystemStorage(storage_class="standard", size="50Gi")
consul_addr, vault_addr = "https://consul-server.consul.svc:8501", "https://vault.vault.svc:8200"
pod = dict(names=names, environment=environment, namespace=namespace, image=image,
           resources=Resources(cpu_request="100m", cpu_limit="1", memory_request="128Mi", memory_limit="512Mi"),
           run_as_user=1000, fs_group=1000, consul_http_addr=consul_addr, consul_auth_method="consul-k8s-auth-method",
           vault_addr=vault_addr, vault_kubernetes_auth_path="kubernetes", vault_auth_audience="vault")
registry_config = dict(storage=storage, auth=HtpasswdAuth(), log_level="info",
                       vault_kv_mount="secret")

secrets = RegistryVaultSecrets(f"{names.base}-secrets", RegistryVaultSecretsArgs(
    names=names, environment=environment, namespace=namespace, vault_kv_mount="secret",
    vault_kubernetes_auth_path="kubernetes", vault_auth_audience="vault", credentials_generation=1,
    users=(RegistryUser(name="team-a-ci", access="push"),), auth=HtpasswdAuth(),
))
RegistryConsulConfig(f"{names.base}-consul", RegistryConsulConfigArgs(
    **registry_config, names=names, environment=environment, namespace=namespace, consul_auth_method="consul-k8s-auth-method",
    consul_intention_sources=("team-a-ci",), credentials_generation=1,
))
registry = RegistryWorkload(names.base, RegistryWorkloadArgs(
    **pod, replicas=1, update_partition=0, storage=storage, termination_grace_period_seconds=30,
    pod_annotations=secrets.pod_annotations,
))
RegistryNetwork(f"{names.base}-network", RegistryNetworkArgs(
    names=names, namespace=namespace, storage=storage, storage_endpoint_cidrs=(), consul_http_addr=consul_addr,
    vault_addr=vault_addr, ci_runner_namespaces=("team-a-ci",), monitoring_namespace="monitoring",
))
RegistryMonitoring(f"{names.base}-monitoring", RegistryMonitoringArgs(
    names=names, namespace=namespace, replicas=1, storage=storage,
    runbook_base_url="https://git.internal.example.com/team-a/registry/blob/main/RUNBOOKS.md",
))
RegistryOperations(f"{names.base}-operations", RegistryOperationsArgs(
    **pod, **registry_config, replicas=1, gc_schedule="30 2 * * 6", gc_active_deadline_seconds=3600,
    gc_delete_untagged=False, operations_tools_image=image, kubernetes_api_cidrs=(ipaddress.ip_network("10.96.0.1/32"),),
    snapshots=VolumeSnapshots(schedule="0 3 * * *", snapshot_class="csi-snapshots", retention=7),
))

pulumi.export("service_dns_name", registry.service_dns_name)
