"""``copy_bundle``: a bundle from one bucket into another by server-side copy, its
(migrated) manifest last (``classic-cli.md`` §9).

No part passes through this machine: each is copied by S3 itself (CopyObject), with the
canned ACL, in parallel. Before anything is copied every source part is looked up and
their sizes must add up to the manifest's ``bundled_size``; each copy is then checked at
the destination against its source by size and ETag. A part already at the destination
with the same size and ETag is not copied again, so running the command again after an
interruption finishes the job. The manifest goes last, only after every part arrived.

Source and destination may be reached through different settings (regions, endpoints):
the source's are used to read the manifest and look the parts up, the destination's for
everything else. S3 copies between buckets of one service, in any regions; two different
services cannot copy to each other.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from botocore.exceptions import ClientError

from amibundle.errors import IntegrityError, S3Error, UsageError
from amibundle.format import manifest as mf
from amibundle.format.manifest_reader import parse_manifest
from amibundle.progress import BatchedProgress, NullProgress, Progress, Stage
from amibundle.s3 import buckets
from amibundle.s3.buckets import acls_disabled, prepare_bucket
from amibundle.s3.client import Connection, connect, error_code, s3_errors
from amibundle.s3.engine import run_parallel
from amibundle.s3.remote import S3Result, bundle_keys, get_manifest, throughput
from amibundle.s3.settings import BucketRef, S3Settings, as_bucket
from amibundle.s3.upload import check_acl, md5_base64, put_object
from amibundle.validate import check_plain_name, check_record

__all__ = ["CopyResult", "bucket_location", "copy_bundle", "read_bundle_manifest"]

# One CopyObject request copies at most 5 GiB; a bundle part is 10 MiB.
MAX_COPY_SIZE = 5 * 1024**3


@dataclass(frozen=True)
class CopyResult(S3Result):
    """What :func:`copy_bundle` did; ``bucket`` is the destination."""

    source: BucketRef
    manifest_key: str
    parts_copied: int
    parts_skipped: int  # already at the destination with the same size and ETag
    keys_copied: tuple[str, ...]  # parts copied, then the manifest's key
    bytes_copied: int
    region: str  # the destination's signing region
    bucket_created: bool
    ownership_changed: bool
    seconds: float
    throughput: float

    def json_extras(self) -> dict[str, Any]:
        return {
            **super().json_extras(),
            "source": {"bucket": self.source.bucket, "prefix": self.source.prefix},
        }


@dataclass(frozen=True)
class _SourcePart:
    name: str
    key: str
    size: int
    etag: str


@dataclass(frozen=True)
class _Copy:
    source: BucketRef
    source_conn: Connection
    destination: BucketRef
    conn: Connection
    acl: str
    progress: Progress
    stop: threading.Event


def _etag(head: dict[str, Any]) -> str:
    return str(head.get("ETag", "")).strip('"').lower()


def _is_simple(etag: str) -> bool:
    """An ETag that is the MD5 of the content (not a multipart upload's, "…-N")."""
    return bool(etag) and "-" not in etag


def _head(conn: Connection, bucket: BucketRef, key: str) -> dict[str, Any] | None:
    """HeadObject, or None when there is no such object."""
    with s3_errors(f"look up {bucket.url(key)}", conn):
        try:
            head: dict[str, Any] = conn.client.head_object(Bucket=bucket.bucket, Key=key)
        except ClientError as err:
            if error_code(err)[1] == 404:
                return None
            raise
    return head


def read_bundle_manifest(
    bucket: BucketRef | str, manifest_name: str, *, settings: S3Settings
) -> mf.ParsedManifest:
    """The manifest ``<prefix><manifest_name>`` of a bundle in a bucket, parsed."""
    bucket = as_bucket(bucket)
    settings = check_record(settings, S3Settings, "settings")
    check_plain_name(manifest_name, "manifest_name")
    conn = connect(settings)
    key = bucket.key(manifest_name)
    return parse_manifest(get_manifest(conn, bucket, key), bucket.url(key))


def bucket_location(bucket: BucketRef | str, *, settings: S3Settings) -> str | None:
    """Where an existing bucket is (``US`` for US Standard), None if there is no such
    bucket."""
    bucket = as_bucket(bucket)
    return buckets.bucket_location(connect(check_record(settings, S3Settings, "settings")), bucket)


def _source_part(job: _Copy, part: mf.PartEntry) -> _SourcePart:
    key = job.source.key(part.filename)
    head = _head(job.source_conn, job.source, key)
    if head is None:
        raise S3Error(
            f"part {part.filename} is not in {job.source.url()} (no {job.source.url(key)})",
            hint="check the source bucket, its key prefix and the manifest name",
        )
    size = int(head.get("ContentLength", -1))
    if size > MAX_COPY_SIZE:
        raise S3Error(f"{job.source.url(key)} is {size} bytes, more than one copy can move")
    return _SourcePart(part.filename, key, size, _etag(head))


def _same(head: dict[str, Any] | None, part: _SourcePart) -> bool:
    return (
        head is not None
        and int(head.get("ContentLength", -1)) == part.size
        and _is_simple(part.etag)
        and _etag(head) == part.etag
    )


def _copy_part(job: _Copy, part: _SourcePart) -> bool:
    """Copies one part unless the destination has it already; True if copied."""
    key = job.destination.key(part.name)
    if _same(_head(job.conn, job.destination, key), part):
        job.progress.advance(Stage.COPY, part.size)
        return False
    what = f"copy {job.source.url(part.key)} to {job.destination.url(key)}"
    with s3_errors(what, job.conn):
        try:
            job.conn.client.copy_object(
                Bucket=job.destination.bucket,
                Key=key,
                CopySource={"Bucket": job.source.bucket, "Key": part.key},
                ACL=job.acl,
                MetadataDirective="COPY",
            )
        except ClientError as err:
            if error_code(err)[0] == "AccessControlListNotSupported":
                raise acls_disabled(job.destination.bucket) from None
            raise
    _check_copy(job, part, key)
    job.progress.advance(Stage.COPY, part.size)
    return True


def _check_copy(job: _Copy, part: _SourcePart, key: str) -> None:
    """The copy is the source's bytes: the same size and (for an ETag that is an MD5 of
    the content) the same ETag."""
    head = _head(job.conn, job.destination, key)
    url = job.destination.url(key)
    if head is None:
        raise IntegrityError(f"the copy of {part.name} is not at {url} after copying it")
    size, etag = int(head.get("ContentLength", -1)), _etag(head)
    if size != part.size or (_is_simple(part.etag) and etag != part.etag):
        raise IntegrityError(
            f"the copy {url} ({size} bytes, ETag {etag}) differs from its source "
            f"{job.source.url(part.key)} ({part.size} bytes, ETag {part.etag})"
        )


def copy_bundle(
    source: BucketRef | str,
    destination: BucketRef | str,
    *,
    manifest: bytes,
    manifest_name: str,
    source_settings: S3Settings,
    settings: S3Settings,
    acl: str = "aws-exec-read",
    location: str | None = None,
    fix_ownership: bool = False,
    progress: Progress | None = None,
) -> CopyResult:
    """Copies the parts ``manifest`` lists from ``source`` to ``destination`` by
    server-side copy, then puts ``manifest`` there as ``<prefix><manifest_name>``.

    ``manifest`` is the file to put at the destination (typically the source's
    manifest migrated: see :mod:`amibundle.migration`); its parts must be in
    ``source``. The destination bucket is created when missing (in ``location``) or
    checked as :func:`amibundle.s3.upload_bundle` does."""
    started = time.monotonic()
    source, destination = as_bucket(source), as_bucket(destination)
    source_settings = check_record(source_settings, S3Settings, "source_settings")
    settings = check_record(settings, S3Settings, "settings")
    check_plain_name(manifest_name, "manifest_name")
    check_acl(acl)
    if not isinstance(manifest, bytes):
        raise UsageError("{param} must be the manifest's bytes", param="manifest")
    parsed = parse_manifest(manifest, manifest_name)
    keys = bundle_keys(destination, manifest_name, parsed.manifest)
    if source == destination:
        raise UsageError("the source and the destination are the same bucket and prefix")

    source_conn = connect(source_settings)
    conn = connect(settings, location=location)
    job = _Copy(
        source,
        source_conn,
        destination,
        conn,
        acl,
        BatchedProgress(progress or NullProgress()),
        threading.Event(),
    )
    parts = sorted(parsed.manifest.parts, key=lambda p: p.filename)
    found = run_parallel(
        [partial(_source_part, job, part) for part in parts], jobs=settings.jobs, stop=job.stop
    )
    total = sum(part.size for part in found)
    if total != parsed.manifest.bundled_size:
        raise IntegrityError(
            f"the parts in {source.url()} hold {total} bytes but the manifest says "
            f"bundled_size {parsed.manifest.bundled_size}: nothing was copied"
        )
    created, changed = prepare_bucket(
        conn, destination, location=location, fix_ownership=fix_ownership
    )
    job.progress.start(Stage.COPY, total)
    try:
        copied = run_parallel(
            [partial(_copy_part, job, part) for part in found], jobs=settings.jobs, stop=job.stop
        )
        put_object(
            conn,
            destination,
            keys[0],
            f"upload {manifest_name} to {destination.url(keys[0])}",
            acl=acl,
            Body=manifest,
            ContentMD5=md5_base64(manifest),
        )
    except BaseException as err:
        job.progress.finish(Stage.COPY, err)
        raise
    job.progress.finish(Stage.COPY)

    done = [part for part, was_copied in zip(found, copied, strict=True) if was_copied]
    nbytes = sum(part.size for part in done)
    seconds = time.monotonic() - started
    return CopyResult(
        bucket=destination,
        source=source,
        manifest_key=keys[0],
        parts_copied=len(done),
        parts_skipped=len(found) - len(done),
        keys_copied=(*(destination.key(part.name) for part in done), keys[0]),
        bytes_copied=nbytes,
        region=conn.region,
        bucket_created=created,
        ownership_changed=changed,
        seconds=seconds,
        throughput=throughput(nbytes, seconds),
    )
