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
