"""Bundling in tests: the library's records built from the test identities."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import amibundle
from amibundle.bundling import BundleResult
from amibundle.identity import BundleKeys
from amibundle.metadata import BundleMetadata
from tests.support.common import Identity

__all__ = ["bundle_for", "keys_for", "metadata_for"]


def keys_for(
    identity: Identity, *, ec2_cert: Path | None = None, region: str | None = None
) -> BundleKeys:
    return BundleKeys.load(
        cert=identity.cert, private_key=identity.key, ec2_cert=ec2_cert, region=region
    )


def metadata_for(
    *,
    user: str = "123456789012",
    arch: str | None = "x86_64",
    kernel_id: str | None = None,
    ramdisk_id: str | None = None,
    product_codes: Iterable[str] = (),
    block_device_mapping: Iterable[str] | Mapping[str, str] = (),
    image_type: str = "machine",
    kernel_name: str | None = None,
    ancestry: Sequence[str] = (),
) -> BundleMetadata:
    return BundleMetadata.create(
        user=user,
        arch=arch,
        kernel_id=kernel_id,
        ramdisk_id=ramdisk_id,
        product_codes=product_codes,
        block_device_mapping=block_device_mapping,
        image_type=image_type,
        kernel_name=kernel_name,
        ancestry=ancestry,
    )


_METADATA_FIELDS = frozenset(
    {
        "user",
        "arch",
        "kernel_id",
        "ramdisk_id",
        "product_codes",
        "block_device_mapping",
        "image_type",
        "kernel_name",
        "ancestry",
    }
)


def bundle_for(
    image: str | os.PathLike[str],
    identity: Identity,
    *,
    ec2_cert: Path | None = None,
    region: str | None = None,
    **options: Any,
) -> BundleResult:
    """``amibundle.bundle_image`` for ``identity``: manifest fields (``user``,
    ``arch``, ...) go into the metadata record, everything else to bundle_image."""
    fields = {k: options.pop(k) for k in list(options) if k in _METADATA_FIELDS}
    result: BundleResult = amibundle.bundle_image(
        image,
        metadata=metadata_for(**fields),
        keys=keys_for(identity, ec2_cert=ec2_cert, region=region),
        **options,
    )
    return result
