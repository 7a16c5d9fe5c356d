"""The migrate commands run against the strict AWS stand-ins (moto S3 and EC2 as one
account, behind a recording proxy)."""

from tests.support.aws_fixtures import aws, aws_proxy, aws_session

__all__ = ["aws", "aws_proxy", "aws_session"]
