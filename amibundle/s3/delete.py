"""``delete_bundle``: one bundle out of a bucket, manifest first.

The manifest goes first (so nobody registers a half-deleted bundle), then
exactly the parts it lists, never a wildcard.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from amibundle.errors import BucketNotEmptyError, UsageError, plural
from amibundle.format import manifest as mf
from amibundle.format.manifest_reader import parse_manifest
from amibundle.reading import read_manifest
from amibundle.s3.client import Connection, connect, s3_errors
from amibundle.s3.engine import run_parallel
from amibundle.s3.remote import S3Result, bundle_keys, get_manifest
from amibundle.s3.settings import BucketRef, S3Settings, as_bucket
from amibundle.validate import as_optional_path, check_plain_name, check_record

__all__ = ["DeleteResult", "delete_bundle"]


@dataclass(frozen=True)
class DeleteResult(S3Result):
    """What :func:`delete_bundle` did. ``keys`` are the bundle's keys
    (manifest first); ``deleted`` is empty when ``declined``."""

    manifest_key: str
    keys: tuple[str, ...]
    deleted: tuple[str, ...]
    declined: bool
    bucket_removed: bool
    seconds: float


def _delete_key(conn: Connection, bucket: BucketRef, key: str) -> str:
    with s3_errors(f"delete {bucket.url(key)}", conn):
        conn.client.delete_object(Bucket=bucket.bucket, Key=key)
    return key


def _remove_bucket_if_empty(conn: Connection, bucket: BucketRef, deleted: Sequence[str]) -> None:
    name = bucket.bucket
    # Listed first: S3 refuses to delete a bucket that is not empty, but not
    # every S3-compatible server does (SeaweedFS deletes it with its contents).
    with s3_errors(f"list bucket {name}", conn):
        listing = conn.client.list_objects_v2(Bucket=name, MaxKeys=1)
    contents = listing.get("Contents") or []
    if contents:
        # Both halves: the bundle is gone, the bucket is not.
        raise BucketNotEmptyError(
            f"deleted the bundle ({plural(len(deleted), 'object')} from {bucket.url()}), "
            f"but kept bucket {name}: it is not empty (it holds {contents[0]['Key']})",
            deleted=deleted,
            hint="delete what else it holds first, or leave out {switch}",
        )
    with s3_errors(f"remove bucket {name}", conn):
        conn.client.delete_bucket(Bucket=name)


def delete_bundle(
    bucket: BucketRef | str,
    *,
    settings: S3Settings,
    manifest: str | os.PathLike[str] | None = None,
    prefix: str | None = None,
    manifest_name: str | None = None,
    clear: bool = False,
    confirm: Callable[[list[str]], bool] = lambda keys: True,
) -> DeleteResult:
    """Deletes one bundle: its manifest first (so nobody registers a half
    deleted bundle), then exactly the parts it lists, never a wildcard.

    The bundle is named by a local ``manifest``, by a bundle ``prefix`` (its
    manifest ``<prefix>.manifest.xml`` is then read from the bucket) or by
    the ``manifest_name`` of its manifest in the bucket.
    ``confirm(keys)`` is asked before anything is deleted: False deletes
    nothing and skips ``clear`` (result ``declined``); an exception it
    raises propagates. ``clear`` then removes the bucket if it is empty;
    if not, :class:`BucketNotEmptyError` says that the bundle was deleted
    (its ``deleted`` keys) and names a key the bucket still holds.
    """
    started = time.monotonic()
    bucket = as_bucket(bucket)
    settings = check_record(settings, S3Settings, "settings")
    manifest_path = as_optional_path(manifest, "manifest")
    if sum(x is not None for x in (manifest_path, prefix, manifest_name)) != 1:
        raise UsageError("name the bundle by a local manifest or by a bundle prefix (one of them)")
    local: mf.ParsedManifest | None = None
    if manifest_path is not None:
        manifest_name = manifest_path.name
        local = read_manifest(manifest_path)
    elif prefix is not None:
        manifest_name = f"{check_plain_name(prefix, 'prefix')}.manifest.xml"
    else:
        manifest_name = check_plain_name(manifest_name, "manifest_name")
    conn = connect(settings)
    if local is None:
        key = bucket.key(manifest_name)
        local = parse_manifest(get_manifest(conn, bucket, key), bucket.url(key))
    keys = bundle_keys(bucket, manifest_name, local.manifest)

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
        _remove_bucket_if_empty(conn, bucket, deleted)
    return result(deleted, removed=clear)
