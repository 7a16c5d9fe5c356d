"""Fixtures of the to-ebs tests: the strict AWS stand-in (EBS and EC2) behind the recording
proxy, and block retries without their backoff sleeps."""

from __future__ import annotations

import pytest
from botocore.retries.standard import ExponentialBackoff

from amibundle.ebs import convert
from amibundle.ebs.blocks import RetryPolicy
from tests.support.aws_fixtures import aws, aws_proxy, aws_session

__all__ = ["aws", "aws_proxy", "aws_session", "fast_retries"]


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retry at once: botocore's backoff and the block writer's own rounds wait 0 s."""
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)
    monkeypatch.setattr(convert, "RETRY", RetryPolicy(rounds=6, base=0.0))
