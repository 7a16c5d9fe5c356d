"""pytest fixtures for the AWS stand-ins; import them into a conftest to use them:

    from tests.support.aws_fixtures import aws, aws_proxy, aws_session  # noqa: F401

* `aws_session` — one `AwsStandIn` (moto with strict EC2 and EBS) for the whole session,
  shared by every conftest that imports it.
* `aws` — that stand-in, reset before the test (no buckets, images, snapshots; default
  fates; recorded calls cleared) and acting as `aws.account_id` for the test.
* `aws_proxy` — a recording, fault-injecting `Proxy` in front of it, stopped after the test;
  point clients at `aws_proxy.endpoint_url` (`aws.client("ec2", endpoint_url=...)`, or
  `aws.environment(aws_proxy.endpoint_url)` for a subprocess).
* `no_aws_config` — nothing of the machine's AWS setup (profiles, endpoints, keys, instance
  metadata, a terminal on stdin) reaches the code under test.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.s3proxy import Proxy

from .aws import ACCOUNT_ENV, AwsStandIn

__all__ = ["aws", "aws_proxy", "aws_session", "no_aws_config"]


# The one stand-in of the test session and how many conftests' fixtures hold it. Each
# conftest that imports these fixtures defines its own session fixture; two stand-ins would
# patch moto twice (every DescribeImages would count two looks), so they share one.
_shared: list[AwsStandIn] = []
_holders = [0]


@pytest.fixture(scope="session")
def aws_session() -> Iterator[AwsStandIn]:
    if not _shared:
        _shared.append(AwsStandIn().start())
    _holders[0] += 1
    try:
        yield _shared[0]
    finally:
        _holders[0] -= 1
        if _holders[0] == 0:
            _shared.pop().stop()


@pytest.fixture
def aws(aws_session: AwsStandIn, monkeypatch: pytest.MonkeyPatch) -> AwsStandIn:
    """The session's stand-in, emptied, acting as its account for this test."""
    aws_session.reset()
    monkeypatch.setenv(ACCOUNT_ENV, aws_session.account_id)
    return aws_session


@pytest.fixture
def aws_proxy(aws: AwsStandIn) -> Iterator[Proxy]:
    """A recording, fault-injecting proxy in front of the stand-in (all services)."""
    with Proxy(aws.endpoint_url) as proxy:
        yield proxy


@pytest.fixture
def no_aws_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing of the machine's AWS setup (profiles, endpoints, keys) reaches the code."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
