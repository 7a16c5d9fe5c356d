"""amibundle: make, ship and check EC2 instance-store AMI bundles.

The public API is one function per command; each returns a result record
and raises :class:`AmibundleError` subclasses for anything a user can get
wrong (see ``amibundle.errors``)::

    from pathlib import Path
    import amibundle

    result = amibundle.bundle_image(
        Path("root.img"), cert=Path("cert.pem"), private_key=Path("pk.pem"),
        user="123456789012", destination=Path("out"),
    )
    report = amibundle.verify_bundle(result.manifest_path, cert=Path("cert.pem"))
    assert report.ok, report.problems
"""

from __future__ import annotations

__version__ = "0.1.0"

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and IDEs; at run time names load on first use
    from amibundle.api import (
        BundleResult,
        KeygenResult,
        ManifestReport,
        UnbundleResult,
        VerifyReport,
        bundle_image,
        inspect_manifest,
        keygen,
        read_manifest,
        unbundle,
        verify_bundle,
    )
    from amibundle.bundlevol import VolumeBundleResult, bundle_volume
    from amibundle.compression import Compression
    from amibundle.errors import AmibundleError
    from amibundle.pipeline import Codec
    from amibundle.progress import NullProgress, Progress, Stage
    from amibundle.s3 import (
        AclsDisabledError,
        BucketRef,
        DeleteResult,
        DownloadResult,
        LocationMismatchError,
        S3Error,
        S3Settings,
        UploadResult,
        delete_bundle,
        download_bundle,
        parse_bucket,
        upload_bundle,
    )

# Each public name and the module that defines it. They are imported on first
# use (PEP 562), so a command loads only what it needs: `ec2-bundle-image`
# never imports boto3 or the bundle-vol machinery.
_EXPORTS: dict[str, str] = {
    "AclsDisabledError": "amibundle.s3",
    "AmibundleError": "amibundle.errors",
    "BucketRef": "amibundle.s3",
    "BundleResult": "amibundle.api",
    "Codec": "amibundle.pipeline",
    "Compression": "amibundle.compression",
    "DeleteResult": "amibundle.s3",
    "DownloadResult": "amibundle.s3",
    "KeygenResult": "amibundle.api",
    "LocationMismatchError": "amibundle.s3",
    "ManifestReport": "amibundle.api",
    "NullProgress": "amibundle.progress",
    "Progress": "amibundle.progress",
    "S3Error": "amibundle.s3",
    "S3Settings": "amibundle.s3",
    "Stage": "amibundle.progress",
    "UnbundleResult": "amibundle.api",
    "UploadResult": "amibundle.s3",
    "VerifyReport": "amibundle.api",
    "VolumeBundleResult": "amibundle.bundlevol",
    "bundle_image": "amibundle.api",
    "bundle_volume": "amibundle.bundlevol",
    "delete_bundle": "amibundle.s3",
    "download_bundle": "amibundle.s3",
    "inspect_manifest": "amibundle.api",
    "keygen": "amibundle.api",
    "parse_bucket": "amibundle.s3",
    "read_manifest": "amibundle.api",
    "unbundle": "amibundle.api",
    "upload_bundle": "amibundle.s3",
    "verify_bundle": "amibundle.api",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'amibundle' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "AclsDisabledError",
    "AmibundleError",
    "BucketRef",
    "BundleResult",
    "Codec",
    "Compression",
    "DeleteResult",
    "DownloadResult",
    "KeygenResult",
    "LocationMismatchError",
    "ManifestReport",
    "NullProgress",
    "Progress",
    "S3Error",
    "S3Settings",
    "Stage",
    "UnbundleResult",
    "UploadResult",
    "VerifyReport",
    "VolumeBundleResult",
    "__version__",
    "bundle_image",
    "bundle_volume",
    "delete_bundle",
    "download_bundle",
    "inspect_manifest",
    "keygen",
    "parse_bucket",
    "read_manifest",
    "unbundle",
    "upload_bundle",
    "verify_bundle",
]
