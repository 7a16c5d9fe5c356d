"""``upload_bundle``: a local bundle into a bucket, parts in parallel, manifest last.

Nothing is sent before the bucket is known to accept the ACL EC2 needs; no
part whose SHA-1 differs from the manifest is ever sent; parts already in
the bucket with the same size and MD5 are skipped, so re-running an
interrupted upload resumes it; the manifest goes last, only after every
part arrived.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from amibundle.errors import IntegrityError, UploadSourceError, UsageError
from amibundle.files import open_input
from amibundle.format import manifest as mf
from amibundle.progress import BatchedProgress, NullProgress, Progress, Stage
from amibundle.reading import read_manifest
from amibundle.s3.buckets import acls_disabled, prepare_bucket
from amibundle.s3.client import Connection, connect, error_code, s3_errors
from amibundle.s3.engine import Stopped, UploadBody, hash_file, run_parallel
from amibundle.s3.remote import S3Result, bundle_keys, throughput
from amibundle.s3.settings import BucketRef, S3Settings, as_bucket, is_aws_endpoint
from amibundle.validate import as_optional_path, as_path, check_progress, check_record

__all__ = [
    "CANNED_ACLS",
    "UploadResult",
    "check_acl",
    "md5_base64",
    "put_object",
    "refuse_zstd_for_aws",
    "upload_bundle",
]

CANNED_ACLS = ("aws-exec-read", "public-read", "bucket-owner-full-control", "private")


@dataclass(frozen=True)
class UploadResult(S3Result):
    """What :func:`upload_bundle` did."""

    region: str  # the signing region used
    manifest_key: str
    manifest_uploaded: bool  # False with skip_manifest
    parts_uploaded: int
    parts_skipped: int  # already in the bucket with the same size and MD5: not sent
    parts_before_first: int  # index below first_part: not looked at
    keys_uploaded: tuple[str, ...]  # object keys sent, the manifest's last
    bytes_uploaded: int  # parts and manifest
    seconds: float
    throughput: float  # bytes per second
    bucket_created: bool
    ownership_changed: bool  # BucketOwnerEnforced was changed to BucketOwnerPreferred


@dataclass(frozen=True)
class _LocalPart:
    index: int
    name: str
    path: Path
    size: int
    sha1: str


@dataclass(frozen=True)
class _Upload:
    conn: Connection
    bucket: BucketRef
    acl: str
    progress: Progress
    stop: threading.Event


def _local_parts(manifest: mf.Manifest, directory: Path) -> list[_LocalPart]:
    """Every part file, checked to exist before anything is sent, sorted by
    file name (the classic order)."""
    found = []
    for part in sorted(manifest.parts, key=lambda p: p.filename):
        path = directory / part.filename
        try:
            st = path.stat()
        except FileNotFoundError:
            raise UploadSourceError(f"part {part.filename} is missing from {directory}") from None
        except OSError as err:
            raise UploadSourceError(f"cannot read part {path}: {err.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise UploadSourceError(f"part {path} is not a regular file")
        found.append(_LocalPart(part.index, part.filename, path, st.st_size, part.digest))
    return found


def check_acl(acl: str) -> None:
    if acl not in CANNED_ACLS:
        raise UsageError(
            f"unknown ACL {acl!r} for {{param}}; use one of {', '.join(CANNED_ACLS)}", param="acl"
        )


def _already_uploaded(up: _Upload, key: str, size: int, md5_hex: str) -> bool:
    with s3_errors(f"look up {up.bucket.url(key)}", up.conn):
        try:
            head = up.conn.client.head_object(Bucket=up.bucket.bucket, Key=key)
        except ClientError as err:
            # 403: we may write but not read (a put-only policy); just send it.
            if error_code(err)[1] in (403, 404):
                return False
            raise
    etag = str(head.get("ETag", "")).strip('"').lower()
    return head.get("ContentLength") == size and etag == md5_hex


def put_object(
    conn: Connection, bucket: BucketRef, key: str, what: str, *, acl: str, **request: Any
) -> None:
    """PUTs one object with the canned ``acl``; one clear error if S3 refuses."""
    with s3_errors(what, conn):
        try:
            conn.client.put_object(Bucket=bucket.bucket, Key=key, ACL=acl, **request)
        except ClientError as err:
            if error_code(err)[0] == "AccessControlListNotSupported":
                raise acls_disabled(bucket.bucket) from None
            raise


def _upload_part(up: _Upload, part: _LocalPart) -> bool:
    """Sends one part unless the bucket has it already; True if sent."""
    key = up.bucket.key(part.name)
    try:
        with os.fdopen(open_input(part.path, "part"), "rb") as handle:
            digests = hash_file(handle, up.stop)
            if digests.sha1 != part.sha1:
                raise IntegrityError(
                    f"part {part.path} is damaged: its SHA-1 does not match the manifest; "
                    "nothing of it was uploaded"
                )
            if _already_uploaded(up, key, digests.size, digests.md5_hex):
                up.progress.advance(Stage.UPLOAD, digests.size)
                return False
            handle.seek(0)
            body = UploadBody(
                handle, on_bytes=partial(up.progress.advance, Stage.UPLOAD), stop=up.stop
            )
            try:
                put_object(
                    up.conn,
                    up.bucket,
                    key,
                    f"upload {part.name} to {up.bucket.url(key)}",
                    Body=body,
                    ContentLength=digests.size,
                    ContentMD5=digests.md5_base64,
                    acl=up.acl,
                )
            except Stopped:
                if body.failure is not None:
                    raise body.failure from None
                raise
    except OSError as err:
        raise UploadSourceError(f"cannot read part {part.path}: {err.strerror}") from None
    return True


def upload_bundle(
    manifest: str | os.PathLike[str],
    bucket: BucketRef | str,
    *,
    settings: S3Settings,
    directory: str | os.PathLike[str] | None = None,
    acl: str = "aws-exec-read",
    location: str | None = None,
    first_part: int = 0,
    skip_manifest: bool = False,
    fix_ownership: bool = False,
    allow_zstd: bool = False,
    progress: Progress | None = None,
) -> UploadResult:
    """Uploads the bundle of ``manifest`` (parts read from ``directory``,
    default the manifest's folder) to ``bucket``, parts in parallel, then
    the manifest.

    The bucket is created when missing (in ``location``, with Object
    Ownership BucketOwnerPreferred); an existing bucket must be in
    ``location`` when one is given (or derived from the region), else
    :class:`LocationMismatchError`. A bucket with ACLs disabled stops the
    upload before any object is sent (:class:`AclsDisabledError`) unless
    ``fix_ownership``. Parts already in the bucket with the same size and
    MD5 are not sent again; parts with an index below ``first_part`` are
    skipped (the classic ``--part``). A zstd bundle (its manifest says so) is
    refused for AWS, which cannot register it, unless ``allow_zstd``.
    """
    started = time.monotonic()
    bucket = as_bucket(bucket)
    settings = check_record(settings, S3Settings, "settings")
    progress = check_progress(progress)
    manifest_path = as_path(manifest, "manifest")
    folder = as_optional_path(directory, "directory") or manifest_path.parent
    check_acl(acl)
    if isinstance(first_part, bool) or not isinstance(first_part, int) or first_part < 0:
        raise UsageError(
            f"{{param}} must be a whole number of at least 0, not {first_part!r}",
            param="first_part",
        )
    parsed = read_manifest(manifest_path)
    if mf.marked_zstd(parsed.manifest):
        refuse_zstd_for_aws(settings, allow_zstd=allow_zstd, what=f"the bundle {manifest_path}")
    keys = bundle_keys(bucket, manifest_path.name, parsed.manifest)
    parts = _local_parts(parsed.manifest, folder)
    todo = [p for p in parts if p.index >= first_part]

    conn = connect(settings, location=location)
    created, changed = prepare_bucket(conn, bucket, location=location, fix_ownership=fix_ownership)

    up = _Upload(conn, bucket, acl, BatchedProgress(progress or NullProgress()), threading.Event())
    total = sum(p.size for p in todo) + (0 if skip_manifest else len(parsed.raw))
    up.progress.start(Stage.UPLOAD, total)
    try:
        sent = run_parallel(
            [partial(_upload_part, up, part) for part in todo], jobs=settings.jobs, stop=up.stop
        )
        if not skip_manifest:
            put_object(
                conn,
                bucket,
                keys[0],
                f"upload {manifest_path.name} to {bucket.url(keys[0])}",
                acl=acl,
                Body=parsed.raw,
                ContentMD5=md5_base64(parsed.raw),
            )
            up.progress.advance(Stage.UPLOAD, len(parsed.raw))
    except BaseException as err:
        up.progress.finish(Stage.UPLOAD, err)
        raise
    up.progress.finish(Stage.UPLOAD)

    uploaded = [p for p, was_sent in zip(todo, sent, strict=True) if was_sent]
    sent_keys = [bucket.key(p.name) for p in uploaded] + ([] if skip_manifest else [keys[0]])
    nbytes = sum(p.size for p in uploaded) + (0 if skip_manifest else len(parsed.raw))
    seconds = time.monotonic() - started
    return UploadResult(
        bucket=bucket,
        region=conn.region,
        manifest_key=keys[0],
        manifest_uploaded=not skip_manifest,
        parts_uploaded=len(uploaded),
        parts_skipped=len(todo) - len(uploaded),
        parts_before_first=len(parts) - len(todo),
        keys_uploaded=tuple(sent_keys),
        bytes_uploaded=nbytes,
        seconds=seconds,
        throughput=throughput(nbytes, seconds),
        bucket_created=created,
        ownership_changed=changed,
    )


def refuse_zstd_for_aws(settings: S3Settings, *, allow_zstd: bool, what: str) -> None:
    """A zstd bundle cannot be registered in EC2 (it reads gzip only): sending
    one to AWS is refused unless ``allow_zstd`` (bundle-upload calls this too)."""
    if allow_zstd or not is_aws_endpoint(settings):
        return
    raise UsageError(
        f"{what} is compressed with zstd, which EC2 cannot read: it could never be "
        "registered from an AWS bucket",
        hint="bundle again with gzip (the default) for EC2; {switch} uploads it all the "
        "same, for another cloud that reads this bucket",
        param="allow_zstd",
    )


def md5_base64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode("ascii")
