"""Shipping bundles to and from S3: upload, download, delete, and copy between buckets.

Every operation takes a :class:`BucketRef` (``parse_bucket("bucket/key/prefix")``)
and :class:`S3Settings` (credentials, region, endpoint, attempts, jobs), runs
its transfers on ``settings.jobs`` threads, and raises
:class:`~amibundle.errors.AmibundleError` subclasses with one-line messages:
:class:`~amibundle.errors.S3Error` (and its subclasses) for anything S3
answered or could not answer.

Modules: :mod:`.settings` (how to reach S3, bucket references, regions),
:mod:`.client` (the boto3 client, error wording), :mod:`.engine` (parallel
transfers), :mod:`.remote` (a bundle's objects), :mod:`.buckets` (getting a
bucket ready), and one module per operation: :mod:`.upload`,
:mod:`.download`, :mod:`.delete`, :mod:`.migrate` (server-side copy). None
of them loads the compression stack. The streaming halves (:mod:`.sink`,
parts into a bucket as they are cut, and :mod:`.source`, parts out of one in
order) are used by :mod:`amibundle.uploading` and :mod:`amibundle.downloading`.
"""

from __future__ import annotations

from amibundle.errors import (
    AclsDisabledError,
    BucketNotEmptyError,
    LocationMismatchError,
    NoSuchBucketError,
    S3CredentialsError,
    S3Error,
)
from amibundle.s3.buckets import with_bucket_region
from amibundle.s3.delete import DeleteResult, delete_bundle
from amibundle.s3.download import DownloadResult, download_bundle
from amibundle.s3.migrate import CopyResult, bucket_location, copy_bundle, read_bundle_manifest
from amibundle.s3.settings import BucketRef, S3Settings, parse_bucket
from amibundle.s3.upload import CANNED_ACLS, UploadResult, upload_bundle

__all__ = [
    "CANNED_ACLS",
    "AclsDisabledError",
    "BucketNotEmptyError",
    "BucketRef",
    "CopyResult",
    "DeleteResult",
    "DownloadResult",
    "LocationMismatchError",
    "NoSuchBucketError",
    "S3CredentialsError",
    "S3Error",
    "S3Settings",
    "UploadResult",
    "bucket_location",
    "copy_bundle",
    "delete_bundle",
    "download_bundle",
    "parse_bucket",
    "read_bundle_manifest",
    "upload_bundle",
    "with_bucket_region",
]
