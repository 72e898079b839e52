"""pytest plugin: stacks set up once per session for real-registry tests (with tests.support.fixtures).

``stack_setup("staging")``, ``stack_setup("prod")`` or ``stack_setup("staging", "htpasswd")`` returns a
``StackSetup`` (tests/support/stack_registry.py), each with its own OpenBao (the plan's Vault paths are fixed
per stack, so two setups would overwrite each other's robots); the prod stack gets one moto
server whose IAM enforcement starts right after its bucket, KMS key and IAM user exist.
"""

from __future__ import annotations

from typing import Callable, Iterator

import pytest
from botocore.exceptions import ClientError

from components.settings import TOKEN_KEYS

from .moto_server import MotoServer, start_moto_server
from .stack_registry import S3_SETUP_ACTIONS, StackSetup, prepare_stack

# Variants beyond the stack files: htpasswd mode with its only allowed kind of user (pull users need tokens).
VARIANTS = {
    "as-recorded": {},
    "htpasswd": {"registry:authMode": "htpasswd", "registry:htpasswdUsers": ["ci-runner:push"],
                 **{f"registry:{key}": None for key in TOKEN_KEYS},
                 # Pull Secrets hand out a pull-only robot, which htpasswd mode cannot have.
                 "registry:pullSecretNamespaces": None},
}


@pytest.fixture(scope="session")
def enforcing_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """moto enforcing SigV4 + IAM from the action after provision_s3()'s setup actions."""
    server = start_moto_server(tmp_path_factory.mktemp("moto-iam"), initial_no_auth_action_count=S3_SETUP_ACTIONS)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def stack_setup(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., StackSetup]]:
    setups: dict[tuple[str, str], StackSetup] = {}

    def get(stack: str, variant: str = "as-recorded") -> StackSetup:
        if (stack, variant) not in setups:
            moto = request.getfixturevalue("enforcing_moto") if stack == "prod" else None
            # Each setup its own OpenBao: the plan's Vault paths are the same for every variant of a stack.
            setup = prepare_stack(stack, None, tmp_path_factory.mktemp(f"{stack}-{variant}"), moto=moto,
                                  extra_overrides=VARIANTS[variant])
            if moto is not None:
                _assert_enforced(moto)
            setups[(stack, variant)] = setup
        return setups[(stack, variant)]

    yield get
    for setup in setups.values():
        setup.close()


def _assert_enforced(moto: MotoServer) -> None:
    """The next request after setup is already checked: credentials moto's IAM does not know are refused."""
    try:
        moto.client("s3").list_buckets()
    except ClientError as error:
        assert error.response["Error"]["Code"] in ("InvalidAccessKeyId", "AccessDenied", "InvalidClientTokenId")
        return
    raise AssertionError("moto did not enforce IAM after the setup actions: S3_SETUP_ACTIONS is too high")
