"""What a bundle's manifest will say about the image, validated once.

:class:`BundleMetadata` is the one record bundle-image, bundle-vol and the
S3 bundling commands take for the account, architecture, image type, kernel
and ramdisk, product codes, block-device mapping and ancestry.
:meth:`BundleMetadata.create` checks raw values (as a user types them) and
reports every problem at once; after that nothing is parsed again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from amibundle.errors import UsageError
from amibundle.format.manifest import IMAGE_TYPES, DeviceMapping
from amibundle.validate import (
    Problems,
    check_text,
    detect_architecture,
    normalize_account_id,
    parse_block_device_mapping,
    split_product_codes,
)

__all__ = ["BundleMetadata"]


@dataclass(frozen=True)
class BundleMetadata:
    """The manifest's description of the image. Build it with :meth:`create`."""

    account: str  # 12 digits
    architecture: str
    image_type: str = "machine"
    kernel_name: str | None = None
    kernel_id: str | None = None
    ramdisk_id: str | None = None
    product_codes: tuple[str, ...] = ()
    block_device_mapping: tuple[DeviceMapping, ...] = ()
    ancestry: tuple[str, ...] = ()

    @classmethod
    def create(
        cls,
        *,
        user: str,
        arch: str | None = None,
        image_type: str = "machine",
        kernel_name: str | None = None,
        kernel_id: str | None = None,
        ramdisk_id: str | None = None,
        product_codes: Iterable[str] = (),
        block_device_mapping: Iterable[str] | Mapping[str, str] = (),
        ancestry: Sequence[str] = (),
    ) -> BundleMetadata:
        """Checks every value and raises one :class:`UsageError` naming each problem.

        ``arch`` None means this machine's architecture. ``product_codes``
        items may hold several comma-separated codes; ``block_device_mapping``
        takes ``-B`` strings (``"ami=sda1,root=/dev/sda1"``) or a mapping."""
        with Problems() as problems:
            account = problems.check(normalize_account_id, user)
            codes = problems.check(split_product_codes, product_codes)
            mappings = problems.check(parse_block_device_mapping, block_device_mapping)
            problems.check(_check_image_type, image_type, kernel_name)
            for value, param in ((kernel_id, "kernel_id"), (ramdisk_id, "ramdisk_id")):
                problems.check(_check_optional_text, value, param)
            problems.check(_check_text_items, ancestry, "ancestry")
            problems.check(check_text, arch, "arch", optional=True)
        return cls(
            account=account or "",
            architecture=arch or detect_architecture(),
            image_type=image_type,
            kernel_name=kernel_name or None,
            kernel_id=kernel_id or None,
            ramdisk_id=ramdisk_id or None,
            product_codes=codes or (),
            block_device_mapping=mappings or (),
            ancestry=tuple(ancestry),
        )

    def inherit(
        self,
        *,
        kernel_id: str | None = None,
        ramdisk_id: str | None = None,
        product_codes: Iterable[str] = (),
        block_device_mapping: Mapping[str, str] | None = None,
        ancestry: Sequence[str] = (),
    ) -> tuple[BundleMetadata, tuple[str, ...]]:
        """Fills the fields this record leaves empty from another source (the
        instance metadata); returns the new record and the names of the
        fields taken."""
        taken: list[str] = []
        changes: dict[str, object] = {}
        if not self.kernel_id and kernel_id:
            changes["kernel_id"] = kernel_id
            taken.append("kernel")
        if not self.ramdisk_id and ramdisk_id:
            changes["ramdisk_id"] = ramdisk_id
            taken.append("ramdisk")
        if not self.product_codes and product_codes:
            changes["product_codes"] = split_product_codes(product_codes)
            taken.append("product codes")
        if not self.block_device_mapping and block_device_mapping:
            changes["block_device_mapping"] = parse_block_device_mapping(block_device_mapping)
            taken.append("block device mapping")
        if not self.ancestry and ancestry:
            changes["ancestry"] = tuple(ancestry)
            taken.append("ancestry")
        return replace(self, **changes), tuple(taken)  # type: ignore[arg-type]


def _check_image_type(image_type: object, kernel_name: object) -> None:
    if image_type not in IMAGE_TYPES:
        raise UsageError(
            f"{{param}} must be one of {', '.join(IMAGE_TYPES)}, not {image_type!r}",
            param="image_type",
        )
    if image_type == "kernel" and not kernel_name:
        raise UsageError("a kernel image needs {param}", param="kernel_name")
    if image_type != "kernel" and kernel_name:
        raise UsageError("{param} is only for a kernel image", param="kernel_name")


def _check_optional_text(value: object, param: str) -> None:
    if value is not None and not isinstance(value, str):
        raise UsageError(f"{{param}} must be a string, not {type(value).__name__}", param=param)


def _check_text_items(values: object, param: str) -> None:
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise UsageError("{param} must be a sequence of AMI ids", param=param)
    for value in values:
        _check_optional_text(value, param)
