"""Bundles in the AWS stand-in's S3, made with bundle_upload through the environment
(AWS_ENDPOINT_URL and keys set by the `aws_env` fixture of tests/ec2)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from amibundle import s3
from amibundle.uploading import BundleUploadResult, bundle_upload
from tests.support.bundling import keys_for, metadata_for
from tests.support.common import Identity

__all__ = ["identity_args", "proxied_services", "small_image", "upload_small_bundle"]


def small_image(folder: Path, name: str = "img", size: int = 150_000, seed: int = 0) -> Path:
    path = folder / name
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def upload_small_bundle(
    folder: Path, identity: Identity, bucket: str = "bundles/img", **metadata: Any
) -> BundleUploadResult:
    """A small random image bundled straight into ``bucket``; ``metadata`` are manifest
    fields (``kernel_id``, ``block_device_mapping`` ...)."""
    return bundle_upload(
        small_image(folder),
        bucket,
        metadata=metadata_for(user="111122223333", **metadata),
        keys=keys_for(identity),
        settings=s3.S3Settings(),
        part_size=64 * 1024,
    )


def identity_args(identity: Identity) -> list[str]:
    return ["-c", str(identity.cert), "-k", str(identity.key), "-r", "x86_64"]


def proxied_services(proxy: Any) -> list[str]:
    """The services of the requests the proxy saw, in order (from the SigV4 scope)."""
    services = []
    for request in proxy.requests:
        scope = request.headers.get("authorization", "").split("Credential=")[-1]
        parts = scope.split(",")[0].split("/")
        services.append(f"{parts[3]}:{parts[2]}" if len(parts) > 3 else "?")
    return services
