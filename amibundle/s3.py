"""Shipping bundles to and from S3: upload, download and delete.

Every function takes a :class:`BucketRef` (``parse_bucket("bucket/key/prefix")``)
and :class:`S3Settings` (credentials, region, endpoint, attempts, jobs), runs
its transfers on ``settings.jobs`` threads, and raises
:class:`~amibundle.errors.AmibundleError` subclasses with one-line messages;
:class:`S3Error` (and its subclasses) for anything S3 answered or could not
answer. What the three keep promised:

* upload sends nothing before the bucket is known to accept the ACL EC2
  needs, never sends a part whose SHA-1 differs from the manifest, skips
  parts already in the bucket with the same size and MD5 (so re-running an
  interrupted upload resumes it), and sends the manifest last, only after
  every part arrived;
* download writes only the file names the manifest lists (validated plain
  names) inside its folder, each under a temporary name until its SHA-1
  matched, skips parts already there and valid, and writes the manifest
  last;
* delete removes the manifest first, then exactly the parts it lists.

The plumbing (client, errors, parallel engine) is in :mod:`amibundle.transfer`.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from amibundle import manifest as mf
from amibundle.api import parse_manifest, read_manifest
from amibundle.errors import IntegrityError, ManifestError, StorageError, UsageError
from amibundle.files import temp_output, write_atomically
from amibundle.progress import BatchedProgress, NullProgress, Progress, Stage
from amibundle.transfer import (
    DEFAULT_REGION,
    AclsDisabledError,
    BucketRef,
    Connection,
    LocationMismatchError,
    NoSuchBucketError,
    S3CredentialsError,
    S3Error,
    S3Settings,
    Stopped,
    UploadBody,
    connect,
    error_code,
    hash_file,
    parse_bucket,
    region_of_location,
    retry_delay,
    run_parallel,
    s3_failure,
    write_all,
)
from amibundle.validate import check_plain_name

__all__ = [
    "CANNED_ACLS",
    "AclsDisabledError",
    "BucketRef",
    "DeleteResult",
    "DownloadResult",
    "LocationMismatchError",
    "NoSuchBucketError",
    "S3CredentialsError",
    "S3Error",
    "S3Settings",
    "UploadResult",
    "delete_bundle",
    "download_bundle",
    "parse_bucket",
    "upload_bundle",
]

log = logging.getLogger("amibundle.s3")

CANNED_ACLS = ("aws-exec-read", "public-read", "bucket-owner-full-control", "private")
_CHUNK = 1 << 20
# A body cut short or stalled while streaming: botocore retries requests, not
# bodies, so downloads retry these themselves.
_STREAM_ERRORS = (
    ResponseStreamingError,
    IncompleteReadError,
    ReadTimeoutError,
    ConnectionClosedError,
)
_T = TypeVar("_T")
_MISSING_HINT = "check the bucket, the key prefix and the manifest name or bundle prefix"


def _jsonable(value: Any) -> Any:
    if isinstance(value, BucketRef):
        return value.bucket
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def _record_dict(record: Any) -> dict[str, Any]:
    """A result's fields ready for ``json.dump``: the bucket as its name
    (plus ``prefix``), paths as strings."""
    fields = {f.name: _jsonable(getattr(record, f.name)) for f in dataclasses.fields(record)}
    bucket: BucketRef = record.bucket
    return {**fields, "bucket": bucket.bucket, "prefix": bucket.prefix}


def _throughput(nbytes: int, seconds: float) -> float:
    return nbytes / seconds if seconds > 0 else 0.0


# --------------------------------------------------------------------------- shared steps


def _client_call(conn: Connection, what: str, call: Callable[[], _T]) -> _T:
    try:
        return call()
    except (ClientError, BotoCoreError) as err:
        raise s3_failure(what, err, conn) from None


def _bundle_keys(bucket: BucketRef, manifest_name: str, manifest: mf.Manifest) -> list[str]:
    """The manifest's key first, then its parts' keys in manifest order."""
    if any(part.filename == manifest_name for part in manifest.parts):
        raise ManifestError(f"the manifest {manifest_name} lists itself as a part")
    return [bucket.key(manifest_name)] + [bucket.key(p.filename) for p in manifest.parts]


def _fetch(
    conn: Connection,
    bucket: BucketRef,
    key: str,
    what: str,
    consume: Callable[[Any, Callable[[int], None]], _T],
    *,
    stop: threading.Event,
    progress: Progress | None = None,
    missing: str | None = None,
) -> _T:
    """GETs ``key`` and hands its body to ``consume(body, report)``; a body
    that breaks off while streaming is fetched again (``attempts`` in all),
    taking back the progress it had reported. A missing key is reported as
    ``missing`` when given."""
    attempts = conn.settings.attempts
    for attempt in range(1, attempts + 1):
        counted = 0

        def report(nbytes: int) -> None:
            nonlocal counted
            counted += nbytes
            if progress is not None:
                progress.advance(Stage.DOWNLOAD, nbytes)

        try:
            reply = conn.client.get_object(Bucket=bucket.bucket, Key=key)
        except ClientError as err:
            if missing is not None and error_code(err)[0] in ("NoSuchKey", "404"):
                raise S3Error(missing, hint=_MISSING_HINT) from None
            raise s3_failure(what, err, conn) from None
        except BotoCoreError as err:
            raise s3_failure(what, err, conn) from None
        body = reply["Body"]
        try:
            return consume(body, report)
        except _STREAM_ERRORS as err:
            if progress is not None and counted:
                progress.advance(Stage.DOWNLOAD, -counted)
            if attempt == attempts:
                raise s3_failure(what, err, conn) from None
            log.info("%s: %s; trying again", what, err)
        finally:
            body.close()
        if stop.wait(retry_delay(attempt)):
            raise Stopped
    raise AssertionError("unreachable")  # pragma: no cover


def _read_small(body: Any, report: Callable[[int], None], *, limit: int, url: str) -> bytes:
    data: bytes = body.read(limit + 1)
    if len(data) > limit:
        raise ManifestError(f"{url} is larger than {limit >> 20} MiB: not a bundle manifest")
    return data


def _get_manifest(conn: Connection, bucket: BucketRef, key: str) -> bytes:
    url = bucket.url(key)
    return _fetch(
        conn,
        bucket,
        key,
        f"download the manifest {url}",
        partial(_read_small, limit=mf.MAX_MANIFEST_SIZE, url=url),
        stop=threading.Event(),
        missing=f"there is no bundle manifest at {url}",
    )


# --------------------------------------------------------------------------- upload


@dataclass(frozen=True)
class UploadResult:
    """What :func:`upload_bundle` did."""

    bucket: BucketRef
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

    def to_dict(self) -> dict[str, Any]:
        return _record_dict(self)


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
            raise StorageError(f"part {part.filename} is missing from {directory}") from None
        except OSError as err:
            raise StorageError(f"cannot read part {path}: {err.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise StorageError(f"part {path} is not a regular file")
        found.append(_LocalPart(part.index, part.filename, path, st.st_size, part.digest))
    return found


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
        raise s3_failure(f"create bucket {bucket.bucket}", err, conn) from None
    except BotoCoreError as err:
        raise s3_failure(f"create bucket {bucket.bucket}", err, conn) from None


def _ensure_bucket(conn: Connection, bucket: BucketRef, location: str | None) -> bool:
    """Creates the bucket if it is missing (True), else checks that it is in
    ``location`` when one was asked for."""
    try:
        reply = conn.client.get_bucket_location(Bucket=bucket.bucket)
    except ClientError as err:
        if error_code(err)[0] == "NoSuchBucket":
            _create_bucket(conn, bucket, location)
            return True
        raise s3_failure(f"look up bucket {bucket.bucket}", err, conn) from None
    except BotoCoreError as err:
        raise s3_failure(f"look up bucket {bucket.bucket}", err, conn) from None
    reported = reply.get("LocationConstraint") or "US"  # none means US Standard
    # Compared as regions, so EU and eu-west-1 match both ways (the classic
    # rejected --location EU for a bucket reporting eu-west-1).
    if location is not None and region_of_location(location) != region_of_location(reported):
        raise LocationMismatchError(
            f"bucket {bucket.bucket} is in location {reported}, not {location}",
            hint=f"upload to another bucket, or ask for location {reported}",
        )
    return False


def _acls_disabled(bucket: str) -> AclsDisabledError:
    return AclsDisabledError(
        f"bucket {bucket} has Object Ownership BucketOwnerEnforced, which disables ACLs: "
        "EC2 could not read the bundle, as it reads bundles through their aws-exec-read ACL",
        hint=f"run 'aws s3api put-bucket-ownership-controls --bucket {bucket} "
        "--ownership-controls Rules=[{ObjectOwnership=BucketOwnerPreferred}]', "
        "or upload with --fix-ownership",
    )


def _check_ownership(conn: Connection, bucket: BucketRef, *, fix: bool) -> bool:
    """Stops when the bucket's ACLs are disabled, unless ``fix``: then
    enables them (BucketOwnerPreferred) and returns True."""
    name = bucket.bucket
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
        raise s3_failure(f"read the Object Ownership setting of bucket {name}", err, conn) from None
    except BotoCoreError as err:
        raise s3_failure(f"read the Object Ownership setting of bucket {name}", err, conn) from None
    rules = reply.get("OwnershipControls", {}).get("Rules", [])
    if not any(rule.get("ObjectOwnership") == "BucketOwnerEnforced" for rule in rules):
        return False
    if not fix:
        raise _acls_disabled(name)
    log.info("setting Object Ownership of bucket %s to BucketOwnerPreferred", name)
    _client_call(
        conn,
        f"change the Object Ownership setting of bucket {name}",
        lambda: conn.client.put_bucket_ownership_controls(
            Bucket=name,
            OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerPreferred"}]},
        ),
    )
    return True


def _already_uploaded(up: _Upload, key: str, size: int, md5_hex: str) -> bool:
    try:
        head = up.conn.client.head_object(Bucket=up.bucket.bucket, Key=key)
    except ClientError as err:
        # 403: we may write but not read (a put-only policy); just send it.
        if error_code(err)[1] in (403, 404):
            return False
        raise s3_failure(f"look up {up.bucket.url(key)}", err, up.conn) from None
    except BotoCoreError as err:
        raise s3_failure(f"look up {up.bucket.url(key)}", err, up.conn) from None
    etag = str(head.get("ETag", "")).strip('"').lower()
    return head.get("ContentLength") == size and etag == md5_hex


def _put(up: _Upload, key: str, what: str, **request: Any) -> None:
    try:
        up.conn.client.put_object(Bucket=up.bucket.bucket, Key=key, ACL=up.acl, **request)
    except ClientError as err:
        if error_code(err)[0] == "AccessControlListNotSupported":
            raise _acls_disabled(up.bucket.bucket) from None
        raise s3_failure(what, err, up.conn) from None
    except BotoCoreError as err:
        raise s3_failure(what, err, up.conn) from None


def _upload_part(up: _Upload, part: _LocalPart) -> bool:
    """Sends one part unless the bucket has it already; True if sent."""
    key = up.bucket.key(part.name)
    try:
        with open(part.path, "rb") as handle:
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
                _put(
                    up,
                    key,
                    f"upload {part.name} to {up.bucket.url(key)}",
                    Body=body,
                    ContentLength=digests.size,
                    ContentMD5=digests.md5_base64,
                )
            except Stopped:
                if body.failure is not None:
                    raise body.failure from None
                raise
    except OSError as err:
        raise StorageError(f"cannot read part {part.path}: {err.strerror}") from None
    return True


def upload_bundle(
    manifest: Path,
    bucket: BucketRef,
    *,
    settings: S3Settings,
    directory: Path | None = None,
    acl: str = "aws-exec-read",
    location: str | None = None,
    first_part: int = 0,
    skip_manifest: bool = False,
    fix_ownership: bool = False,
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
    skipped (the classic ``--part``).
    """
    started = time.monotonic()
    if acl not in CANNED_ACLS:
        raise UsageError(f"unknown ACL {acl!r}; use one of {', '.join(CANNED_ACLS)}")
    if isinstance(first_part, bool) or not isinstance(first_part, int) or first_part < 0:
        raise UsageError(f"the first part must be a whole number of at least 0, not {first_part!r}")
    parsed = read_manifest(manifest)
    keys = _bundle_keys(bucket, manifest.name, parsed.manifest)
    parts = _local_parts(parsed.manifest, manifest.parent if directory is None else directory)
    todo = [p for p in parts if p.index >= first_part]

    conn = connect(settings, location=location)
    requested = _requested_location(location, conn.region)
    created = _ensure_bucket(conn, bucket, requested)
    # A bucket we just made asked for BucketOwnerPreferred; a server that
    # ignored that (SeaweedFS) gets it set explicitly.
    changed = _check_ownership(conn, bucket, fix=fix_ownership or created)

    up = _Upload(conn, bucket, acl, BatchedProgress(progress or NullProgress()), threading.Event())
    total = sum(p.size for p in todo) + (0 if skip_manifest else len(parsed.raw))
    up.progress.start(Stage.UPLOAD, total)
    try:
        sent = run_parallel(
            [partial(_upload_part, up, part) for part in todo], jobs=settings.jobs, stop=up.stop
        )
        if not skip_manifest:
            _put(
                up,
                keys[0],
                f"upload {manifest.name} to {bucket.url(keys[0])}",
                Body=parsed.raw,
                ContentMD5=_md5_base64(parsed.raw),
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
        throughput=_throughput(nbytes, seconds),
        bucket_created=created,
        ownership_changed=changed,
    )


def _md5_base64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode("ascii")


# --------------------------------------------------------------------------- download


@dataclass(frozen=True)
class DownloadResult:
    """What :func:`download_bundle` did."""

    bucket: BucketRef
    manifest_key: str
    manifest_path: Path
    part_paths: tuple[Path, ...]  # in manifest order
    parts_downloaded: int
    parts_skipped: int  # already in the folder with the right SHA-1: not fetched
    bytes_downloaded: int  # parts and manifest
    seconds: float
    throughput: float  # bytes per second

    def to_dict(self) -> dict[str, Any]:
        return _record_dict(self)


@dataclass(frozen=True)
class _Download:
    conn: Connection
    bucket: BucketRef
    directory: Path
    bundled_size: int
    progress: Progress
    stop: threading.Event


def _valid_local_part(path: Path, sha1: str, down: _Download) -> int | None:
    """The size of ``path`` if it is a regular file (not a link) with the
    right SHA-1, else None."""
    try:
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode) or st.st_size > down.bundled_size:
            return None
        with open(path, "rb") as handle:
            digests = hash_file(handle, down.stop)
    except OSError:
        return None
    return digests.size if digests.sha1 == sha1 else None


def _receive_part(
    down: _Download, part: mf.PartEntry, url: str, body: Any, report: Callable[[int], None]
) -> int:
    final = down.directory / part.filename
    with temp_output(final) as out:
        sha1 = hashlib.sha1()
        received = 0
        for chunk in body.iter_chunks(_CHUNK):
            if down.stop.is_set():
                raise Stopped
            received += len(chunk)
            if received > down.bundled_size:
                raise IntegrityError(
                    f"{url} is larger than the whole bundle ({down.bundled_size} bytes)"
                )
            try:
                write_all(out.fd, chunk)
            except OSError as err:
                raise StorageError(f"cannot write {final}: {err.strerror}") from None
            sha1.update(chunk)
            report(len(chunk))
        if sha1.hexdigest() != part.digest:
            raise IntegrityError(f"{url} is damaged: its SHA-1 does not match the manifest")
        out.publish(overwrite=True)
    return received


def _download_part(down: _Download, part: mf.PartEntry) -> int | None:
    """Fetches one part unless a valid copy is there; its size if fetched."""
    # The name passed the manifest's plain-name check; joined to the folder
    # it cannot point anywhere else.
    present = _valid_local_part(down.directory / part.filename, part.digest, down)
    if present is not None:
        down.progress.advance(Stage.DOWNLOAD, present)
        return None
    key = down.bucket.key(part.filename)
    url = down.bucket.url(key)
    return _fetch(
        down.conn,
        down.bucket,
        key,
        f"download {url}",
        partial(_receive_part, down, part, url),
        stop=down.stop,
        progress=down.progress,
    )


def download_bundle(
    bucket: BucketRef,
    *,
    settings: S3Settings,
    manifest_name: str,
    directory: Path,
    progress: Progress | None = None,
) -> DownloadResult:
    """Downloads the bundle whose manifest is ``<prefix><manifest_name>`` into
    ``directory``: the manifest is read first, its parts are fetched in
    parallel and checked against its SHA-1s, and the manifest is written
    last. Parts already in ``directory`` with the right SHA-1 are kept, so
    an interrupted download resumes."""
    started = time.monotonic()
    check_plain_name(manifest_name, "manifest name")
    if not directory.is_dir():
        raise UsageError(f"download folder {directory} is not an existing directory")
    conn = connect(settings)
    manifest_key = bucket.key(manifest_name)
    raw = _get_manifest(conn, bucket, manifest_key)
    manifest = parse_manifest(raw, bucket.url(manifest_key)).manifest
    _bundle_keys(bucket, manifest_name, manifest)
    parts = sorted(manifest.parts, key=lambda p: p.filename)

    down = _Download(
        conn,
        bucket,
        directory,
        manifest.bundled_size,
        BatchedProgress(progress or NullProgress()),
        threading.Event(),
    )
    down.progress.start(Stage.DOWNLOAD, manifest.bundled_size)
    try:
        fetched = run_parallel(
            [partial(_download_part, down, part) for part in parts],
            jobs=settings.jobs,
            stop=down.stop,
        )
        manifest_path = directory / manifest_name
        write_atomically(manifest_path, raw, overwrite=True)
    except BaseException as err:
        down.progress.finish(Stage.DOWNLOAD, err)
        raise
    down.progress.finish(Stage.DOWNLOAD)

    downloaded = [size for size in fetched if size is not None]
    nbytes = sum(downloaded) + len(raw)
    seconds = time.monotonic() - started
    return DownloadResult(
        bucket=bucket,
        manifest_key=manifest_key,
        manifest_path=manifest_path,
        part_paths=tuple(directory / p.filename for p in manifest.parts),
        parts_downloaded=len(downloaded),
        parts_skipped=len(parts) - len(downloaded),
        bytes_downloaded=nbytes,
        seconds=seconds,
        throughput=_throughput(nbytes, seconds),
    )


# --------------------------------------------------------------------------- delete


@dataclass(frozen=True)
class DeleteResult:
    """What :func:`delete_bundle` did. ``keys`` are the bundle's keys
    (manifest first); ``deleted`` is empty when ``declined``."""

    bucket: BucketRef
    manifest_key: str
    keys: tuple[str, ...]
    deleted: tuple[str, ...]
    declined: bool
    bucket_removed: bool
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return _record_dict(self)


def _delete_key(conn: Connection, bucket: BucketRef, key: str) -> str:
    _client_call(
        conn,
        f"delete {bucket.url(key)}",
        lambda: conn.client.delete_object(Bucket=bucket.bucket, Key=key),
    )
    return key


def _remove_bucket_if_empty(conn: Connection, bucket: BucketRef) -> None:
    name = bucket.bucket
    # Listed first: S3 refuses to delete a bucket that is not empty, but not
    # every S3-compatible server does (SeaweedFS deletes it with its contents).
    listing = _client_call(
        conn, f"list bucket {name}", lambda: conn.client.list_objects_v2(Bucket=name, MaxKeys=1)
    )
    contents = listing.get("Contents") or []
    if contents:
        raise S3Error(f"bucket {name} was kept: it is not empty (it holds {contents[0]['Key']})")
    _client_call(conn, f"remove bucket {name}", lambda: conn.client.delete_bucket(Bucket=name))


def delete_bundle(
    bucket: BucketRef,
    *,
    settings: S3Settings,
    manifest: Path | None = None,
    prefix: str | None = None,
    clear: bool = False,
    confirm: Callable[[list[str]], bool] = lambda keys: True,
) -> DeleteResult:
    """Deletes one bundle: its manifest first (so nobody registers a half
    deleted bundle), then exactly the parts it lists, never a wildcard.

    The bundle is named by a local ``manifest`` or by a bundle ``prefix``
    (its manifest ``<prefix>.manifest.xml`` is then read from the bucket).
    ``confirm(keys)`` is asked before anything is deleted: False deletes
    nothing and skips ``clear`` (result ``declined``); an exception it
    raises propagates. ``clear`` then removes the bucket if it is empty;
    if not, :class:`S3Error` names a key it still holds.
    """
    started = time.monotonic()
    if (manifest is None) == (prefix is None):
        raise UsageError("name the bundle by a local manifest or by a bundle prefix (one of them)")
    if manifest is not None:
        manifest_name = manifest.name
        local: mf.ParsedManifest | None = read_manifest(manifest)
    else:
        manifest_name = f"{check_plain_name(str(prefix), 'bundle prefix')}.manifest.xml"
        local = None
    conn = connect(settings)
    if local is None:
        key = bucket.key(manifest_name)
        local = parse_manifest(_get_manifest(conn, bucket, key), bucket.url(key))
    keys = _bundle_keys(bucket, manifest_name, local.manifest)

    def result(
        deleted: Sequence[str], *, declined: bool = False, removed: bool = False
    ) -> DeleteResult:
        return DeleteResult(
            bucket=bucket,
            manifest_key=keys[0],
            keys=tuple(keys),
            deleted=tuple(deleted),
            declined=declined,
            bucket_removed=removed,
            seconds=time.monotonic() - started,
        )

    if not confirm(list(keys)):
        return result((), declined=True)
    _delete_key(conn, bucket, keys[0])
    stop = threading.Event()
    rest = run_parallel(
        [partial(_delete_key, conn, bucket, key) for key in keys[1:]],
        jobs=settings.jobs,
        stop=stop,
    )
    deleted = [keys[0], *rest]
    if clear:
        _remove_bucket_if_empty(conn, bucket)
    return result(deleted, removed=clear)
