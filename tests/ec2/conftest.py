"""Fixtures of the EC2 suites: the strict AWS stand-ins (S3, STS, EC2 in one moto) behind
the recording proxy, and an environment that reaches them and nothing else."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from amibundle.ec2 import register
from tests.support.aws import AwsStandIn
from tests.support.aws_fixtures import aws, aws_proxy, aws_session
from tests.support.s3proxy import Proxy

__all__ = ["aws", "aws_env", "aws_proxy", "aws_session", "fast_polls", "no_aws_config"]


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
