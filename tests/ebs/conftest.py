"""Fixtures of the to-ebs tests: the strict AWS stand-in (EBS and EC2) behind the recording
proxy, and block retries without their backoff sleeps."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from botocore.retries.standard import ExponentialBackoff

from amibundle.ebs import convert
from amibundle.ebs.blocks import RetryPolicy
from tests.support.aws_fixtures import aws, aws_proxy, aws_session

__all__ = ["aws", "aws_proxy", "aws_session", "fast_retries", "library_logging"]


@pytest.fixture(autouse=True)
def library_logging() -> Iterator[None]:
    """The command line points the amibundle logger at the stderr of its moment (a test's
    capture) and stops it propagating; put it back after each test, so that later tests'
    warnings reach caplog and no closed stream."""
    logger = logging.getLogger("amibundle")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    yield
    logger.handlers[:], logger.propagate = saved[0], saved[1]
    logger.setLevel(saved[2])


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retry and poll at once: botocore's backoff, the block writer's own rounds and
    --wait's polling wait 0 s."""
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)
    monkeypatch.setattr(convert, "RETRY", RetryPolicy(rounds=6, base=0.0))
    monkeypatch.setattr(convert, "WAIT_POLL", 0.01)
