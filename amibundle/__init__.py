"""amibundle: make, ship and check EC2 instance-store AMI bundles.

The public API is one function per command; each returns a result record
and raises :class:`AmibundleError` subclasses for anything a user can get
wrong (see ``amibundle.errors``)::

    import amibundle

    keys = amibundle.BundleKeys.load(cert="cert.pem", private_key="pk.pem")
    metadata = amibundle.BundleMetadata.create(user="123456789012", arch="x86_64")
    result = amibundle.bundle_image("root.img", metadata=metadata, keys=keys, destination="out")
    report = amibundle.verify_bundle(result.manifest_path, cert="cert.pem")
    assert report.ok, report.problems
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("amibundle")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

# Each public name and the module that defines it: the one list. Names are
# imported on first use (PEP 562), so a command loads only what it needs:
# `ec2-bundle-image` never imports boto3, `upload` never the compressors.
# (Static type checkers see these names as Any; import them from their
# modules for precise types.)
_EXPORTS: dict[str, str] = {
    "AclsDisabledError": "amibundle.errors",
    "AmibundleError": "amibundle.errors",
    "BlockDeviceMapping": "amibundle.ec2.registration",
    "BootMode": "amibundle.volume.boot",
    "BootableSpec": "amibundle.ebs.bootable",
    "BucketRef": "amibundle.s3.settings",
    "Builder": "amibundle.volume.plan",
    "BundleKeys": "amibundle.identity",
    "BundleMetadata": "amibundle.metadata",
    "BundleResult": "amibundle.bundling",
    "BundleUploadResult": "amibundle.uploading",
    "Codec": "amibundle.pipeline",
    "Compression": "amibundle.compression",
    "CopyResult": "amibundle.s3.migrate",
    "DeleteResult": "amibundle.s3.delete",
    "DeregisterResult": "amibundle.ec2.deregister",
    "DownloadResult": "amibundle.s3.download",
    "DownloadUnbundleResult": "amibundle.downloading",
    "EbsError": "amibundle.errors",
    "EbsImageSpec": "amibundle.ebs.registration",
    "Ec2Access": "amibundle.kernel_mapping",
    "Ec2CertificateReport": "amibundle.identity",
    "Ec2Error": "amibundle.errors",
    "FstabVariant": "amibundle.volume.plan",
    "ImageFailedError": "amibundle.errors",
    "ImageFormat": "amibundle.sources",
    "ImageIds": "amibundle.kernel_mapping",
    "ImageRegistration": "amibundle.ec2.registration",
    "ImageSourceError": "amibundle.errors",
    "InstallError": "amibundle.errors",
    "InstallResult": "amibundle.installing",
    "KeyMismatchError": "amibundle.errors",
    "KeygenResult": "amibundle.identity",
    "LeftoversError": "amibundle.errors",
    "LocationMismatchError": "amibundle.errors",
    "ManifestReport": "amibundle.checking",
    "MigrationResult": "amibundle.migration",
    "NullProgress": "amibundle.progress",
    "PartialImageError": "amibundle.errors",
    "PartitionTable": "amibundle.volume.plan",
    "Progress": "amibundle.progress",
    "RegisterResult": "amibundle.ec2.register",
    "RegisteredImage": "amibundle.ebs.register",
    "S3Error": "amibundle.errors",
    "S3Settings": "amibundle.s3.settings",
    "SnapshotResult": "amibundle.ebs.convert",
    "SnapshotSpec": "amibundle.ebs.snapshot",
    "Stage": "amibundle.progress",
    "UnbundleResult": "amibundle.unbundling",
    "UploadResult": "amibundle.s3.upload",
    "UploadTarget": "amibundle.uploading",
    "UsageError": "amibundle.errors",
    "VerifyReport": "amibundle.checking",
    "VirtualizationType": "amibundle.ec2.registration",
    "VolumeBundleResult": "amibundle.volume.bundle",
    "bundle_image": "amibundle.bundling",
    "bundle_to_snapshot": "amibundle.ebs.convert",
    "bundle_upload": "amibundle.uploading",
    "bundle_volume": "amibundle.volume.bundle",
    "caller_account": "amibundle.ec2.account",
    "copy_bundle": "amibundle.s3.migrate",
    "delete_bundle": "amibundle.s3.delete",
    "deregister_image": "amibundle.ec2.deregister",
    "download_bundle": "amibundle.s3.download",
    "download_unbundle": "amibundle.downloading",
    "ec2_certificates": "amibundle.identity",
    "image_to_snapshot": "amibundle.ebs.convert",
    "inspect_manifest": "amibundle.checking",
    "install_image": "amibundle.installing",
    "keygen": "amibundle.identity",
    "map_image_ids": "amibundle.kernel_mapping",
    "migrate_manifest": "amibundle.migration",
    "parse_bucket": "amibundle.s3.settings",
    "read_manifest": "amibundle.reading",
    "register_image": "amibundle.ec2.register",
    "register_snapshot": "amibundle.ebs.register",
    "s3_bundle_to_snapshot": "amibundle.ebs.from_s3",
    "unbundle": "amibundle.unbundling",
    "upload_bundle": "amibundle.s3.upload",
    "verify_bundle": "amibundle.checking",
    "with_bucket_region": "amibundle.s3.buckets",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'amibundle' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
