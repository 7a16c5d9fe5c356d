"""Off instance store: a bundle (or an image file) streamed into an EBS
snapshot through the EBS direct APIs, with no instance and no volume.

Modules: :mod:`.client` (the boto3 EBS and EC2 clients, error wording),
:mod:`.blocks` (512 KiB blocks: cutting, parallel writing, the LINEAR
checksum), :mod:`.snapshot` (one snapshot's calls: start, complete, wait,
abandon), :mod:`.bootable` (``--make-bootable``: partition table and GRUB
around the image's file system), :mod:`.registration` (what RegisterImage
needs for an AMI of the snapshot), :mod:`.register` (registering it) and
:mod:`.convert` (the library calls; :mod:`.from_s3` for a bundle in a bucket).
"""

from __future__ import annotations

from amibundle.ebs.bootable import BootableSpec, BootDisk
from amibundle.ebs.convert import (
    SnapshotResult,
    bundle_to_snapshot,
    image_to_snapshot,
    parts_to_snapshot,
)
from amibundle.ebs.from_s3 import s3_bundle_to_snapshot
from amibundle.ebs.register import RegisteredImage, register_snapshot
from amibundle.ebs.registration import EbsImageSpec, VirtualizationType, ebs_image_spec
from amibundle.ebs.snapshot import SnapshotSpec
from amibundle.errors import EbsError

__all__ = [
    "BootDisk",
    "BootableSpec",
    "EbsError",
    "EbsImageSpec",
    "RegisteredImage",
    "SnapshotResult",
    "SnapshotSpec",
    "VirtualizationType",
    "bundle_to_snapshot",
    "ebs_image_spec",
    "image_to_snapshot",
    "parts_to_snapshot",
    "register_snapshot",
    "s3_bundle_to_snapshot",
]
