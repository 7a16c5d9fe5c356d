"""The image record the strict EC2 stand-in keeps, and how its state moves.

An image keeps what AWS keeps and DescribeImages answers it in the API's shape
(`to_api`, the keys of botocore's `Image` shape). Its state is driven by an `ImageFate`: it
answers `pending` to the first `pending_describes` DescribeImages calls that look at it, then
its final state (`available`, or `failed` with a StateReason). Counting looks instead of
seconds keeps `register --wait` tests deterministic and fast.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from moto.ec2.models.core import TaggedEC2Resource

from .ec2_rules import ImageState, Registration, RootDeviceType

__all__ = [
    "DEFAULT_FAILURE",
    "ImageFate",
    "StateReason",
    "StrictImage",
    "is_known_filter",
    "matches_any",
]


@dataclass(frozen=True)
class StateReason:
    code: str
    message: str


# What a failed image reports unless a test names another reason.
DEFAULT_FAILURE = StateReason("Server.InternalError", "Internal error while registering the image")


@dataclass(frozen=True)
class ImageFate:
    """`pending` for the first `pending_describes` looks, then `final_state` (with `reason`
    when failed). `pending_describes=0`: the final state from the first look on."""

    pending_describes: int = 1
    final_state: ImageState = ImageState.AVAILABLE
    reason: StateReason | None = None

    def __post_init__(self) -> None:
        if self.pending_describes < 0:
            raise ValueError("pending_describes must be >= 0")
        if self.final_state is ImageState.PENDING:
            raise ValueError("the final state must be available or failed")
        if self.final_state is ImageState.FAILED and self.reason is None:
            object.__setattr__(self, "reason", DEFAULT_FAILURE)


def _wildcard(pattern: str) -> re.Pattern[str]:
    """An EC2 filter value: * any run, ? one character, backslash escapes the next one."""
    out: list[str] = []
    escaped = False
    for char in pattern:
        if escaped:
            out.append(re.escape(char))
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        else:
            out.append(re.escape(char))
    return re.compile("".join(out), re.DOTALL)


def matches_any(values: Iterable[str], patterns: Iterable[str]) -> bool:
    compiled = [_wildcard(p) for p in patterns]
    return any(c.fullmatch(v) for c in compiled for v in values)


# The DescribeImages filters the stand-in answers (besides tag:<key>, tag-key, tag-value).
SIMPLE_FILTERS = frozenset(
    {
        "architecture",
        "boot-mode",
        "creation-date",
        "description",
        "ena-support",
        "hypervisor",
        "image-id",
        "image-type",
        "is-public",
        "kernel-id",
        "manifest-location",
        "name",
        "owner-alias",
        "owner-id",
        "platform-details",
        "ramdisk-id",
        "root-device-name",
        "root-device-type",
        "sriov-net-support",
        "state",
        "state-reason-code",
        "state-reason-message",
        "usage-operation",
        "virtualization-type",
    }
)
# block-device-mapping.<field> -> the key in a mapping's Ebs (None: the device name)
MAPPING_FILTERS: dict[str, str | None] = {
    "device-name": None,
    "snapshot-id": "SnapshotId",
    "volume-size": "VolumeSize",
    "volume-type": "VolumeType",
    "delete-on-termination": "DeleteOnTermination",
    "encrypted": "Encrypted",
}


def is_known_filter(name: str) -> bool:
    """Whether DescribeImages knows the filter (AWS refuses others: InvalidParameterValue)."""
    if name.startswith("tag:") or name in ("tag-key", "tag-value") or name in SIMPLE_FILTERS:
        return True
    prefix = "block-device-mapping."
    return name.startswith(prefix) and name[len(prefix) :] in MAPPING_FILTERS


def _flag(value: bool | None) -> str | None:
    return None if value is None else str(value).lower()


class StrictImage(TaggedEC2Resource):
    """One registered image in moto's `backend.amis` (so CreateTags and moto's id checks see
    it), with everything RegisterImage was given."""

    def __init__(
        self,
        backend: Any,
        *,
        image_id: str,
        owner_id: str,
        registration: Registration,
        root_device_type: RootDeviceType,
        image_location: str,
        architecture: str,
        root_device_name: str,
        mappings: list[dict[str, Any]],
        fate: ImageFate,
        created: datetime,
        image_type: str = "machine",
    ) -> None:
        self.ec2_backend = backend
        self.id = image_id
        self.image_type = image_type
        self.owner_id = owner_id
        self.owner_alias: str | None = None
        self.registration = registration
        self.root_device_type = root_device_type
        self.image_location = image_location
        self.architecture = architecture
        self.root_device_name = root_device_name
        self.mappings = mappings
        self.created = created
        self.launch_permissions: list[dict[str, str]] = []  # what moto's helpers look at
        self._fate = fate
        self._looks = 0
        self._lock = threading.Lock()

    # -- state ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.registration.name

    @property
    def is_public(self) -> bool:
        return False

    @property
    def state(self) -> ImageState:
        with self._lock:
            fate, looks = self._fate, self._looks
        if fate.pending_describes and looks <= fate.pending_describes:
            return ImageState.PENDING
        return fate.final_state

    @property
    def state_reason(self) -> StateReason | None:
        return self._fate.reason if self.state is ImageState.FAILED else None

    def look(self) -> None:
        """One DescribeImages call looked at this image."""
        with self._lock:
            self._looks += 1

    def set_fate(self, fate: ImageFate) -> None:
        """From now on: pending for `fate.pending_describes` looks, then the final state."""
        with self._lock:
            self._fate = fate
            self._looks = 0

    @property
    def snapshot_ids(self) -> set[str]:
        return {m["Ebs"]["SnapshotId"] for m in self.mappings if "SnapshotId" in m.get("Ebs", {})}

    def tags(self) -> dict[str, str]:
        return dict(self.ec2_backend.tags.get(self.id, {}))

    # -- answers -------------------------------------------------------------------------

    def to_api(self) -> dict[str, Any]:
        """The image in botocore's `Image` shape, as DescribeImages answers it."""
        reg = self.registration
        api: dict[str, Any] = {
            "ImageId": self.id,
            "ImageLocation": self.image_location,
            "State": self.state.value,
            "OwnerId": self.owner_id,
            "CreationDate": self.created,
            "Public": False,
            "Architecture": self.architecture,
            "ImageType": self.image_type,
            "Name": reg.name,
            "RootDeviceName": self.root_device_name,
            "RootDeviceType": self.root_device_type.value,
            "VirtualizationType": reg.virtualization_type,
            "Hypervisor": "xen",
            "PlatformDetails": "Linux/UNIX",
            "UsageOperation": "RunInstances",
            "BlockDeviceMappings": self.mappings,
        }
        optional = {
            "Description": reg.description,
            "KernelId": reg.kernel_id,
            "RamdiskId": reg.ramdisk_id,
            "BootMode": reg.boot_mode,
            "EnaSupport": reg.ena_support,
            "SriovNetSupport": reg.sriov_net_support,
        }
        api.update({key: value for key, value in optional.items() if value is not None})
        reason = self.state_reason
        if reason is not None:
            api["StateReason"] = {"Code": reason.code, "Message": reason.message}
        tags = self.tags()
        if tags:
            api["Tags"] = [{"Key": key, "Value": value} for key, value in tags.items()]
        return api

    def filter_values(self, name: str) -> list[str] | None:
        """The image's values for a DescribeImages filter; None for a filter AWS does not know
        (or the stand-in does not implement)."""
        tags = self.tags()
        if name.startswith("tag:"):
            key = name[len("tag:") :]
            return [tags[key]] if key in tags else []
        if name == "tag-key":
            return list(tags)
        if name == "tag-value":
            return list(tags.values())
        if name.startswith("block-device-mapping."):
            return self._mapping_values(name[len("block-device-mapping.") :])
        if name not in SIMPLE_FILTERS:
            return None
        value = self._simple_values()[name]
        return [] if value is None else [value]

    def _simple_values(self) -> dict[str, str | None]:
        reg = self.registration
        reason = self.state_reason
        return {
            "architecture": self.architecture,
            "boot-mode": reg.boot_mode,
            "creation-date": self.created.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "description": reg.description,
            "ena-support": _flag(reg.ena_support),
            "hypervisor": "xen",
            "image-id": self.id,
            "image-type": self.image_type,
            "is-public": "false",
            "kernel-id": reg.kernel_id,
            "manifest-location": self.image_location,
            "name": reg.name,
            "owner-alias": self.owner_alias,
            "owner-id": self.owner_id,
            "platform-details": "Linux/UNIX",
            "ramdisk-id": reg.ramdisk_id,
            "root-device-name": self.root_device_name,
            "root-device-type": self.root_device_type.value,
            "sriov-net-support": reg.sriov_net_support,
            "state": self.state.value,
            "state-reason-code": None if reason is None else reason.code,
            "state-reason-message": None if reason is None else reason.message,
            "usage-operation": "RunInstances",
            "virtualization-type": reg.virtualization_type,
        }

    def _mapping_values(self, field: str) -> list[str] | None:
        if field not in MAPPING_FILTERS:
            return None
        key = MAPPING_FILTERS[field]
        if key is None:
            return [m["DeviceName"] for m in self.mappings]
        found = [m["Ebs"][key] for m in self.mappings if key in m.get("Ebs", {})]
        return [str(v).lower() if isinstance(v, bool) else str(v) for v in found]
