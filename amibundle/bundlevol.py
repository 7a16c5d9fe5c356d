"""``bundle_volume``: a root volume (or any tree) to an image file, then a bundle.

The steps of ``classic-cli.md`` §3.1, with the classic defects fixed:
everything the user can get wrong (account, keys, certificates, existing
outputs, patterns, sizes, the metadata service when ``inherit=True``) is
checked before the long copy starts; the image is built by one of the two
builders of :mod:`amibundle.imagebuild`; then it is bundled exactly as
:func:`amibundle.api.bundle_image` does, with manifest fields inherited from
the instance metadata service for what the caller did not give.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from amibundle import api, tools
from amibundle.builders import build_image
from amibundle.crypto import load_certificate, load_private_key
from amibundle.ec2certs import find_ec2_certificate
from amibundle.errors import OutputExistsError, UsageError
from amibundle.imagebuild import (
    BUILDERS,
    DEFAULT_FS_TYPE,
    EXT_TYPES,
    FSTAB_VARIANTS,
    PARTITION_TYPES,
    BuildResult,
    ImageSpec,
    MiB,
    choose_builder,
    new_uuid,
    source_filesystem,
)
from amibundle.imds import InstanceMetadata, MetadataClient, MetadataUnavailable
from amibundle.manifest import DEFAULT_PART_SIZE
from amibundle.pipeline import Codec
from amibundle.progress import Progress
from amibundle.validate import (
    MAX_IMAGE_SIZE,
    check_plain_name,
    normalize_account_id,
    parse_block_device_mapping,
    split_product_codes,
)
from amibundle.volume import check_patterns_exist, rules_for_volume

__all__ = ["DEFAULT_SIZE_MIB", "VolumeBundleResult", "bundle_volume", "partition_for"]

log = logging.getLogger("amibundle.bundlevol")

DEFAULT_SIZE_MIB = 10240


@dataclass(frozen=True)
class VolumeBundleResult:
    """What :func:`bundle_volume` made: the image, and the bundle unless clone-only."""

    image_path: Path
    builder: str
    fs_type: str
    partition: str
    image_size: int
    files_copied: int
    data_bytes: int
    seconds: float
    inherited: tuple[str, ...]  # manifest fields taken from the instance metadata
    bundle: api.BundleResult | None

    def to_dict(self) -> dict[str, Any]:
        fields = asdict(self)
        fields["bundle"] = None if self.bundle is None else self.bundle.to_dict()
        return {k: str(v) if isinstance(v, Path) else v for k, v in fields.items()}


def bundle_volume(
    volume: Path = Path("/"),
    *,
    cert: Path | None = None,
    private_key: Path | None = None,
    user: str | None = None,
    destination: Path = Path("/tmp"),
    prefix: str = "image",
    size_mib: int | None = DEFAULT_SIZE_MIB,
    exclude: Sequence[str] = (),
    include: Sequence[str] = (),
    all_mounts: bool = False,
    use_filter: bool = True,
    partition: str | None = None,
    script: Path | None = None,
    fstab: Path | None = None,
    generate_fstab: str | None = None,
    grub_config: Path | None = None,
    clone_only: bool = False,
    inherit: bool | None = None,
    builder: str | None = None,
    fs_type: str | None = None,
    label: str | None = None,
    bootloader: bool = True,
    keep_partial: bool = False,
    size_checks: bool = True,
    force: bool = False,
    ec2_cert: Path | None = None,
    region: str | None = None,
    arch: str | None = None,
    kernel_id: str | None = None,
    ramdisk_id: str | None = None,
    product_codes: Iterable[str] = (),
    block_device_mapping: Iterable[str] | Mapping[str, str] = (),
    part_size: int = DEFAULT_PART_SIZE,
    codec: Codec | None = None,
    progress: Progress | None = None,
    metadata: MetadataClient | None = None,
    notify: Callable[[str], None] | None = None,
) -> VolumeBundleResult:
    """Builds ``destination/prefix`` from ``volume`` and bundles it there.

    ``size_mib=None`` sizes the image from the data (plus headroom).
    ``partition`` is none/mbr/gpt, or None for the classic automatic choice.
    ``inherit`` None means "when on EC2": the metadata service is asked, and
    if it cannot be reached, bundling goes on without inheriting; True makes
    an unreachable service an error (:class:`MetadataUnavailable`). Values
    given here always win over inherited ones. ``notify`` receives one line
    per step (the CLI prints them).
    """
    started = time.monotonic()
    say = notify or (lambda line: log.info("%s", line))
    _check_volume(volume)
    name = check_plain_name(prefix, "--prefix")
    image_path = destination / name
    _check_destination(destination, name, force=force, clone_only=clone_only)
    _check_size(size_mib, size_checks=size_checks)
    check_patterns_exist(volume, exclude, "--exclude")
    check_patterns_exist(volume, include, "--include")
    if generate_fstab is not None and generate_fstab not in FSTAB_VARIANTS:
        raise UsageError(f"--generate-fstab must be one of {', '.join(FSTAB_VARIANTS)}")
    if fstab is not None and generate_fstab is not None:
        raise UsageError("--fstab cannot be combined with --generate-fstab")
    if builder is not None and builder not in BUILDERS:
        raise UsageError(f"--builder must be one of {', '.join(BUILDERS)}, not {builder!r}")
    bundling = (
        None
        if clone_only
        else _check_bundling_inputs(
            cert, private_key, user, ec2_cert, region, product_codes, block_device_mapping
        )
    )
    client = _metadata_client(inherit, clone_only, metadata, say)

    source = source_filesystem(volume)
    chosen_type = fs_type or (
        source.fs_type if source.fs_type in (*EXT_TYPES, "xfs", "btrfs") else None
    )
    spec = ImageSpec(
        path=image_path,
        size=None if size_mib is None else size_mib * MiB,
        fs_type=chosen_type or DEFAULT_FS_TYPE,
        label=label if label is not None else source.label,
        uuid=source.uuid or new_uuid(),
        partition=partition_for(partition, volume, say),
        bootloader=bootloader,
        fstab=fstab,
        generate_fstab=generate_fstab,
        grub_config=grub_config,
        script=script,
        keep_partial=keep_partial,
        force=force,
        max_size=MAX_IMAGE_SIZE if size_checks else None,
    )
    chosen = choose_builder(builder, spec.fs_type, spec.partition, spec.bootloader)
    say(f"Using the {chosen} builder: {spec.fs_type}, partitions: {spec.partition}")
    rules = rules_for_volume(
        volume,
        excludes=exclude,
        includes=include,
        all_mounts=all_mounts,
        use_filter=use_filter,
        own_paths=_own_paths(destination, name),
    )
    built = build_image(volume, rules, spec, builder=chosen, notify=say)
    say(f"Image file {built.image_path} created ({built.image_size // MiB} MiB)")
    if clone_only or bundling is None:
        say("Not bundling (--clone-only)")
        return _result(built, (), None, started)
    fields, inherited = _inherit(
        client, kernel_id, ramdisk_id, list(product_codes), block_device_mapping, say
    )
    bundle = api.bundle_image(
        built.image_path,
        cert=bundling.cert,
        private_key=bundling.private_key,
        user=bundling.user,
        destination=destination,
        prefix=name,
        ec2_cert=ec2_cert,
        region=region,
        arch=arch,
        kernel_id=fields.kernel_id,
        ramdisk_id=fields.ramdisk_id,
        product_codes=fields.product_codes,
        block_device_mapping=fields.block_device_mapping,
        ancestry=fields.ancestry,
        image_type="machine",
        size_checks=size_checks,
        part_size=part_size,
        codec=codec,
        force=force,
        progress=progress,
    )
    return _result(built, inherited, bundle, started)


def _own_paths(destination: Path, name: str) -> list[Path]:
    """What this run writes: never copied into the image (the rest of the
    destination folder is, as with the classic tool)."""
    return [
        destination / name,
        destination / f".{name}.*",  # partial image and staging tree
        destination / f"{name}.part.*",
        destination / f"{name}.manifest.xml",
        Path(tempfile.gettempdir()) / "amibundle-mnt-*",  # the loop builder's mount point
    ]


def _result(
    built: BuildResult,
    inherited: tuple[str, ...],
    bundle: api.BundleResult | None,
    started: float,
) -> VolumeBundleResult:
    return VolumeBundleResult(
        image_path=built.image_path,
        builder=built.builder,
        fs_type=built.fs_type,
        partition=built.partition,
        image_size=built.image_size,
        files_copied=built.entries,
        data_bytes=built.data_bytes,
        seconds=time.monotonic() - started,
        inherited=inherited,
        bundle=bundle,
    )


# --- checks before anything is written -------------------------------------------------


def _check_volume(volume: Path) -> None:
    if not volume.exists():
        raise UsageError(f"the volume {volume} does not exist")
    if not volume.is_dir():
        raise UsageError(f"the volume {volume} is not a folder")


def _check_destination(destination: Path, name: str, *, force: bool, clone_only: bool) -> None:
    if not destination.is_dir():
        raise UsageError(f"destination {destination} is not an existing directory")
    if not force:
        image = destination / name
        if os.path.lexists(image):
            raise OutputExistsError(
                f"the image file {image} already exists; remove it or use --force"
            )
        manifest = destination / f"{name}.manifest.xml"
        if not clone_only and manifest.exists():
            raise OutputExistsError(f"{manifest} already exists; use --force to replace the bundle")


def _check_size(size_mib: int | None, *, size_checks: bool) -> None:
    if size_mib is None:
        return
    if size_mib < 1:
        raise UsageError(f"--size must be at least 1 MiB, not {size_mib}")
    if size_checks and size_mib * MiB > MAX_IMAGE_SIZE:
        raise UsageError(
            f"--size {size_mib} MiB is larger than EC2's 10240 MiB limit for instance-store images",
            hint="--no-size-checks lifts the limit, for other clouds",
        )


@dataclass(frozen=True)
class _Bundling:
    cert: Path
    private_key: Path
    user: str


def _check_bundling_inputs(
    cert: Path | None,
    private_key: Path | None,
    user: str | None,
    ec2_cert: Path | None,
    region: str | None,
    product_codes: Iterable[str],
    block_device_mapping: Iterable[str] | Mapping[str, str],
) -> _Bundling:
    """Everything bundle_image would refuse, refused before the copy (the
    classic found a bad key only after cloning the whole volume)."""
    for value, option in ((cert, "--cert"), (private_key, "--privatekey"), (user, "--user")):
        if value is None:
            raise UsageError(f"missing mandatory option {option} (or give --clone-only)")
    assert cert is not None and private_key is not None and user is not None
    account = normalize_account_id(user)
    load_certificate(cert)
    load_private_key(private_key)
    load_certificate(find_ec2_certificate(ec2_cert, region=region).path)
    split_product_codes(list(product_codes))
    parse_block_device_mapping(block_device_mapping)
    return _Bundling(cert, private_key, account)


def partition_for(requested: str | None, volume: Path, say: Callable[[str], None]) -> str:
    """``requested``, or the classic automatic choice: the table type of the
    disk holding the volume when it is ``/``, else none."""
    if requested is not None:
        if requested not in PARTITION_TYPES:
            raise UsageError(f"--partition must be one of {', '.join(PARTITION_TYPES)}")
        return requested
    if os.path.realpath(volume) != "/":
        say("Not partitioning (the volume is not /)")
        return "none"
    chosen = _root_disk_table()
    say(f"Partition type of the root disk: {chosen}")
    return chosen


def _root_disk_table() -> str:
    """mbr/gpt when / is on a partition of a disk with that table, else none."""
    source = source_filesystem(Path("/"))
    device = source.device or ""
    name = Path(os.path.realpath(device)).name if device.startswith("/dev/") else ""
    sys_entry = Path("/sys/class/block") / name
    if not name or not (sys_entry / "partition").exists():
        return "none"  # a whole disk, device-mapper, overlay...
    disk = Path(os.path.realpath(sys_entry)).parent.name
    try:
        out = tools.run(["blkid", "-p", "-s", "PTTYPE", "-o", "value", f"/dev/{disk}"]).stdout
    except tools.ToolError:
        return "none"
    return {"dos": "mbr", "gpt": "gpt"}.get(out.strip(), "none")


# --- inheriting ----------------------------------------------------------------------------


def _metadata_client(
    inherit: bool | None,
    clone_only: bool,
    given: MetadataClient | None,
    say: Callable[[str], None],
) -> MetadataClient | None:
    """The client to inherit with, checked early; None when not inheriting."""
    if inherit is False or clone_only:
        return None  # the classic asked even with --clone-only; nothing uses it then
    client = given or MetadataClient()
    try:
        client.check()
    except MetadataUnavailable as err:
        if inherit:
            raise MetadataUnavailable(str(err), hint="not on EC2? use --no-inherit") from None
        say(
            "Note: not on EC2 (no instance metadata); not inheriting kernel, ramdisk, "
            "product codes, block device mapping or ancestry"
        )
        return None
    return client


@dataclass(frozen=True)
class _Fields:
    kernel_id: str | None
    ramdisk_id: str | None
    product_codes: list[str]
    block_device_mapping: Iterable[str] | Mapping[str, str]
    ancestry: tuple[str, ...]


def _inherit(
    client: MetadataClient | None,
    kernel_id: str | None,
    ramdisk_id: str | None,
    product_codes: list[str],
    block_device_mapping: Iterable[str] | Mapping[str, str],
    say: Callable[[str], None],
) -> tuple[_Fields, tuple[str, ...]]:
    """Fills what the caller left empty from the instance metadata (§3.9)."""
    mapping = (
        block_device_mapping
        if isinstance(block_device_mapping, Mapping)
        else list(block_device_mapping)
    )
    given = _Fields(kernel_id, ramdisk_id, product_codes, mapping, ())
    if client is None:
        return given, ()
    data: InstanceMetadata = client.inherited()
    for key in data.missing:
        say(f"Note: the instance metadata has no {key}; not inherited")
    inherited: list[str] = []
    kernel = kernel_id or _taken(data.kernel_id, "kernel", inherited)
    ramdisk = ramdisk_id or _taken(data.ramdisk_id, "ramdisk", inherited)
    codes = product_codes or list(_taken(data.product_codes, "product codes", inherited) or ())
    devices: Iterable[str] | Mapping[str, str] = mapping
    if not mapping and data.block_device_mapping:
        devices = dict(data.block_device_mapping)
        inherited.append("block device mapping")
    ancestry = data.ancestry
    if ancestry:
        inherited.append("ancestry")
    return _Fields(kernel, ramdisk, codes, devices, ancestry), tuple(inherited)


def _taken(value: Any, name: str, inherited: list[str]) -> Any:
    if value:
        inherited.append(name)
    return value
