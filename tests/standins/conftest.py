"""The stand-ins' own tests use the fixtures every AWS suite will use."""

from tests.support.aws_fixtures import aws, aws_proxy, aws_session

__all__ = ["aws", "aws_proxy", "aws_session"]
