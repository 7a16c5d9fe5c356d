"""Getting a bucket ready for a bundle: there, in the right location, and
with ACLs enabled (EC2 reads a bundle through its ``aws-exec-read`` grant).

Upload and bundle-upload both run :func:`prepare_bucket` before the first
object is sent.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from botocore.exceptions import ClientError

from amibundle.errors import AclsDisabledError, LocationMismatchError, S3Error
from amibundle.s3.client import Connection, connect, error_code, s3_errors
from amibundle.s3.settings import DEFAULT_REGION, BucketRef, S3Settings, region_of_location

__all__ = [
    "acls_disabled",
    "bucket_location",
    "bucket_region",
    "prepare_bucket",
    "with_bucket_region",
]

log = logging.getLogger("amibundle.s3")


def prepare_bucket(
    conn: Connection, bucket: BucketRef, *, location: str | None, fix_ownership: bool
) -> tuple[bool, bool]:
    """Creates the bucket when missing (in ``location``, with Object Ownership
    BucketOwnerPreferred), checks an existing one's location, and refuses
    one with ACLs disabled unless ``fix_ownership``. Returns (created, ownership changed)."""
    requested = _requested_location(location, conn.region)
    created = _ensure_bucket(conn, bucket, requested)
    # A bucket we just made asked for BucketOwnerPreferred; a server that
    # ignored that (SeaweedFS) gets it set explicitly.
    changed = _check_ownership(conn, bucket, fix=fix_ownership or created)
    return created, changed


def _requested_location(location: str | None, region: str) -> str | None:
    """The bucket location to create or check (classic §1.9.3): ``location``,
    else the signing region when it is not us-east-1, else none."""
    if location is not None:
        return location
    return None if region == DEFAULT_REGION else region


def _create_bucket(conn: Connection, bucket: BucketRef, location: str | None) -> None:
    request: dict[str, Any] = {"Bucket": bucket.bucket, "ObjectOwnership": "BucketOwnerPreferred"}
    # Sent as a region name: regional endpoints refuse the old spelling "EU"
    # (the classic tools sent it, to endpoints that took it then).
    region = region_of_location(location or "US")
    if region != DEFAULT_REGION:
        request["CreateBucketConfiguration"] = {"LocationConstraint": region}
    log.info("creating bucket %s", bucket.bucket)
    with s3_errors(f"create bucket {bucket.bucket}", conn):
        try:
            conn.client.create_bucket(**request)
        except ClientError as err:
            code = error_code(err)[0]
            if code == "BucketAlreadyOwnedByYou":  # made meanwhile, by us
                return
            if code == "BucketAlreadyExists":
                raise S3Error(
                    f"cannot create bucket {bucket.bucket}: the name belongs to another account",
                    hint="bucket names are global; choose another one",
                ) from None
            raise


def _ensure_bucket(conn: Connection, bucket: BucketRef, location: str | None) -> bool:
    """Creates the bucket if it is missing (True), else checks that it is in
    ``location`` when one was asked for."""
    with s3_errors(f"look up bucket {bucket.bucket}", conn):
        try:
            reply = conn.client.get_bucket_location(Bucket=bucket.bucket)
        except ClientError as err:
            if error_code(err)[0] != "NoSuchBucket":
                raise
            _create_bucket(conn, bucket, location)
            return True
    reported = reply.get("LocationConstraint") or "US"  # none means US Standard
    # Compared as regions, so EU and eu-west-1 match both ways (the classic
    # rejected --location EU for a bucket reporting eu-west-1).
    if location is not None and region_of_location(location) != region_of_location(reported):
        raise LocationMismatchError(
            f"bucket {bucket.bucket} is in location {reported}, not {location}",
            hint=f"upload to another bucket, or ask for location {reported}",
        )
    return False


def acls_disabled(bucket: str) -> AclsDisabledError:
    return AclsDisabledError(
        f"bucket {bucket} has Object Ownership BucketOwnerEnforced, which disables ACLs: "
        "EC2 could not read the bundle, as it reads bundles through their aws-exec-read ACL",
        hint=f"run 'aws s3api put-bucket-ownership-controls --bucket {bucket} "
        "--ownership-controls Rules=[{ObjectOwnership=BucketOwnerPreferred}]', "
        "or upload with {switch}",
        param="fix_ownership",
    )


def _check_ownership(conn: Connection, bucket: BucketRef, *, fix: bool) -> bool:
    """Stops when the bucket's ACLs are disabled, unless ``fix``: then
    enables them (BucketOwnerPreferred) and returns True."""
    name = bucket.bucket
    with s3_errors(f"read the Object Ownership setting of bucket {name}", conn):
        try:
            reply = conn.client.get_bucket_ownership_controls(Bucket=name)
        except ClientError as err:
            code, status = error_code(err)
            if code == "OwnershipControlsNotFoundError":  # no controls: ACLs work
                return False
            if code in ("NotImplemented", "MethodNotAllowed") or status == 501:
                return False  # a server without Object Ownership: ACLs as ever
            if code == "AccessDenied":
                # The PUTs will tell (AccessControlListNotSupported) if ACLs are off.
                log.warning("cannot read the Object Ownership setting of bucket %s", name)
                return False
            raise
    rules = reply.get("OwnershipControls", {}).get("Rules", [])
    if not any(rule.get("ObjectOwnership") == "BucketOwnerEnforced" for rule in rules):
        return False
    if not fix:
        raise acls_disabled(name)
    log.info("setting Object Ownership of bucket %s to BucketOwnerPreferred", name)
    with s3_errors(f"change the Object Ownership setting of bucket {name}", conn):
        conn.client.put_bucket_ownership_controls(
            Bucket=name,
            OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerPreferred"}]},
        )
    return True


def bucket_location(conn: Connection, bucket: BucketRef) -> str | None:
    """Where an existing bucket is as S3 names it (``US`` for US Standard); None when
    there is no such bucket. (GetBucketLocation answers for a bucket of any region,
    whatever region the request is signed for.)"""
    with s3_errors(f"look up bucket {bucket.bucket}", conn):
        try:
            reply = conn.client.get_bucket_location(Bucket=bucket.bucket)
        except ClientError as err:
            if error_code(err)[0] == "NoSuchBucket":
                return None
            raise
    return str(reply.get("LocationConstraint") or "US")


def bucket_region(conn: Connection, bucket: BucketRef) -> str | None:
    """The region an existing bucket is in; None when there is no such bucket."""
    location = bucket_location(conn, bucket)
    return None if location is None else region_of_location(location)


def with_bucket_region(settings: S3Settings, bucket: BucketRef) -> S3Settings:
    """``settings`` with the bucket's region filled in when no region is
    given anywhere (option, environment, profile): the bucket says where it
    is, as go_ami_tools does. Unchanged when a region is given or the bucket
    does not exist yet."""
    conn = connect(settings)
    if conn.region_given:
        return settings
    region = bucket_region(conn, bucket)
    if region is None or region == conn.region:
        return replace(settings, region=conn.region)
    log.info("bucket %s is in %s: using that region", bucket.bucket, region)
    return replace(settings, region=region)
