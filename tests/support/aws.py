"""moto on 127.0.0.1 as one AWS account for S3, STS, EC2 and EBS, with the strict stand-ins.

`AwsStandIn` starts moto in this process (an OS-chosen port), installs the strict EC2
image calls (`ec2`, an `Ec2StandIn`) and the strict EBS direct API (`ebs`, an `EbsStandIn`),
and gives boto3 clients and a subprocess environment for it. Every service answers on the
one `endpoint_url`, as one account: moto tells the services apart by the SigV4 credential
scope, so a `Proxy` in front of it records a command's whole conversation in order.

The account is moto's `MOTO_ACCOUNT_ID` (read per request in this process): STS
GetCallerIdentity answers it, images and snapshots are owned by it. The default,
111122223333, is deliberately not moto's built-in 123456789012, so code that takes the
account from anywhere but STS is caught. `as_account` switches it for a block (another
owner for InvalidAMIName.Duplicate tests); the `aws` fixture sets it for each test.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import boto3
from botocore.config import Config

from tests.support.s3servers import MotoServer

from .ebs_standin import EbsStandIn
from .ec2_standin import Ec2StandIn

__all__ = ["ACCOUNT_ENV", "DEFAULT_ACCOUNT", "REGION", "AwsStandIn"]

DEFAULT_ACCOUNT = "111122223333"
REGION = "us-east-1"
ACCOUNT_ENV = "MOTO_ACCOUNT_ID"


class AwsStandIn:
    """moto (S3, STS, EC2, EBS) with the strict EC2 and EBS stand-ins; a context manager."""

    def __init__(self, *, account_id: str = DEFAULT_ACCOUNT, region: str = REGION) -> None:
        self.account_id = account_id
        self.region = region
        # moto accepts any keys; these look like real ones so that code checking their
        # shape is exercised.
        self.access_key = "AKIAIOSFODNN7STANDIN"
        self.secret_key = "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"
        self.ec2 = Ec2StandIn(account_id=account_id, region=region)
        self.ebs = EbsStandIn(account_id=account_id, region=region)
        self._moto = MotoServer()
        # One session for every client: it loads each service model once (EC2's is large),
        # so a client costs ~10 ms instead of ~200 ms.
        self._session = boto3.session.Session()
        self._clients: dict[tuple[object, ...], Any] = {}

    @property
    def endpoint_url(self) -> str:
        return self._moto.endpoint_url

    def start(self) -> AwsStandIn:
        self.ec2.install()
        self.ebs.install()
        self._moto.start()
        return self

    def stop(self) -> None:
        self._moto.stop()
        self.ebs.uninstall()
        self.ec2.uninstall()

    def reset(self) -> None:
        """Drop every bucket, image and snapshot and the stand-ins' settings and records."""
        self._moto.reset()
        self.ec2.reset()
        self.ebs.reset()

    @contextlib.contextmanager
    def as_account(self, account_id: str) -> Iterator[None]:
        """Requests in this block act as `account_id` (and the control methods look there)."""
        previous = os.environ.get(ACCOUNT_ENV)
        os.environ[ACCOUNT_ENV] = account_id
        self.ec2.account_id = self.ebs.account_id = account_id
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(ACCOUNT_ENV, None)
            else:
                os.environ[ACCOUNT_ENV] = previous
            self.ec2.account_id = self.ebs.account_id = self.account_id

    def client(
        self,
        service: str,
        *,
        endpoint_url: str | None = None,
        max_attempts: int = 3,
        parameter_validation: bool = True,
    ) -> Any:
        """A boto3 client for `service` (through a proxy when `endpoint_url` says so).

        `parameter_validation=False` lets a test send what botocore would refuse before
        sending (a 2-character name, a 5-minute Timeout) to see the server refuse it too.
        Clients are made once per set of arguments and shared (they hold no per-test state).
        """
        key = (service, endpoint_url or self.endpoint_url, max_attempts, parameter_validation)
        if key not in self._clients:
            self._clients[key] = self._new_client(*key)
        return self._clients[key]

    def _new_client(
        self, service: str, endpoint_url: str, max_attempts: int, parameter_validation: bool
    ) -> Any:
        config = Config(
            retries={"max_attempts": max_attempts, "mode": "standard"},
            parameter_validation=parameter_validation,
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        return self._session.client(
            service,
            endpoint_url=endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=config,
        )

    def environment(self, endpoint_url: str | None = None) -> dict[str, str]:
        """Variables that point a boto3 program (amibundle run as a subprocess) at the stand-in:
        AWS_ENDPOINT_URL serves every service, keys, region, and no instance metadata."""
        return {
            "AWS_ENDPOINT_URL": endpoint_url or self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def __enter__(self) -> AwsStandIn:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<AwsStandIn account {self.account_id} at {self.endpoint_url or '(stopped)'}>"
