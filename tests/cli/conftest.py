"""The exit-code table runs commands against the strict AWS stand-ins (only the tests that
ask for these fixtures start them)."""

from tests.support.aws_fixtures import aws, aws_proxy, aws_session

__all__ = ["aws", "aws_proxy", "aws_session"]
