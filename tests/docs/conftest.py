"""Fixtures of the documentation tests: the AWS stand-in the README's S3 examples talk to."""

from tests.support.aws_fixtures import aws, aws_proxy, aws_session  # noqa: F401
