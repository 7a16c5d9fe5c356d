"""What the EBS direct APIs check, and how they refuse (botocore's `ebs` model, the EBS direct
API reference and the EBS user guide's checksum and encryption pages).

Refusals are the API's modelled errors, in its REST-JSON shape (`x-amzn-ErrorType`, a JSON
body with `message` and `Reason`), which boto3 turns into `ClientError` with
`response["Error"]["Code"]` and `response["Reason"]`:

* ValidationException (400) with a Reason from the model's enum;
* ResourceNotFoundException (404), Reason SNAPSHOT_NOT_FOUND;
* ConflictException (409): a ClientToken reused with different parameters.

The API reference names the exception but rarely the Reason for a given mistake; where it
does not, the stand-in picks the closest enum value (listed with each check below) and tests
of amibundle should assert the exception code, and the Reason only where it is documented.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from enum import Enum
from typing import Any

from moto.core.exceptions import JsonRESTError, ServiceException

__all__ = [
    "BLOCK_SIZE",
    "BLOCKS_PER_GIB",
    "EbsError",
    "NotModelled",
    "Reason",
    "check_block_write",
    "check_completion_checksum",
    "check_snapshot_id",
    "check_start",
    "invalid",
    "linear_checksum",
    "not_found",
]

BLOCK_SIZE = 524_288  # PutSnapshotBlock: "Currently, the only supported size is 524288 bytes."
BLOCKS_PER_GIB = (1 << 30) // BLOCK_SIZE
MAX_VOLUME_GIB = 65_536  # StartSnapshot: "The maximum size is 65536 GiB (64 TiB)."
TIMEOUT_MINUTES = (10, 4320)  # the model's Timeout range; 60 when omitted
DEFAULT_TIMEOUT_MINUTES = 60
MAX_TAGS = 50
_SNAPSHOT_ID = re.compile(r"snap-[0-9a-f]+")
_KMS_KEY_ARN = re.compile(r"arn:aws[a-z\-]*:kms:.*:[0-9]{12}:key/.*")
_TOKEN = re.compile(r"\S{1,255}")


class Reason(str, Enum):
    """The ValidationExceptionReason values the stand-in uses."""

    INVALID_SNAPSHOT_ID = "INVALID_SNAPSHOT_ID"
    INVALID_BLOCK = "INVALID_BLOCK"
    INVALID_BLOCK_TOKEN = "INVALID_BLOCK_TOKEN"
    INVALID_PAGE_TOKEN = "INVALID_PAGE_TOKEN"
    INVALID_TAG = "INVALID_TAG"
    INVALID_PARAMETER_VALUE = "INVALID_PARAMETER_VALUE"
    INVALID_VOLUME_SIZE = "INVALID_VOLUME_SIZE"
    INVALID_CUSTOMER_KEY = "INVALID_CUSTOMER_KEY"
    WRITE_REQUEST_TIMEOUT = "WRITE_REQUEST_TIMEOUT"


class EbsError(ServiceException):
    """A modelled EBS error; moto serialises `message` and `reason` as the shape's members."""

    def __init__(self, code: str, message: str, reason: str | None = None) -> None:
        super().__init__(code, message)
        self.reason = reason


class NotModelled(JsonRESTError):
    """A call or parameter the stand-in does not model (HTTP 501, code NotImplementedByStandIn):
    a test that needs it fails loudly instead of passing against a stub."""

    code = 501

    def __init__(self, what: str) -> None:
        super().__init__("NotImplementedByStandIn", f"{what} is not modelled by the EBS stand-in")


def invalid(reason: Reason, message: str) -> EbsError:
    return EbsError("ValidationException", message, reason.value)


def not_found(snapshot_id: str) -> EbsError:
    return EbsError(
        "ResourceNotFoundException",
        f"The snapshot '{snapshot_id}' does not exist.",
        "SNAPSHOT_NOT_FOUND",
    )


def check_snapshot_id(snapshot_id: str | None) -> str:
    if not snapshot_id or not _SNAPSHOT_ID.fullmatch(snapshot_id):
        raise invalid(Reason.INVALID_SNAPSHOT_ID, f"Invalid snapshot id '{snapshot_id}'")
    return snapshot_id


def linear_checksum(digests_in_index_order: Iterable[bytes]) -> str:
    """CompleteSnapshot's LINEAR aggregate: SHA256 over the blocks' raw SHA256 digests
    concatenated in ascending block-index order, Base64 (how awslabs/coldsnap computes it for
    the real service; the API reference's "concatenate the checksums" means these digests)."""
    whole = hashlib.sha256()
    for digest in digests_in_index_order:
        whole.update(digest)
    return base64.b64encode(whole.digest()).decode("ascii")


def _check_tags(tags: list[dict[str, Any]]) -> list[tuple[str, str]]:
    pairs = [(str(t.get("Key") or ""), str(t.get("Value") or "")) for t in tags]
    for key, value in pairs:
        if not 1 <= len(key) <= 127 or len(value) > 255:  # TagKey max 127, TagValue max 255
            raise invalid(Reason.INVALID_TAG, f"Tag '{key}' has a key or value of bad length")
        if key.lower().startswith("aws:"):
            raise invalid(Reason.INVALID_TAG, "Tag keys starting with 'aws:' are reserved")
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise invalid(Reason.INVALID_TAG, "A tag key appears more than once")
    if len(pairs) > MAX_TAGS:
        raise invalid(Reason.INVALID_TAG, f"At most {MAX_TAGS} tags per snapshot")
    return pairs


def _check_encryption(
    encrypted: bool | None, kms_key_arn: str | None, *, encryption_by_default: bool
) -> bool:
    """Whether the new snapshot is encrypted, per the user guide's "Encryption outcomes: No
    parent snapshot": a KmsKeyArn needs Encrypted=true; Encrypted=false is refused when the
    account encrypts by default."""
    if kms_key_arn is not None:
        if not _KMS_KEY_ARN.fullmatch(kms_key_arn):
            raise invalid(Reason.INVALID_CUSTOMER_KEY, "KmsKeyArn is not a KMS key ARN")
        if encrypted is not True:
            raise invalid(
                Reason.INVALID_PARAMETER_VALUE, "KmsKeyArn can only be given with Encrypted=true"
            )
    if encrypted is False and encryption_by_default:
        raise invalid(
            Reason.INVALID_PARAMETER_VALUE,
            "Encryption by default is enabled: unencrypted snapshots cannot be created",
        )
    return bool(encrypted) or encryption_by_default


def check_start(params: dict[str, Any], *, encryption_by_default: bool) -> dict[str, Any]:
    """StartSnapshot's parameter checks; the request with defaults filled in.

    Reasons: INVALID_VOLUME_SIZE for VolumeSize, INVALID_TAG for tags, INVALID_CUSTOMER_KEY
    for a KmsKeyArn that is no key ARN, INVALID_PARAMETER_VALUE for the rest."""
    size = params.get("VolumeSize")
    if size is None:
        raise invalid(Reason.INVALID_PARAMETER_VALUE, "VolumeSize is required")
    if not 1 <= int(size) <= MAX_VOLUME_GIB:
        raise invalid(
            Reason.INVALID_VOLUME_SIZE, f"VolumeSize must be 1-{MAX_VOLUME_GIB} GiB, not {size}"
        )
    timeout = params.get("Timeout")
    timeout = DEFAULT_TIMEOUT_MINUTES if timeout is None else int(timeout)
    if not TIMEOUT_MINUTES[0] <= timeout <= TIMEOUT_MINUTES[1]:
        raise invalid(Reason.INVALID_PARAMETER_VALUE, "Timeout must be 10-4320 minutes")
    description = params.get("Description")
    if description is not None and not 1 <= len(description) <= 255:
        raise invalid(Reason.INVALID_PARAMETER_VALUE, "Description must be 1-255 characters")
    token = params.get("ClientToken")
    if token is not None and not _TOKEN.fullmatch(token):
        raise invalid(
            Reason.INVALID_PARAMETER_VALUE, "ClientToken must be 1-255 non-space characters"
        )
    if params.get("ParentSnapshotId") is not None and params.get("Encrypted") is not None:
        # StartSnapshot: "If you specify both parameters, the request fails with
        # ValidationException."
        raise invalid(
            Reason.INVALID_PARAMETER_VALUE, "ParentSnapshotId and Encrypted cannot be combined"
        )
    encrypted = _check_encryption(
        params.get("Encrypted"),
        params.get("KmsKeyArn"),
        encryption_by_default=encryption_by_default,
    )
    return {
        "VolumeSize": int(size),
        "Timeout": timeout,
        "Description": description,
        "ClientToken": token,
        "Tags": _check_tags(params.get("Tags") or []),
        "Encrypted": encrypted,
        "KmsKeyArn": params.get("KmsKeyArn"),
        "ParentSnapshotId": params.get("ParentSnapshotId"),
    }


def check_block_write(
    *,
    index: int,
    volume_gib: int,
    data: bytes,
    length_header: str | None,
    checksum: str | None,
    algorithm: str | None,
    progress: int | None,
) -> bytes:
    """PutSnapshotBlock's checks on one block; its raw SHA256 digest when all pass.

    Reasons: INVALID_BLOCK for an index outside the volume, INVALID_PARAMETER_VALUE for the
    length, the checksum, its algorithm and Progress."""
    blocks = volume_gib * BLOCKS_PER_GIB
    if not 0 <= index < blocks:
        raise invalid(
            Reason.INVALID_BLOCK,
            f"Block index {index} is outside the volume ({blocks} blocks of {BLOCK_SIZE} bytes)",
        )
    if length_header is None or not length_header.isdigit():
        raise invalid(
            Reason.INVALID_PARAMETER_VALUE, "x-amz-Data-Length is missing or not a number"
        )
    if int(length_header) != len(data):
        raise invalid(
            Reason.INVALID_PARAMETER_VALUE,
            f"x-amz-Data-Length says {length_header} bytes, the body has {len(data)}",
        )
    if len(data) != BLOCK_SIZE:
        raise invalid(
            Reason.INVALID_PARAMETER_VALUE, f"A block must be {BLOCK_SIZE} bytes, not {len(data)}"
        )
    if algorithm != "SHA256":
        raise invalid(Reason.INVALID_PARAMETER_VALUE, f"Unsupported checksum algorithm {algorithm}")
    if progress is not None and not 0 <= progress <= 100:
        raise invalid(Reason.INVALID_PARAMETER_VALUE, "Progress must be 0-100")
    digest = hashlib.sha256(data).digest()
    if checksum != base64.b64encode(digest).decode("ascii"):
        raise invalid(
            Reason.INVALID_PARAMETER_VALUE,
            "The checksum does not match the SHA256 of the block data",
        )
    return digest


def check_completion_checksum(
    checksum: str | None, algorithm: str | None, method: str | None
) -> bool:
    """Whether CompleteSnapshot asks for an aggregate check; refuses half-given ones."""
    given = [value is not None for value in (checksum, algorithm, method)]
    if not any(given):
        return False
    if not all(given):
        raise invalid(
            Reason.INVALID_PARAMETER_VALUE,
            "Checksum, ChecksumAlgorithm and ChecksumAggregationMethod go together",
        )
    if algorithm != "SHA256" or method != "LINEAR":
        raise invalid(
            Reason.INVALID_PARAMETER_VALUE,
            f"Unsupported checksum {algorithm}/{method} (only SHA256/LINEAR)",
        )
    return True
