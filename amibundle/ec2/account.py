"""Whose credentials these are: the account id, from STS GetCallerIdentity.

A bundle's manifest names the account it is for (``-u``); with AWS
credentials at hand, asking STS saves the user from typing it.
"""

from __future__ import annotations

from amibundle.ec2.client import ec2_errors, session_for, sts_client
from amibundle.s3.settings import S3Settings
from amibundle.validate import check_record

__all__ = ["caller_account", "has_credentials"]


def has_credentials(settings: S3Settings) -> bool:
    """Whether any credentials are available (given, environment, profile,
    instance role); asks no AWS service but the instance metadata."""
    settings = check_record(settings, S3Settings, "settings")
    return session_for(settings).get_credentials() is not None


def caller_account(settings: S3Settings) -> str:
    """The 12-digit account id of the credentials ``settings`` lead to."""
    settings = check_record(settings, S3Settings, "settings")
    with ec2_errors("find the account id (STS GetCallerIdentity)"):
        answer = sts_client(settings).get_caller_identity()
    return str(answer["Account"])
