"""Run moto's standalone server on 127.0.0.1 as the S3/IAM stand-in, plus boto3 helpers for it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from .processes import (LOOPBACK, ManagedProcess, clean_env, executable_beside_python, free_port, start_process,
                        wait_for_http)

REGION = "us-east-1"
# moto accepts any credentials until IAM enforcement starts; these are the "bootstrap" credentials.
ROOT_ACCESS_KEY = "testing"
ROOT_SECRET_KEY = "testing"


@dataclass
class MotoServer:
    process: ManagedProcess
    url: str
    iam_enforced_after: int | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def client(self, service: str, access_key: str = ROOT_ACCESS_KEY, secret_key: str = ROOT_SECRET_KEY,
               region: str = REGION) -> Any:
        """A boto3 client for this server; path-style addressing, no retries, never a proxy or CA bundle."""
        session = boto3.session.Session(aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                                        region_name=region)
        return session.client(service, endpoint_url=self.url, verify=False, config=Config(
            s3={"addressing_style": "path"}, retries={"max_attempts": 1, "mode": "standard"},
            proxies={}, signature_version="s3v4" if service == "s3" else None))

    def create_bucket(self, name: str, versioning: bool = True) -> None:
        s3 = self.client("s3")
        s3.create_bucket(Bucket=name)
        if versioning:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})

    def create_user_with_inline_policy(self, user_name: str, policy: dict | str,
                                       policy_name: str = "inline") -> tuple[str, str]:
        """Create an IAM user holding exactly one inline policy; return (access key id, secret key)."""
        iam = self.client("iam")
        iam.create_user(UserName=user_name)
        document = policy if isinstance(policy, str) else json.dumps(policy)
        iam.put_user_policy(UserName=user_name, PolicyName=policy_name, PolicyDocument=document)
        key = iam.create_access_key(UserName=user_name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    def stop(self, timeout: float = 10.0) -> int:
        return self.process.stop(timeout=timeout)


def start_moto_server(workdir: str | Path, *, initial_no_auth_action_count: int | None = None,
                      name: str = "moto") -> MotoServer:
    """Start `moto_server -H 127.0.0.1 -p PORT`.

    With initial_no_auth_action_count=N, moto enforces SigV4 + IAM policies after N requests (managed policies
    such as AdministratorAccess are not loaded; use inline policies). Every boto3 call counts, including the
    ones that create the bucket and the IAM user, so N must cover the setup calls.
    """
    port = free_port()
    env: dict[str, str] = {"AWS_DEFAULT_REGION": REGION}
    if initial_no_auth_action_count is not None:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(initial_no_auth_action_count)
    child_env = clean_env(env, drop=("AWS_CA_BUNDLE", "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))
    executable = executable_beside_python("moto_server", "pip install 'moto[server]'")
    proc = start_process(name, [executable, "-H", LOOPBACK, "-p", str(port)],
                         Path(workdir) / f"{name}.log", env=child_env)
    url = f"http://{LOOPBACK}:{port}"
    try:
        # /moto-api/ is moto's own dashboard endpoint and does not count as an AWS action.
        wait_for_http(proc, url + "/moto-api/", timeout=30)
    except Exception:
        proc.stop(timeout=5)
        raise
    return MotoServer(process=proc, url=url, iam_enforced_after=initial_no_auth_action_count)
