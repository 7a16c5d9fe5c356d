"""What RegisterImage needs to make an EBS-backed AMI of a snapshot written by
to-ebs: :class:`EbsImageSpec`, made by :func:`ebs_image_spec`.

* A partitionless image (the classic instance-store kind) registers as
  ``paravirtual`` with the manifest's kernel and ramdisk, as AWS's manual
  conversion does; its root device is the manifest's ``root`` mapping
  (default ``/dev/sda1``). Paravirtual AMIs run only on previous-generation
  instance types.
* A ``--make-bootable`` disk registers as ``hvm`` with its boot mode and ENA
  support (Nitro instances need ENA; the image's kernel must have the
  driver), root device ``/dev/xvda`` unless the manifest names one.

The block-device mapping is the snapshot as the root volume (deleted with the
instance, gp3) plus the manifest's ``ephemeralN`` mappings; ``ami``, ``root``
and ``swap`` have no RegisterImage form and are dropped. Registering is then
one call: ``ec2.register_image(**spec.request(name))``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from amibundle.ec2.registration import BlockDeviceMapping, VirtualizationType, device_path
from amibundle.format.manifest import DeviceMapping
from amibundle.results import JsonRecord
from amibundle.volume.boot import BootMode

__all__ = [
    "ARCHITECTURES",
    "EbsImageSpec",
    "VirtualizationType",
    "ebs_image_spec",
]

ARCHITECTURES = ("i386", "x86_64", "arm64")
ROOT_VOLUME_TYPE = "gp3"


@dataclass(frozen=True)
class EbsImageSpec(JsonRecord):
    """The RegisterImage parameters an EBS-backed AMI of the snapshot needs
    (everything but its name, description and tags)."""

    architecture: str | None
    virtualization_type: VirtualizationType
    root_device_name: str
    block_device_mappings: tuple[BlockDeviceMapping, ...]
    kernel_id: str | None = None
    ramdisk_id: str | None = None
    boot_mode: BootMode | None = None
    ena_support: bool = False

    def request(self, name: str, *, description: str | None = None) -> dict[str, Any]:
        """``RegisterImage``'s keyword arguments for an AMI called ``name``."""
        request: dict[str, Any] = {
            "Name": name,
            "VirtualizationType": self.virtualization_type.value,
            "RootDeviceName": self.root_device_name,
            "BlockDeviceMappings": [m.to_api() for m in self.block_device_mappings],
        }
        optional = {
            "Description": description,
            "Architecture": self.architecture,
            "KernelId": self.kernel_id,
            "RamdiskId": self.ramdisk_id,
            "BootMode": self.boot_mode.value if self.boot_mode else None,
            "EnaSupport": True if self.ena_support else None,
        }
        request.update({key: value for key, value in optional.items() if value is not None})
        return request

    def aws_command(self, region: str, name: str = "NAME") -> list[str]:
        """The ``aws ec2 register-image`` command line (as words) of :meth:`request`."""
        mappings = [m.to_api() for m in self.block_device_mappings]
        words = ["aws", "ec2", "register-image", "--region", region, "--name", name]
        options = {
            "--virtualization-type": self.virtualization_type.value,
            "--root-device-name": self.root_device_name,
            "--block-device-mappings": json.dumps(mappings, separators=(",", ":")),
            "--architecture": self.architecture,
            "--kernel-id": self.kernel_id,
            "--ramdisk-id": self.ramdisk_id,
            "--boot-mode": self.boot_mode.value if self.boot_mode else None,
        }
        for flag, value in options.items():
            if value:
                words += [flag, value]
        if self.ena_support:
            words.append("--ena-support")
        return words


def _is_ephemeral(virtual: str) -> bool:
    number = virtual.removeprefix("ephemeral")
    return virtual.startswith("ephemeral") and number.isdigit() and int(number) <= 23


def ebs_image_spec(
    snapshot_id: str,
    volume_gib: int,
    *,
    architecture: str | None,
    bootable: BootMode | None,
    block_device_mapping: Iterable[DeviceMapping] = (),
    kernel_id: str | None = None,
    ramdisk_id: str | None = None,
) -> EbsImageSpec:
    """What registering ``snapshot_id`` as an AMI takes. ``bootable`` is the
    boot mode of a ``--make-bootable`` disk (hvm), None for a partitionless
    image (paravirtual with ``kernel_id`` and ``ramdisk_id``)."""
    mappings = tuple(block_device_mapping)
    named_root = next((device_path(m.device) for m in mappings if m.virtual == "root"), None)
    hvm = bootable is not None
    root = named_root or ("/dev/xvda" if hvm else "/dev/sda1")
    devices = [
        BlockDeviceMapping(
            root,
            snapshot_id=snapshot_id,
            volume_size=volume_gib,
            volume_type=ROOT_VOLUME_TYPE,
            delete_on_termination=True,
        )
    ]
    devices += [
        BlockDeviceMapping(device_path(m.device), virtual_name=m.virtual)
        for m in mappings
        if _is_ephemeral(m.virtual) and device_path(m.device) != root
    ]
    return EbsImageSpec(
        architecture=architecture if architecture in ARCHITECTURES else None,
        virtualization_type=VirtualizationType.HVM if hvm else VirtualizationType.PARAVIRTUAL,
        root_device_name=root,
        block_device_mappings=tuple(devices),
        kernel_id=None if hvm else kernel_id,
        ramdisk_id=None if hvm or kernel_id is None else ramdisk_id,
        boot_mode=bootable,
        ena_support=hvm,
    )
