"""``bundle_upload``: an image file straight into a bucket as a bundle, in one pass.

The same stream as :func:`amibundle.bundling.bundle_image`, with an
:class:`~amibundle.s3.sink.S3PartSink` in place of the folder: parts are
uploaded while the image is still being read and compressed, nothing
bundle-sized touches the local disk, and memory is bounded by ``jobs + 1``
parts. The steps:

1. everything is checked, and the bucket made ready (created, its location
   and Object Ownership checked: :func:`~amibundle.s3.buckets.prepare_bucket`)
   before the first image byte is read;
2. the image streams into the sink; each part goes up with the ACL and its
   Content-MD5, retried from memory on transient errors;
3. only when every part is confirmed, the signed manifest goes up, last;
4. on any failure or interrupt, every object already sent is deleted
   (unless ``keep_partial``); objects that cannot be deleted are named in a
   :class:`~amibundle.errors.LeftoversError`.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError

from amibundle.bundling import OpenImage, open_image, signed_manifest
from amibundle.crypto import BundleKey
from amibundle.errors import LeftoversError, OutputExistsError, StorageError, UsageError, plural
from amibundle.format import manifest as mf
from amibundle.format.manifest_reader import parse_manifest
from amibundle.format.tar import stored_size
from amibundle.format.tar_writer import tar_size
from amibundle.identity import BundleKeys
from amibundle.metadata import BundleMetadata
from amibundle.pipeline import BundleStreamResult, Codec, bundle_stream
from amibundle.progress import BatchedProgress, NullProgress, Progress, Stage
from amibundle.s3.buckets import prepare_bucket, with_bucket_region
from amibundle.s3.client import Connection, connect, error_code, s3_errors
from amibundle.s3.remote import S3Result, get_manifest, throughput
from amibundle.s3.settings import BucketRef, S3Settings, as_bucket
from amibundle.s3.sink import PartNames, S3PartSink
from amibundle.s3.upload import check_acl, md5_base64, put_object
from amibundle.validate import (
    as_path,
    check_image_size,
    check_optional_record,
    check_plain_name,
    check_positive,
    check_record,
)

__all__ = ["BundleUploadResult", "UploadTarget", "bundle_upload", "delete_keys"]

log = logging.getLogger("amibundle.s3")


@dataclass(frozen=True)
class UploadTarget:
    """Where a bundle made by another command (bundle_volume) streams to:
    the bucket, how to reach it, and :func:`bundle_upload`'s bucket options."""

    bucket: BucketRef
    settings: S3Settings
    acl: str = "aws-exec-read"
    location: str | None = None
    fix_ownership: bool = False

    def __post_init__(self) -> None:
        check_record(self.bucket, BucketRef, "bucket")
        check_record(self.settings, S3Settings, "settings")
        check_acl(self.acl)


@dataclass(frozen=True)
class BundleUploadResult(S3Result):
    """What :func:`bundle_upload` made: a registrable bundle in ``bucket``."""

    region: str  # the signing region used
    manifest_key: str
    part_keys: tuple[str, ...]  # in part order
    name: str
    image_size: int
    data_size: int  # image bytes actually read (holes and zero runs skipped)
    tar_size: int
    bundled_size: int
    digest: str
    compression: str
    acl: str
    ec2_certificate: Path
    bucket_created: bool
    ownership_changed: bool
    replaced_keys: tuple[str, ...]  # parts of an earlier bundle of the name, deleted (force)
    seconds: float
    throughput: float  # image data bytes per second

    @property
    def manifest_location(self) -> str:
        """``bucket/key``: what EC2's RegisterImage takes as ImageLocation."""
        return f"{self.bucket.bucket}/{self.manifest_key}"

    def json_extras(self) -> dict[str, object]:
        return {**super().json_extras(), "manifest_location": self.manifest_location}


def bundle_upload(
    image: str | os.PathLike[str],
    bucket: BucketRef | str,
    *,
    metadata: BundleMetadata,
    keys: BundleKeys,
    settings: S3Settings,
    prefix: str | None = None,
    acl: str = "aws-exec-read",
    location: str | None = None,
    fix_ownership: bool = False,
    keep_partial: bool = False,
    force: bool = False,
    size_checks: bool = True,
    part_size: int = mf.DEFAULT_PART_SIZE,
    codec: Codec | None = None,
    progress: Progress | None = None,
    randbytes: Callable[[int], bytes] = os.urandom,
) -> BundleUploadResult:
    """Bundles ``image`` straight into ``bucket``: parts, then the signed
    manifest ``<prefix>.manifest.xml`` (``prefix`` defaults to the image's
    file name).

    Bucket handling is :func:`~amibundle.s3.upload.upload_bundle`'s (created
    when missing, location checked, ACLs-disabled buckets refused unless
    ``fix_ownership``), done before any image byte is read. Without a region
    in ``settings`` or the environment, the bucket's own region is used. An
    existing manifest of the same name is refused unless ``force`` (then the
    old bundle's parts that the new one does not overwrite are deleted after
    the new manifest is in). On failure, every object sent is deleted unless
    ``keep_partial``; see the module documentation.
    """
    started = time.monotonic()
    bucket = as_bucket(bucket)
    metadata = check_record(metadata, BundleMetadata, "metadata")
    keys = check_record(keys, BundleKeys, "keys")
    if keys.generated is not None:
        raise UsageError(
            "{param} were made for the bundle and would be kept nowhere: a bundle streamed "
            "to S3 needs keys loaded from files (BundleKeys.load)",
            param="keys",
        )
    settings = check_record(settings, S3Settings, "settings")
    codec = check_optional_record(codec, Codec, "codec") or Codec()
    image_path = as_path(image, "image")
    name = check_plain_name(prefix if prefix is not None else image_path.name, "prefix")
    check_positive(part_size, "part_size")
    check_acl(acl)
    _check_image_file(image_path, size_checks=size_checks)

    settings = with_bucket_region(settings, bucket)
    conn = connect(settings, location=location)
    created, changed = prepare_bucket(conn, bucket, location=location, fix_ownership=fix_ownership)
    manifest_key = bucket.key(f"{name}.manifest.xml")
    replaced = _earlier_bundle(conn, bucket, manifest_key, force=force)

    key = BundleKey.generate(randbytes)
    with open_image(image_path, name, size_checks=size_checks) as source:
        part_keys, stream = _stream_to_bucket(
            conn, bucket, source, key, name=name, manifest_key=manifest_key,
            metadata=metadata, keys=keys, acl=acl,
            part_size=part_size, codec=codec, keep_partial=keep_partial, progress=progress,
        )  # fmt: skip
    stale = [k for k in replaced if k not in set(part_keys)]
    left = delete_keys(conn, bucket, stale, jobs=settings.jobs)
    if left:
        log.warning("could not delete %d parts of the earlier bundle: %s", len(left), left)
    seconds = time.monotonic() - started
    data = stored_size(source.member)
    return BundleUploadResult(
        bucket=bucket,
        region=conn.region,
        manifest_key=manifest_key,
        part_keys=tuple(part_keys),
        name=name,
        image_size=source.size,
        data_size=data,
        tar_size=stream.tar_size,
        bundled_size=stream.bundled_size,
        digest=stream.tar_sha1,
        compression=codec.compression.value,
        acl=acl,
        ec2_certificate=keys.ec2_certificate,
        bucket_created=created,
        ownership_changed=changed,
        replaced_keys=tuple(k for k in stale if k not in left),
        seconds=seconds,
        throughput=throughput(data, seconds),
    )


def _stream_to_bucket(
    conn: Connection,
    bucket: BucketRef,
    source: OpenImage,
    key: BundleKey,
    *,
    name: str,
    manifest_key: str,
    metadata: BundleMetadata,
    keys: BundleKeys,
    acl: str,
    part_size: int,
    codec: Codec,
    keep_partial: bool,
    progress: Progress | None,
) -> tuple[list[str], BundleStreamResult]:
    """The image's stream into ``bucket``: parts as they are cut, then the
    manifest once every part is confirmed. On any failure, what was sent is
    deleted (unless ``keep_partial``) before the error goes on."""
    batched = BatchedProgress(progress or NullProgress())
    sink = S3PartSink(
        conn,
        bucket,
        PartNames.for_stream(name, tar_size(source.member), part_size),
        acl=acl,
        part_size=part_size,
        jobs=conn.settings.jobs,
        progress=batched,
    )
    manifest_sent = manifest_confirmed = False
    batched.start(Stage.UPLOAD, None)
    try:
        stream = bundle_stream(
            source.fd, source.member, key, sink, part_size=part_size, codec=codec,
            progress=progress,
        )  # fmt: skip
        part_keys = sink.finish()
        manifest_bytes = signed_manifest(
            name=name, metadata=metadata, keys=keys, key=key, image_size=source.size,
            stream=stream, part_names=[k[len(bucket.prefix) :] for k in part_keys],
        )  # fmt: skip
        manifest_sent = True
        # The manifest comes last: a bucket without it holds nothing registrable.
        put_object(
            conn, bucket, manifest_key, f"upload the manifest to {bucket.url(manifest_key)}",
            acl=acl, Body=manifest_bytes, ContentMD5=md5_base64(manifest_bytes),
        )  # fmt: skip
        manifest_confirmed = True
        batched.advance(Stage.UPLOAD, len(manifest_bytes))
    except BaseException as err:
        batched.finish(Stage.UPLOAD, err)
        sink.abort()
        sent = sink.sent_keys() + ([manifest_key] if manifest_sent else [])
        confirmed = sink.confirmed | ({manifest_key} if manifest_confirmed else set())
        _clean_up(conn, bucket, sent, confirmed, keep=keep_partial, cause=err)
        raise
    batched.finish(Stage.UPLOAD)
    return part_keys, stream


def _check_image_file(path: Path, *, size_checks: bool) -> None:
    """The image is there, a regular file and not too large (all checked again
    when it is opened): a typo must not create a bucket."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise UsageError(f"{{param}} {path} does not exist", param="image") from None
    except OSError as err:
        raise StorageError(f"cannot read image {path}: {err.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{{param}} {path} is not a regular file", param="image")
    check_image_size(st.st_size, size_checks=size_checks)


def _earlier_bundle(
    conn: Connection, bucket: BucketRef, manifest_key: str, *, force: bool
) -> list[str]:
    """The part keys of a bundle already at ``manifest_key`` (to delete once
    replaced); refused without ``force``."""
    with s3_errors(f"look up {bucket.url(manifest_key)}", conn):
        try:
            conn.client.head_object(Bucket=bucket.bucket, Key=manifest_key)
        except ClientError as err:
            if error_code(err)[1] in (403, 404):
                return []
            raise
    if not force:
        raise OutputExistsError(bucket.url(manifest_key), what="the bundle manifest")
    try:
        raw = get_manifest(conn, bucket, manifest_key)
        old = parse_manifest(raw, bucket.url(manifest_key)).manifest
    except Exception as err:  # an unreadable old manifest must not stop the new bundle
        log.warning("cannot read the manifest being replaced (%s); its parts are kept", err)
        return []
    return [bucket.key(part.filename) for part in old.parts]


def delete_keys(
    conn: Connection, bucket: BucketRef, keys: Sequence[str], *, jobs: int
) -> list[str]:
    """Deletes ``keys``; returns those left (in order). After the first
    failure no further deletion is started: the bucket is most likely out of
    reach, and waiting through every key's retries would only delay saying so."""
    if not keys:
        return []
    stop = threading.Event()
    deleted: set[str] = set()
    lock = threading.Lock()

    def delete(key: str) -> None:
        if stop.is_set():
            return
        try:
            with s3_errors(f"delete {bucket.url(key)}", conn):
                conn.client.delete_object(Bucket=bucket.bucket, Key=key)
        except Exception as err:
            log.debug("%s", err)
            stop.set()
            return
        with lock:
            deleted.add(key)

    with ThreadPoolExecutor(max_workers=min(jobs, len(keys))) as pool:
        list(pool.map(delete, keys))
    return [key for key in keys if key not in deleted]


def _clean_up(
    conn: Connection,
    bucket: BucketRef,
    sent: list[str],
    confirmed: set[str],
    *,
    keep: bool,
    cause: BaseException,
) -> None:
    """Deletes what a failed upload sent (a PUT that failed may still have
    been stored); raises :class:`LeftoversError` (from ``cause``) naming what
    could not be deleted: the keys S3 confirmed, and those it may hold."""
    if not sent:
        return
    if keep:
        log.warning(
            "keeping %d objects already uploaded to %s: %s",
            len(sent), bucket.url(), " ".join(sent),
        )  # fmt: skip
        return
    try:
        left = delete_keys(conn, bucket, sent, jobs=conn.settings.jobs)
    except BaseException:  # a second Ctrl-C: nothing is known to be deleted
        left = sent
    if left:
        certain = [key for key in left if key in confirmed]
        maybe = [key for key in left if key not in confirmed]
        raise LeftoversError(
            f"{_reason(cause)}; and {plural(len(certain), 'object')} already uploaded could not be "
            f"deleted: they are left in s3://{bucket.bucket}/"
            + (f" (and {len(maybe)} whose upload failed may be there too)" if maybe else ""),
            bucket=bucket.bucket,
            keys=certain,
            uncertain=maybe,
        ) from cause
    log.info("deleted the %d objects already uploaded", len(sent))


def _reason(cause: BaseException) -> str:
    if isinstance(cause, KeyboardInterrupt):
        return "interrupted"
    return str(cause) or type(cause).__name__
