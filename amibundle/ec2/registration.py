"""What a RegisterImage request says, validated once: :class:`ImageRegistration`.

:meth:`ImageRegistration.create` checks raw values as a user types them
(AMI name rules, ids, enums, block-device mappings in the AWS CLI's short
form, tags) and reports every problem at once. :meth:`ImageRegistration.request`
then fills what was left out from the bundle's manifest, as EC2 itself
would: architecture, kernel and ramdisk, root device, and the manifest's
block-device mappings translated to the API's form. The virtualization type
is ``paravirtual`` when a kernel is named, else ``hvm``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from amibundle.errors import UsageError
from amibundle.format.manifest import Manifest
from amibundle.validate import Problems, as_enum
from amibundle.volume.boot import BootMode

__all__ = [
    "ARCHITECTURES",
    "BlockDeviceMapping",
    "BootMode",
    "ImageRegistration",
    "VirtualizationType",
    "device_path",
    "parse_mapping",
]

ARCHITECTURES = ("i386", "x86_64", "arm64", "x86_64_mac", "arm64_mac")
VOLUME_TYPES = ("standard", "io1", "io2", "gp2", "gp3", "sc1", "st1")
MAX_DESCRIPTION = 255
MAX_TAGS = 50
# RegisterImage: 3-128 letters, digits, ( ) [ ] space . / - ' @ _
_AMI_NAME = re.compile(r"[A-Za-z0-9()\[\] ./\-'@_]{3,128}")
_HEX_ID = r"-(?:[0-9a-f]{8}|[0-9a-f]{17})"
_KERNEL = re.compile("aki" + _HEX_ID)
_RAMDISK = re.compile("ari" + _HEX_ID)
_SNAPSHOT = re.compile("snap" + _HEX_ID)
_EPHEMERAL = re.compile(r"ephemeral[0-9]{1,2}")
_DEVICE = re.compile(r"(/dev/)?[a-z][a-z0-9]{1,15}")


class VirtualizationType(str, Enum):
    HVM = "hvm"
    PARAVIRTUAL = "paravirtual"


@dataclass(frozen=True)
class BlockDeviceMapping:
    """One RegisterImage block-device mapping: an instance-store volume
    (``virtual_name`` ephemeralN), no device, or an EBS volume."""

    device_name: str
    virtual_name: str | None = None
    no_device: bool = False
    snapshot_id: str | None = None
    volume_size: int | None = None  # GiB
    delete_on_termination: bool | None = None
    volume_type: str | None = None
    iops: int | None = None

    def to_api(self) -> dict[str, Any]:
        if self.virtual_name is not None:
            return {"DeviceName": self.device_name, "VirtualName": self.virtual_name}
        if self.no_device:
            return {"DeviceName": self.device_name, "NoDevice": ""}
        ebs: dict[str, Any] = {}
        for key, value in (
            ("SnapshotId", self.snapshot_id),
            ("VolumeSize", self.volume_size),
            ("DeleteOnTermination", self.delete_on_termination),
            ("VolumeType", self.volume_type),
            ("Iops", self.iops),
        ):
            if value is not None:
                ebs[key] = value
        return {"DeviceName": self.device_name, "Ebs": ebs}


def device_path(name: str) -> str:
    """``sdb`` -> ``/dev/sdb`` (manifests and users often leave /dev/ out)."""
    return name if name.startswith("/dev/") else f"/dev/{name}"


def _bad_mapping(value: str, why: str) -> UsageError:
    return UsageError(f"{{param}} {value!r}: {why}", param="block_device_mappings")


def parse_mapping(value: str) -> BlockDeviceMapping:
    """The AWS CLI's short form: ``DEVICE=ephemeralN``, ``DEVICE=none`` or
    ``DEVICE=[snap-id]:[size GiB]:[delete-on-termination]:[type]:[iops]``."""
    device, equals, target = value.partition("=")
    device, target = device.strip(), target.strip()
    if not equals or not device or not target:
        raise _bad_mapping(value, "expected DEVICE=ephemeralN, DEVICE=none or DEVICE=SNAP:SIZE")
    if not _DEVICE.fullmatch(device):
        raise _bad_mapping(value, f"{device!r} is not a device name like /dev/sdb")
    device = device_path(device)
    if _EPHEMERAL.fullmatch(target):
        return BlockDeviceMapping(device, virtual_name=target)
    if target.lower() == "none":
        return BlockDeviceMapping(device, no_device=True)
    return _ebs_mapping(value, device, target)


def _ebs_mapping(value: str, device: str, target: str) -> BlockDeviceMapping:
    fields = target.split(":")
    if len(fields) > 5:
        raise _bad_mapping(value, "too many ':' fields (SNAP:SIZE:DELETE:TYPE:IOPS)")
    snapshot, size, delete, kind, iops = [*fields, "", "", "", "", ""][:5]
    if snapshot and not _SNAPSHOT.fullmatch(snapshot):
        raise _bad_mapping(value, f"{snapshot!r} is not a snapshot id (snap-...)")
    if size and not (size.isdigit() and 1 <= int(size) <= 65536):
        raise _bad_mapping(value, f"volume size {size!r} is not 1 to 65536 GiB")
    if not snapshot and not size:
        raise _bad_mapping(value, "an EBS volume needs a snapshot id or a size")
    if delete and delete.lower() not in ("true", "false"):
        raise _bad_mapping(value, f"delete-on-termination {delete!r} is not true or false")
    if kind and kind not in VOLUME_TYPES:
        raise _bad_mapping(value, f"volume type {kind!r} is not one of {', '.join(VOLUME_TYPES)}")
    if iops and not iops.isdigit():
        raise _bad_mapping(value, f"iops {iops!r} is not a number")
    return BlockDeviceMapping(
        device,
        snapshot_id=snapshot or None,
        volume_size=int(size) if size else None,
        delete_on_termination=None if not delete else delete.lower() == "true",
        volume_type=kind or None,
        iops=int(iops) if iops else None,
    )


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not _AMI_NAME.fullmatch(name):
        raise UsageError(
            f"{{param}} {name!r} is not a valid AMI name: use 3 to 128 letters, digits, "
            "spaces and ( ) [ ] . / - ' @ _",
            param="name",
        )
    return name


def _check_description(description: object) -> None:
    if description is None:
        return
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise UsageError(f"{{param}} must be text of at most {MAX_DESCRIPTION} characters",
                         param="description")  # fmt: skip


def _check_id(value: object, pattern: re.Pattern[str], kind: str, param: str) -> None:
    if value is not None and not (isinstance(value, str) and pattern.fullmatch(value)):
        raise UsageError(f"{{param}} {value!r} is not a {kind} id ({kind}-...)", param=param)


def _check_architecture(value: object) -> None:
    if value is not None and value not in ARCHITECTURES:
        raise UsageError(
            f"{{param}} must be one of {', '.join(ARCHITECTURES)}, not {value!r}",
            param="architecture",
        )


def _check_root(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _DEVICE.fullmatch(value):
        raise UsageError(f"{{param}} {value!r} is not a device name like /dev/sda1",
                         param="root_device_name")  # fmt: skip
    return device_path(value)


def _mappings(values: Iterable[str | BlockDeviceMapping]) -> tuple[BlockDeviceMapping, ...]:
    if isinstance(values, str):
        values = [values]
    mappings = tuple(v if isinstance(v, BlockDeviceMapping) else parse_mapping(v) for v in values)
    devices = [m.device_name for m in mappings]
    twice = sorted({d for d in devices if devices.count(d) > 1})
    if twice:
        raise UsageError(f"{{param}} map {twice[0]} more than once", param="block_device_mappings")
    return mappings


def _tags(tags: Mapping[str, str] | Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    pairs = tuple(tags.items() if isinstance(tags, Mapping) else tags)
    if len(pairs) > MAX_TAGS:
        raise UsageError(f"{{param}}: at most {MAX_TAGS} tags", param="tags")
    for key, value in pairs:
        if not isinstance(key, str) or not 1 <= len(key) <= 128:
            raise UsageError(f"{{param}}: tag key {key!r} must be 1 to 128 characters",
                             param="tags")  # fmt: skip
        if key.lower().startswith("aws:"):
            raise UsageError(f"{{param}}: tag key {key!r}: 'aws:' keys are AWS's", param="tags")
        if not isinstance(value, str) or len(value) > 256:
            raise UsageError(f"{{param}}: the value of tag {key!r} must be at most 256 characters",
                             param="tags")  # fmt: skip
    return pairs


@dataclass(frozen=True)
class ImageRegistration:
    """What to register; fields left None come from the manifest (or EC2).
    Build it with :meth:`create`."""

    name: str
    description: str | None = None
    architecture: str | None = None
    virtualization_type: VirtualizationType | None = None
    kernel_id: str | None = None
    ramdisk_id: str | None = None
    root_device_name: str | None = None
    block_device_mappings: tuple[BlockDeviceMapping, ...] = ()
    boot_mode: BootMode | None = None
    ena_support: bool = False
    sriov_net_support: bool = False
    tags: tuple[tuple[str, str], ...] = ()

    @classmethod
    def create(
        cls,
        *,
        name: str,
        description: str | None = None,
        architecture: str | None = None,
        virtualization_type: VirtualizationType | str | None = None,
        kernel_id: str | None = None,
        ramdisk_id: str | None = None,
        root_device_name: str | None = None,
        block_device_mappings: Iterable[str | BlockDeviceMapping] = (),
        boot_mode: BootMode | str | None = None,
        ena_support: bool = False,
        sriov_net_support: bool = False,
        tags: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    ) -> ImageRegistration:
        """Checks every value; one :class:`UsageError` names each problem.
        ``block_device_mappings`` take the short form of :func:`parse_mapping`."""
        with Problems() as problems:
            problems.check(_check_name, name)
            problems.check(_check_description, description)
            problems.check(_check_architecture, architecture)
            virtualization = None
            if virtualization_type is not None:
                virtualization = problems.check(
                    as_enum, VirtualizationType, virtualization_type, "virtualization_type"
                )
            problems.check(_check_id, kernel_id, _KERNEL, "aki", "kernel_id")
            problems.check(_check_id, ramdisk_id, _RAMDISK, "ari", "ramdisk_id")
            root = problems.check(_check_root, root_device_name)
            mappings = problems.check(_mappings, block_device_mappings)
            mode = None
            if boot_mode is not None:
                mode = problems.check(as_enum, BootMode, boot_mode, "boot_mode")
            pairs = problems.check(_tags, tags)
        return cls(
            name=name,
            description=description,
            architecture=architecture,
            virtualization_type=virtualization,
            kernel_id=kernel_id,
            ramdisk_id=ramdisk_id,
            root_device_name=root,
            block_device_mappings=mappings or (),
            boot_mode=mode,
            ena_support=bool(ena_support),
            sriov_net_support=bool(sriov_net_support),
            tags=pairs or (),
        )

    def request(self, location: str, manifest: Manifest) -> dict[str, Any]:
        """The RegisterImage parameters for the bundle at ``location``
        (``bucket/key``) whose manifest is ``manifest``."""
        kernel = self.kernel_id or manifest.kernel_id
        virtualization = self.virtualization_type or (
            VirtualizationType.PARAVIRTUAL if kernel else VirtualizationType.HVM
        )
        if virtualization is VirtualizationType.HVM:
            for value, param in ((self.kernel_id, "kernel_id"), (self.ramdisk_id, "ramdisk_id")):
                if value:
                    raise UsageError(
                        "an hvm image boots its own kernel: {param} is for paravirtual images",
                        param=param,
                    )
            kernel = None  # the manifest's kernel is for paravirtual launches only
        ramdisk = (self.ramdisk_id or manifest.ramdisk_id) if kernel else None
        self._check_hvm_only(virtualization)
        request: dict[str, Any] = {
            "Name": self.name,
            "ImageLocation": location,
            "VirtualizationType": virtualization.value,
        }
        architecture = self.architecture or manifest.architecture
        optional = {
            "Description": self.description,
            "Architecture": architecture if architecture in ARCHITECTURES else None,
            "KernelId": kernel,
            "RamdiskId": ramdisk,
            "RootDeviceName": self.root_device_name or _manifest_root(manifest),
            "BootMode": self.boot_mode.value if self.boot_mode else None,
            "EnaSupport": True if self.ena_support else None,
            "SriovNetSupport": "simple" if self.sriov_net_support else None,
        }
        request.update({key: value for key, value in optional.items() if value is not None})
        mappings = self._mappings_with(manifest)
        if mappings:
            request["BlockDeviceMappings"] = mappings
        if self.tags:
            request["TagSpecifications"] = [
                {"ResourceType": "image", "Tags": [{"Key": k, "Value": v} for k, v in self.tags]}
            ]
        return request

    def _check_hvm_only(self, virtualization: VirtualizationType) -> None:
        if virtualization is VirtualizationType.HVM:
            return
        for on, param in (
            (self.boot_mode is not None, "boot_mode"),
            (self.ena_support, "ena_support"),
            (self.sriov_net_support, "sriov_net_support"),
        ):
            if on:
                raise UsageError(
                    "{param} applies to hvm images only; this one is paravirtual "
                    "(it names a kernel)",
                    param=param,
                )

    def _mappings_with(self, manifest: Manifest) -> list[dict[str, Any]]:
        """The manifest's instance-store mappings in the API's form, then
        ours; ours win for the same device. ``ami``/``root`` name the root
        device (RootDeviceName), ``swap`` has no API form and is dropped."""
        given = {m.device_name for m in self.block_device_mappings}
        from_manifest = [
            {"DeviceName": device_path(m.device), "VirtualName": m.virtual}
            for m in manifest.block_device_mapping
            if _EPHEMERAL.fullmatch(m.virtual) and device_path(m.device) not in given
        ]
        return from_manifest + [m.to_api() for m in self.block_device_mappings]


def _manifest_root(manifest: Manifest) -> str | None:
    for mapping in manifest.block_device_mapping:
        if mapping.virtual == "root":
            return device_path(mapping.device)
    return None
