"""What EC2 checks in the image calls before it looks at any resource: names, ids, enums, tags
and block device mappings, as the EC2 API reference documents them.

Each refusal is an `EC2ClientError` (moto's class, so moto renders AWS's XML error body) with
the code AWS documents for it:

* InvalidAMIName.Malformed — names are 3-128 letters, digits and ( ) [ ] space . / - ' @ _
  (the RegisterImage parameter reference);
* InvalidAMIID.Malformed, InvalidKernelId.Malformed, InvalidRamDiskId.Malformed,
  InvalidSnapshotID.Malformed — ids not of the form ami-/aki-/ari-/snap- + 8 or 17 hex digits;
* InvalidParameterValue — an architecture, virtualization type (hvm | paravirtual), boot mode
  (legacy-bios | uefi | uefi-preferred), sriovNetSupport (simple), volume type or tag outside
  what the API allows, and any unknown DescribeImages filter ("The filter '…' is invalid");
* InvalidBlockDeviceMapping — a mapping without a device name, with no or several targets,
  or a virtual name that is not ephemeralN;
* MissingParameter — a required parameter that is absent;
* TagLimitExceeded — more than 50 tags.

Where the reference names no code (a description over 255 characters), the stand-in uses
InvalidParameterValue, the code EC2 uses for "a value outside what the parameter allows".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from moto.ec2.exceptions import EC2ClientError

__all__ = [
    "ARCHITECTURES",
    "BOOT_MODES",
    "DEFAULT_VOLUME_TYPE",
    "EbsTarget",
    "ImageState",
    "RequestedMapping",
    "Registration",
    "RootDeviceType",
    "check_image_id",
    "check_tags",
    "parse_registration",
    "refuse",
]

ARCHITECTURES = frozenset({"i386", "x86_64", "arm64", "x86_64_mac", "arm64_mac"})
VIRTUALIZATION_TYPES = frozenset({"hvm", "paravirtual"})
BOOT_MODES = frozenset({"legacy-bios", "uefi", "uefi-preferred"})
VOLUME_TYPES = frozenset({"standard", "io1", "io2", "gp2", "gp3", "sc1", "st1"})
# What the stand-in reports when a mapping names no volume type (AWS uses the account default).
DEFAULT_VOLUME_TYPE = "gp2"
MAX_TAGS = 50
MAX_DESCRIPTION = 255

_AMI_NAME = re.compile(r"[A-Za-z0-9()\[\] ./\-'@_]{3,128}")
_HEX_ID = r"-(?:[0-9a-f]{8}|[0-9a-f]{17})"
_IMAGE_ID = re.compile("ami" + _HEX_ID)
_KERNEL_ID = re.compile("aki" + _HEX_ID)
_RAMDISK_ID = re.compile("ari" + _HEX_ID)
_SNAPSHOT_ID = re.compile("snap" + _HEX_ID)
_EPHEMERAL = re.compile(r"ephemeral[0-9]{1,2}")


class RootDeviceType(str, Enum):
    EBS = "ebs"
    INSTANCE_STORE = "instance-store"


class ImageState(str, Enum):
    PENDING = "pending"
    AVAILABLE = "available"
    FAILED = "failed"


@dataclass(frozen=True)
class EbsTarget:
    """The `Ebs` part of one requested block device mapping."""

    snapshot_id: str | None
    volume_size: int | None
    volume_type: str | None
    delete_on_termination: bool | None
    iops: int | None
    throughput: int | None


@dataclass(frozen=True)
class RequestedMapping:
    """One requested block device mapping: exactly one of `ebs`, `virtual_name`, `no_device`."""

    device_name: str
    ebs: EbsTarget | None = None
    virtual_name: str | None = None
    no_device: bool = False


@dataclass(frozen=True)
class Registration:
    """A RegisterImage request whose parameters passed every parameter-level check."""

    name: str
    description: str | None
    image_location: str | None
    architecture: str | None
    virtualization_type: str
    kernel_id: str | None
    ramdisk_id: str | None
    root_device_name: str | None
    mappings: tuple[RequestedMapping, ...]
    boot_mode: str | None
    ena_support: bool | None
    sriov_net_support: str | None
    tags: tuple[tuple[str, str], ...]

    def mapping_for(self, device_name: str | None) -> RequestedMapping | None:
        return next((m for m in self.mappings if m.device_name == device_name), None)


def refuse(code: str, message: str) -> EC2ClientError:
    """An EC2 error answer (HTTP 400, AWS's <Response><Errors><Error> body)."""
    return EC2ClientError(code, message)


def _malformed_id(kind: str, code: str, value: str) -> EC2ClientError:
    return refuse(code, f'Invalid id: "{value}" (expecting "{kind}-...")')


def check_image_id(value: str) -> None:
    """An image id as DescribeImages and DeregisterImage take it: ami-, or the aki-/ari-
    of a kernel or ramdisk image."""
    if not any(kind.fullmatch(value) for kind in (_IMAGE_ID, _KERNEL_ID, _RAMDISK_ID)):
        raise _malformed_id("ami", "InvalidAMIID.Malformed", value)


def check_snapshot_id(value: str) -> None:
    if not _SNAPSHOT_ID.fullmatch(value):
        raise _malformed_id("snap", "InvalidSnapshotID.Malformed", value)


def _check_choice(parameter: str, value: str | None, allowed: Iterable[str]) -> None:
    if value is not None and value not in allowed:
        raise refuse(
            "InvalidParameterValue",
            f"Value ({value}) for parameter {parameter} is invalid. "
            f"Valid values: {', '.join(sorted(allowed))}",
        )


def check_tags(tags: Iterable[tuple[str, str]], *, existing: int = 0) -> None:
    """EC2 tag rules: keys 1-128 characters and not aws:…, values up to 256, 50 per resource."""
    pairs = list(tags)
    for key, value in pairs:
        if not 1 <= len(key) <= 128:
            raise refuse("InvalidParameterValue", f"Tag key '{key}' must be 1-128 characters")
        if key.lower().startswith("aws:"):
            raise refuse(
                "InvalidParameterValue",
                "Tag keys starting with 'aws:' are reserved for internal use",
            )
        if len(value) > 256:
            raise refuse("InvalidParameterValue", f"Tag value for '{key}' exceeds 256 characters")
    if existing + len({key for key, _ in pairs}) > MAX_TAGS:
        raise refuse("TagLimitExceeded", f"The maximum number of tags ({MAX_TAGS}) was exceeded")


def _tag_specifications(specifications: list[dict[str, Any]]) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    for specification in specifications:
        resource_type = specification.get("ResourceType")
        if resource_type != "image":
            # RegisterImage: "To tag the AMI, the value for ResourceType must be image. If you
            # specify another value for ResourceType, the request fails."
            raise refuse(
                "InvalidParameterValue",
                f"'{resource_type}' is not a valid taggable resource type for this operation",
            )
        for tag in specification.get("Tags") or []:
            pairs.append((str(tag.get("Key", "")), str(tag.get("Value", ""))))
    check_tags(pairs)
    return tuple(pairs)


def _ebs_target(raw: dict[str, Any]) -> EbsTarget:
    snapshot_id = raw.get("SnapshotId")
    if snapshot_id is not None:
        check_snapshot_id(snapshot_id)
    volume_type = raw.get("VolumeType")
    _check_choice("volumeType", volume_type, VOLUME_TYPES)
    size = raw.get("VolumeSize")
    if snapshot_id is None and size is None:
        raise refuse(
            "InvalidBlockDeviceMapping", "An EBS mapping needs a snapshot id or a volume size"
        )
    return EbsTarget(
        snapshot_id=snapshot_id,
        volume_size=None if size is None else int(size),
        volume_type=volume_type,
        delete_on_termination=raw.get("DeleteOnTermination"),
        iops=raw.get("Iops"),
        throughput=raw.get("Throughput"),
    )


def _mapping(raw: dict[str, Any]) -> RequestedMapping:
    device = raw.get("DeviceName")
    if not device:
        raise refuse("InvalidBlockDeviceMapping", "A block device mapping needs a device name")
    targets = [key for key in ("Ebs", "VirtualName", "NoDevice") if raw.get(key) is not None]
    if len(targets) != 1:
        raise refuse(
            "InvalidBlockDeviceMapping",
            f"The mapping for {device} must name exactly one of Ebs, VirtualName, NoDevice",
        )
    if targets == ["Ebs"]:
        return RequestedMapping(device, ebs=_ebs_target(raw["Ebs"]))
    if targets == ["VirtualName"]:
        virtual = str(raw["VirtualName"])
        if not _EPHEMERAL.fullmatch(virtual):
            raise refuse(
                "InvalidBlockDeviceMapping",
                f"Invalid virtual name {virtual} for {device} (expecting ephemeralN)",
            )
        return RequestedMapping(device, virtual_name=virtual)
    return RequestedMapping(device, no_device=True)


def _mappings(raw: list[dict[str, Any]]) -> tuple[RequestedMapping, ...]:
    mappings = tuple(_mapping(item) for item in raw)
    devices = [m.device_name for m in mappings]
    duplicates = sorted({d for d in devices if devices.count(d) > 1})
    if duplicates:
        raise refuse(
            "InvalidBlockDeviceMapping", f"The device {duplicates[0]} is mapped more than once"
        )
    return mappings


def _check_name(name: str | None) -> str:
    if name is None:
        raise refuse("MissingParameter", "The request must contain the parameter name")
    if not _AMI_NAME.fullmatch(name):
        raise refuse(
            "InvalidAMIName.Malformed",
            "AMI names must be between 3 and 128 characters long, and may contain letters, "
            "numbers, '(', ')', '[', ']', ' ', '.', '/', '-', ''', '@' and '_'",
        )
    return name


def _check_kernel_ramdisk(kernel_id: str | None, ramdisk_id: str | None) -> None:
    if kernel_id is not None and not _KERNEL_ID.fullmatch(kernel_id):
        raise _malformed_id("aki", "InvalidKernelId.Malformed", kernel_id)
    if ramdisk_id is not None and not _RAMDISK_ID.fullmatch(ramdisk_id):
        raise _malformed_id("ari", "InvalidRamDiskId.Malformed", ramdisk_id)


def parse_registration(param: Callable[[str], Any]) -> Registration:
    """Read and check a RegisterImage request; `param(name)` gives a parsed parameter or None."""
    name = _check_name(param("Name"))
    description = param("Description")
    if description is not None and len(description) > MAX_DESCRIPTION:
        raise refuse("InvalidParameterValue", "The description must be at most 255 characters")
    architecture = param("Architecture")
    _check_choice("architecture", architecture, ARCHITECTURES)
    # RegisterImage: "VirtualizationType … Default: paravirtual".
    virtualization = param("VirtualizationType") or "paravirtual"
    _check_choice("virtualizationType", virtualization, VIRTUALIZATION_TYPES)
    boot_mode = param("BootMode")
    _check_choice("bootMode", boot_mode, BOOT_MODES)
    sriov = param("SriovNetSupport")
    _check_choice("sriovNetSupport", sriov, {"simple"})
    kernel_id, ramdisk_id = param("KernelId"), param("RamdiskId")
    _check_kernel_ramdisk(kernel_id, ramdisk_id)
    location = param("ImageLocation")
    if location is not None and not location:
        raise refuse("InvalidParameterValue", "ImageLocation must not be empty")
    return Registration(
        name=name,
        description=description,
        image_location=location,
        architecture=architecture,
        virtualization_type=virtualization,
        kernel_id=kernel_id,
        ramdisk_id=ramdisk_id,
        root_device_name=param("RootDeviceName"),
        mappings=_mappings(param("BlockDeviceMappings") or []),
        boot_mode=boot_mode,
        ena_support=param("EnaSupport"),
        sriov_net_support=sriov,
        tags=_tag_specifications(param("TagSpecifications") or []),
    )
