"""EC2 (and STS) for instance-store AMIs: registering, deregistering, the account id.

Modules: :mod:`.client` (the boto3 EC2 and STS clients, error wording),
:mod:`.account` (the account id of the credentials, from STS),
:mod:`.registration` (what RegisterImage says, validated once), and one
module per operation: :mod:`.register`, :mod:`.deregister`. The same
:class:`~amibundle.s3.settings.S3Settings` carry the credentials and region;
EC2's endpoint is a parameter of its own (``ec2_endpoint_url``).
"""

from __future__ import annotations

from amibundle.ec2.account import caller_account, has_credentials
from amibundle.ec2.deregister import DeregisterResult, deregister_image
from amibundle.ec2.register import RegisterResult, register_image, wait_for_image
from amibundle.ec2.registration import (
    BlockDeviceMapping,
    BootMode,
    ImageRegistration,
    VirtualizationType,
)

__all__ = [
    "BlockDeviceMapping",
    "BootMode",
    "DeregisterResult",
    "ImageRegistration",
    "RegisterResult",
    "VirtualizationType",
    "caller_account",
    "deregister_image",
    "has_credentials",
    "register_image",
    "wait_for_image",
]
