"""``deregister_image``: an AMI out of EC2, and on request its bundle out of S3.

With ``delete_bundle``, the image must be instance-store; its bundle's
manifest (the image's ImageLocation) is read before anything is changed,
so a bundle that cannot be found or read stops the command with the image
still registered. Then the image is deregistered and the bundle deleted
exactly as :func:`amibundle.s3.delete.delete_bundle` does: the manifest
first, then exactly the parts it lists.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from amibundle.ec2.client import Ec2Connection, connect, ec2_errors, error_code
from amibundle.ec2.register import parse_manifest_location, read_remote_manifest
from amibundle.errors import AmibundleError, Ec2Error, S3Error, UsageError
from amibundle.results import JsonRecord
from amibundle.s3.buckets import with_bucket_region
from amibundle.s3.delete import delete_bundle
from amibundle.s3.settings import S3Settings
from amibundle.validate import check_record

__all__ = ["DeregisterResult", "delete_bundle_at", "deregister_image"]

_IMAGE_ID = r"ami-(?:[0-9a-f]{8}|[0-9a-f]{17})"


@dataclass(frozen=True)
class DeregisterResult(JsonRecord):
    """What :func:`deregister_image` did."""

    image_id: str
    name: str
    region: str
    root_device_type: str
    image_location: str
    deleted_keys: tuple[str, ...]  # the bundle's objects, manifest first (delete_bundle)
    seconds: float


def _check_image_id(image_id: object) -> str:
    if not isinstance(image_id, str) or not re.fullmatch(_IMAGE_ID, image_id):
        raise UsageError(f"{{param}} {image_id!r} is not an AMI id (ami-...)", param="image_id")
    return image_id


def deregister_image(
    image_id: str,
    *,
    settings: S3Settings,
    ec2_endpoint_url: str | None = None,
    delete_bundle: bool = False,
) -> DeregisterResult:
    """Deregisters ``image_id``; with ``delete_bundle`` also deletes the
    bundle its manifest location names (manifest first, then its parts)."""
    started = time.monotonic()
    image_id = _check_image_id(image_id)
    settings = check_record(settings, S3Settings, "settings")
    conn = connect(settings, endpoint_url=ec2_endpoint_url)
    image = _describe(conn, image_id)
    location = str(image.get("ImageLocation", ""))
    kind = str(image.get("RootDeviceType", ""))
    s3_settings = settings
    if delete_bundle:
        if kind != "instance-store":
            raise UsageError(
                f"{image_id} is {kind or 'not instance-store'}-backed: it has no bundle "
                "to delete ({switch} is for instance-store images)",
                param="delete_bundle",
            )
        bucket, name = parse_manifest_location(location)
        s3_settings = with_bucket_region(settings, bucket)
        read_remote_manifest(s3_settings, bucket, name)  # readable, before anything changes
    with ec2_errors(f"deregister {image_id}", conn):
        conn.client.deregister_image(ImageId=image_id)
    deleted: tuple[str, ...] = ()
    if delete_bundle:
        try:
            gone = delete_bundle_at(s3_settings, location)
        except AmibundleError as err:
            raise S3Error(
                f"{image_id} was deregistered, but its bundle at s3://{location} was not "
                f"deleted: {err}",
                hint="delete it with 'amibundle delete'",
            ) from err
        deleted = gone
    return DeregisterResult(
        image_id=image_id,
        name=str(image.get("Name", "")),
        region=conn.region,
        root_device_type=kind,
        image_location=location,
        deleted_keys=deleted,
        seconds=time.monotonic() - started,
    )


def delete_bundle_at(settings: S3Settings, location: str) -> tuple[str, ...]:
    """Deletes the bundle whose manifest is at ``location`` (bucket/key)."""
    bucket, name = parse_manifest_location(location)
    result = delete_bundle(bucket, settings=settings, manifest_name=name)
    return result.deleted


def _describe(conn: Ec2Connection, image_id: str) -> dict[str, Any]:
    with ec2_errors(f"look up {image_id}", conn):
        try:
            images = conn.client.describe_images(ImageIds=[image_id])["Images"]
        except ClientError as err:
            if error_code(err) == "InvalidAMIID.NotFound":
                images = []
            else:
                raise
    if not images:
        raise Ec2Error(f"there is no image {image_id} in {conn.region}")
    return dict(images[0])
