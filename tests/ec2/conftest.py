"""Fixtures of the EC2 suites: the strict AWS stand-ins (S3, STS, EC2 in one moto) behind
the recording proxy, and an environment that reaches them and nothing else."""

from __future__ import annotations

import pytest

from amibundle.ec2 import register
from tests.support.aws import AwsStandIn
from tests.support.aws_fixtures import aws, aws_proxy, aws_session, no_aws_config
from tests.support.s3proxy import Proxy

__all__ = ["aws", "aws_env", "aws_proxy", "aws_session", "fast_polls", "no_aws_config"]


@pytest.fixture
def aws_env(
    aws: AwsStandIn, aws_proxy: Proxy, no_aws_config: None, monkeypatch: pytest.MonkeyPatch
) -> Proxy:
    """boto3's standard configuration points at the stand-in through the proxy
    (AWS_ENDPOINT_URL, keys, region): the proxy is returned."""
    for name, value in aws.environment(aws_proxy.endpoint_url).items():
        monkeypatch.setenv(name, value)
    return aws_proxy


@pytest.fixture
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """--wait looks at the image without pausing between looks."""
    monkeypatch.setattr(register, "DEFAULT_POLL_INTERVAL", 0.0)
