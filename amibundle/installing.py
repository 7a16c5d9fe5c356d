"""``install_image``: an image file to a registered AMI in one call, like
euca2ools' ``install-image``: :func:`~amibundle.uploading.bundle_upload`,
then :func:`~amibundle.ec2.register.register_image`.

The registration is checked against what the manifest will say before the
image is read, so a combination EC2 would refuse (a kernel on an hvm image)
costs no upload. A failure after the upload deregisters nothing this call
did not register and says what exists (:class:`~amibundle.errors.InstallError`):
the bundle is kept (register it again, or delete it); an image that ends
``failed`` was registered by this call and is deregistered.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from amibundle.ec2.client import Ec2Connection, ec2_errors
from amibundle.ec2.client import connect as connect_ec2
from amibundle.ec2.register import (
    DEFAULT_WAIT_TIMEOUT,
    RegisterResult,
    register_image,
    wait_for_image,
)
from amibundle.ec2.registration import ImageRegistration
from amibundle.errors import AmibundleError, ImageFailedError, InstallError
from amibundle.format import manifest as mf
from amibundle.identity import BundleKeys
from amibundle.metadata import BundleMetadata
from amibundle.pipeline import Codec
from amibundle.progress import Progress
from amibundle.results import JsonRecord
from amibundle.s3.settings import BucketRef, S3Settings
from amibundle.uploading import BundleUploadResult, bundle_upload
from amibundle.validate import check_record

__all__ = ["InstallResult", "check_registration", "install_image", "register_uploaded"]

log = logging.getLogger("amibundle")


@dataclass(frozen=True)
class InstallResult(JsonRecord):
    """What :func:`install_image` made: the bundle in S3 and the AMI."""

    upload: BundleUploadResult
    registration: RegisterResult
    seconds: float

    @property
    def image_id(self) -> str:
        return self.registration.image_id


def check_registration(registration: ImageRegistration, metadata: BundleMetadata) -> None:
    """Raises the :class:`~amibundle.errors.UsageError` RegisterImage's
    parameters would raise for a bundle of ``metadata``: before an upload."""
    preview = mf.Manifest(
        name="preview", user=metadata.account, digest="", size=0, bundled_size=0,
        ec2_encrypted_key="", user_encrypted_key="", ec2_encrypted_iv="", user_encrypted_iv="",
        parts=(), architecture=metadata.architecture,
        block_device_mapping=metadata.block_device_mapping, kernel_id=metadata.kernel_id,
        ramdisk_id=metadata.ramdisk_id,
    )  # fmt: skip
    registration.request("bucket/preview.manifest.xml", preview)


def register_uploaded(
    upload: BundleUploadResult,
    registration: ImageRegistration,
    *,
    settings: S3Settings,
    ec2_endpoint_url: str | None = None,
    wait: bool = False,
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
    poll_interval: float | None = None,
) -> RegisterResult:
    """Registers an uploaded bundle (the second half of install); failures
    become an :class:`InstallError` saying what exists."""
    location = upload.manifest_location
    keep = (
        f"the bundle is kept at s3://{location}: register it with 'amibundle register "
        f"-m {location} -n NAME', or remove it with 'amibundle delete -b "
        f"{upload.bucket.bucket}/{upload.bucket.prefix} -p {upload.name}'"
    )
    try:
        registered = register_image(
            location, registration, settings=settings, ec2_endpoint_url=ec2_endpoint_url
        )
    except AmibundleError as err:
        raise InstallError(
            f"registering failed: {err}; nothing was registered",
            manifest_location=location,
            hint=keep,
        ) from err
    if not wait:
        return registered
    conn = connect_ec2(settings, endpoint_url=ec2_endpoint_url, region=registered.region)
    image_id = registered.image_id
    try:
        state = wait_for_image(conn, image_id, timeout=wait_timeout, interval=poll_interval)
    except ImageFailedError as err:
        gone = _deregister_quietly(conn, image_id)
        fate = "it was deregistered" if gone else f"{image_id} is still registered"
        raise InstallError(
            f"{err}; {fate}", manifest_location=location, image_id=None if gone else image_id,
            hint=keep,
        ) from err  # fmt: skip
    except BaseException as err:
        log.warning(
            "%s (registered by this run) was still pending; the bundle is at s3://%s",
            image_id, location,
        )  # fmt: skip
        if isinstance(err, AmibundleError):
            raise InstallError(
                f"{err}; {image_id} stays registered", manifest_location=location,
                image_id=image_id,
            ) from err  # fmt: skip
        raise
    return replace(registered, state=state)


def _deregister_quietly(conn: Ec2Connection, image_id: str) -> bool:
    try:
        with ec2_errors(f"deregister {image_id}", conn):
            conn.client.deregister_image(ImageId=image_id)
    except AmibundleError as err:
        log.warning("%s", err)
        return False
    return True


def install_image(
    image: str | os.PathLike[str],
    bucket: BucketRef | str,
    *,
    metadata: BundleMetadata,
    keys: BundleKeys,
    registration: ImageRegistration,
    settings: S3Settings,
    ec2_endpoint_url: str | None = None,
    prefix: str | None = None,
    acl: str = "aws-exec-read",
    location: str | None = None,
    fix_ownership: bool = False,
    keep_partial: bool = False,
    force: bool = False,
    size_checks: bool = True,
    part_size: int = mf.DEFAULT_PART_SIZE,
    codec: Codec | None = None,
    wait: bool = False,
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
    poll_interval: float | None = None,
    progress: Progress | None = None,
    randbytes: Callable[[int], bytes] = os.urandom,
) -> InstallResult:
    """Bundles ``image`` into ``bucket`` (:func:`bundle_upload`, same
    options) and registers it (:func:`register_image`); with ``wait``, returns
    once the AMI is available."""
    started = time.monotonic()
    registration = check_record(registration, ImageRegistration, "registration")
    metadata = check_record(metadata, BundleMetadata, "metadata")
    check_registration(registration, metadata)
    upload = bundle_upload(
        image, bucket, metadata=metadata, keys=keys, settings=settings, prefix=prefix, acl=acl,
        location=location, fix_ownership=fix_ownership, keep_partial=keep_partial,
        force=force, size_checks=size_checks, part_size=part_size, codec=codec,
        progress=progress, randbytes=randbytes,
    )  # fmt: skip
    registered = register_uploaded(
        upload, registration, settings=settings, ec2_endpoint_url=ec2_endpoint_url, wait=wait,
        wait_timeout=wait_timeout, poll_interval=poll_interval,
    )  # fmt: skip
    return InstallResult(upload, registered, time.monotonic() - started)
