"""``register_image``: an instance-store AMI from a bundle's manifest in S3.

The manifest is read first (a missing or unreadable one is one clear error,
before EC2 is asked); what the registration leaves out comes from it
(:meth:`~amibundle.ec2.registration.ImageRegistration.request`). Without a
region anywhere, the bucket's region is used: EC2 registers a bundle only
in the region of its bucket. With ``wait``, DescribeImages is polled until
the image is ``available``; ``failed`` is an
:class:`~amibundle.errors.ImageFailedError` with EC2's reason.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from amibundle.ec2.client import Ec2Connection, connect, ec2_errors, error_code
from amibundle.ec2.registration import ImageRegistration
from amibundle.errors import Ec2Error, ImageFailedError, UsageError
from amibundle.format.manifest import Manifest
from amibundle.format.manifest_reader import parse_manifest
from amibundle.results import JsonRecord
from amibundle.s3.buckets import with_bucket_region
from amibundle.s3.client import connect as connect_s3
from amibundle.s3.remote import get_manifest
from amibundle.s3.settings import BucketRef, S3Settings, parse_bucket
from amibundle.validate import check_record

__all__ = [
    "ImageResult",
    "RegisterResult",
    "parse_manifest_location",
    "read_remote_manifest",
    "register_image",
    "wait_for_image",
]

DEFAULT_WAIT_TIMEOUT = 3600.0
DEFAULT_POLL_INTERVAL = 5.0
_FAILED_STATES = ("failed", "error", "invalid", "deregistered", "disabled")


@dataclass(frozen=True)
class ImageResult(JsonRecord):
    """An AMI a call registered; ``request`` is RegisterImage's parameters as sent."""

    image_id: str
    name: str
    region: str
    state: str  # "pending" unless waited for: then "available"
    request: dict[str, Any]
    seconds: float


@dataclass(frozen=True)
class RegisterResult(ImageResult):
    """What :func:`register_image` registered: a bundle's AMI."""

    manifest_location: str


def parse_manifest_location(value: object) -> tuple[BucketRef, str]:
    """``bucket/key/prefix/name.manifest.xml`` (or ``s3://…``) as the bucket
    with its key prefix, and the manifest's name."""
    if not isinstance(value, str):
        raise UsageError("{param} must be 'bucket/key' text", param="manifest")
    text = value[len("s3://") :] if value.startswith("s3://") else value
    folder, _, name = text.strip("/").rpartition("/")
    if not folder or not name:
        raise UsageError(
            f"{{param}} {value!r} is not a manifest location: "
            "give BUCKET/[PREFIX/]NAME.manifest.xml",
            param="manifest",
        )
    return parse_bucket(folder), name


def read_remote_manifest(settings: S3Settings, bucket: BucketRef, name: str) -> Manifest:
    """The manifest ``name`` under ``bucket``, fetched and parsed."""
    conn = connect_s3(settings)
    key = bucket.key(name)
    return parse_manifest(get_manifest(conn, bucket, key), bucket.url(key)).manifest


def register_image(
    manifest: str,
    registration: ImageRegistration,
    *,
    settings: S3Settings,
    ec2_endpoint_url: str | None = None,
    wait: bool = False,
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
    poll_interval: float | None = None,
) -> RegisterResult:
    """Registers the bundle whose manifest is at ``manifest``
    (``bucket/prefix/name.manifest.xml``) as an instance-store AMI; returns
    its id, and with ``wait`` only once it is available.

    ``settings`` reach S3 (to read the manifest) and carry the credentials
    and region for EC2; ``ec2_endpoint_url`` is EC2's endpoint (default:
    boto3's configuration, else AWS).
    """
    started = time.monotonic()
    registration = check_record(registration, ImageRegistration, "registration")
    settings = check_record(settings, S3Settings, "settings")
    bucket, name = parse_manifest_location(manifest)
    settings = with_bucket_region(settings, bucket)
    manifest_record = read_remote_manifest(settings, bucket, name)
    location = f"{bucket.bucket}/{bucket.key(name)}"
    request = registration.request(location, manifest_record)
    conn = connect(settings, endpoint_url=ec2_endpoint_url)
    with ec2_errors(f"register {location} as {registration.name!r}", conn):
        image_id = str(conn.client.register_image(**request)["ImageId"])
    state = "pending"
    if wait:
        state = wait_for_image(conn, image_id, timeout=wait_timeout, interval=poll_interval)
    return RegisterResult(
        image_id=image_id,
        name=registration.name,
        region=conn.region,
        manifest_location=location,
        state=state,
        request=request,
        seconds=time.monotonic() - started,
    )


def _describe(conn: Ec2Connection, image_id: str) -> dict[str, Any] | None:
    """The image, or None while EC2 does not know it yet (eventual consistency)."""
    with ec2_errors(f"look up {image_id}", conn):
        try:
            images = conn.client.describe_images(ImageIds=[image_id])["Images"]
        except ClientError as err:
            if error_code(err) == "InvalidAMIID.NotFound":
                return None
            raise
    return dict(images[0]) if images else None


def wait_for_image(
    conn: Ec2Connection,
    image_id: str,
    *,
    timeout: float = DEFAULT_WAIT_TIMEOUT,
    interval: float | None = None,
    stop: threading.Event | None = None,
) -> str:
    """Polls DescribeImages until ``image_id`` is available (returns
    "available"); a failed image raises :class:`ImageFailedError`, a timeout
    :class:`Ec2Error`. ``interval`` (seconds between looks) defaults to
    :data:`DEFAULT_POLL_INTERVAL`."""
    interval = DEFAULT_POLL_INTERVAL if interval is None else interval
    stop = stop or threading.Event()
    deadline = time.monotonic() + timeout
    while True:
        image = _describe(conn, image_id)
        state = str(image.get("State", "pending")) if image else "pending"
        if state == "available":
            return state
        if state in _FAILED_STATES:
            assert image is not None
            reason = image.get("StateReason") or {}
            detail = reason.get("Message") or reason.get("Code") or "EC2 gave no reason"
            raise ImageFailedError(f"image {image_id} is {state}: {detail}", image_id=image_id)
        if time.monotonic() + interval > deadline:
            raise Ec2Error(
                f"image {image_id} is still {state} after {timeout:.0f} s",
                hint="it may still become available: look again later with "
                "'aws ec2 describe-images --image-ids " + image_id + "'",
            )
        if stop.wait(interval):
            raise Ec2Error(f"stopped waiting for image {image_id} ({state})")
