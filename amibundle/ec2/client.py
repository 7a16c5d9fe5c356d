"""The boto3 EC2 and STS clients, and their refusals turned into one clear line.

:func:`connect` makes an EC2 client from the same
:class:`~amibundle.s3.settings.S3Settings` the S3 commands use (credentials,
profile, region, attempts), with its own endpoint: ``endpoint_url`` (the
``--ec2-url`` option), else boto3's configuration (AWS_ENDPOINT_URL_EC2,
AWS_ENDPOINT_URL, a profile's endpoint_url), else AWS. :func:`ec2_errors`
is the one place where a botocore exception of EC2 or STS becomes an
:class:`~amibundle.errors.Ec2Error` naming what was attempted::

    with ec2_errors(f"deregister {image_id}", conn):
        conn.client.deregister_image(ImageId=image_id)
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from amibundle import aws
from amibundle.errors import Ec2CredentialsError, Ec2Error
from amibundle.s3.settings import DEFAULT_REGION, S3Settings

if TYPE_CHECKING:
    from botocore.exceptions import ClientError

__all__ = [
    "EC2",
    "Ec2Connection",
    "connect",
    "ec2_errors",
    "ec2_failure",
    "error_code",
    "given_region",
    "session_for",
    "sts_client",
]


@dataclass(frozen=True)
class Ec2Connection:
    """A boto3 EC2 client and the region it talks to."""

    client: Any
    region: str
    settings: S3Settings


# EC2's and STS's refusals (STS says whose the credentials are).
EC2 = aws.Service(
    name="AWS",
    error=Ec2Error,
    credentials_error=Ec2CredentialsError,
    credential_codes=aws.CREDENTIAL_CODES | {"AuthFailure", "UnrecognizedClientException"},
)


def session_for(settings: S3Settings) -> Any:
    """A boto3 session with the settings' credentials or profile."""
    return aws.session_for(settings, EC2)


def given_region(settings: S3Settings, session: Any) -> str | None:
    """The region asked for: ``settings.region``, AWS_REGION, AWS_DEFAULT_REGION
    or the profile's; None when none is."""
    return aws.region_asked(settings.region, session)


def connect(
    settings: S3Settings, *, endpoint_url: str | None = None, region: str | None = None
) -> Ec2Connection:
    """An EC2 client: in ``region`` (else the given one, else us-east-1), at
    ``endpoint_url`` (else boto3's configured endpoint, else AWS)."""
    session = session_for(settings)
    region = region or given_region(settings, session) or DEFAULT_REGION
    config = aws.client_config(settings.attempts)
    client = aws.make_client(
        session, "ec2", region=region, endpoint_url=endpoint_url, config=config
    )
    return Ec2Connection(client, region, settings)


def sts_client(settings: S3Settings, *, region: str | None = None) -> Any:
    """An STS client (endpoint: AWS_ENDPOINT_URL_STS, AWS_ENDPOINT_URL, a
    profile's, else AWS's regional one)."""
    session = session_for(settings)
    region = region or given_region(settings, session) or DEFAULT_REGION
    return session.client("sts", region_name=region, config=aws.client_config(settings.attempts))


def error_code(err: ClientError) -> str:
    """The error code of a refused request (else its HTTP status)."""
    return aws.error_code(err)[0]


def ec2_failure(what: str, err: Exception, conn: Ec2Connection | None = None) -> Ec2Error:
    """One clear line for a failed EC2 or STS request: ``cannot <what>: <reason>``
    (:func:`amibundle.aws.failure`)."""
    return aws.failure(EC2, what, err, conn.settings.attempts if conn else None)


def ec2_errors(what: str, conn: Ec2Connection | None = None) -> AbstractContextManager[None]:
    """Turns a botocore exception raised inside the block into ``ec2_failure(what, ...)``."""
    return aws.refusals(lambda err: ec2_failure(what, err, conn))
