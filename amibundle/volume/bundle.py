"""``bundle_volume``: a root volume (or any tree) to an image file, then a bundle.

The steps of ``classic-cli.md`` §3.1, with the classic defects fixed:
everything the user can get wrong (account, keys, certificates, existing
outputs, patterns, sizes, the metadata service when ``inherit=True``) is
checked before the long copy starts; the image is built by one of the two
builders (:mod:`amibundle.volume.build`); then it is bundled exactly as
:func:`amibundle.bundling.bundle_image` does, with manifest fields inherited
from the instance metadata service for what the caller did not give.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from amibundle import tools
from amibundle.bundling import BundleResult, bundle_image
from amibundle.errors import ImageSizeError, MetadataUnavailable, ToolError, UsageError
from amibundle.files import WORK_PREFIX, check_directory, open_input, refuse_existing
from amibundle.format.manifest import DEFAULT_PART_SIZE
from amibundle.identity import BundleKeys
from amibundle.metadata import BundleMetadata
from amibundle.pipeline import Codec
from amibundle.progress import Progress
from amibundle.results import JsonRecord
from amibundle.validate import (
    MAX_IMAGE_SIZE,
    as_enum,
    as_optional_path,
    as_path,
    check_optional_record,
    check_plain_name,
    check_progress,
    check_record,
)
from amibundle.volume.boot import BootMode, firmware_mode, prepare_boot
from amibundle.volume.build import build_image
from amibundle.volume.imds import MetadataClient
from amibundle.volume.plan import (
    DEFAULT_FS_TYPE,
    LOOP_TYPES,
    Builder,
    BuildResult,
    FstabVariant,
    ImageSpec,
    MiB,
    PartitionTable,
    choose_builder,
    new_uuid,
    source_filesystem,
)
from amibundle.volume.rules import check_patterns_exist, rules_for_volume

if TYPE_CHECKING:  # imported when used: bundle-vol without --bucket never loads botocore
    from amibundle.uploading import BundleUploadResult, UploadTarget

__all__ = ["DEFAULT_SIZE_MIB", "VolumeBundleResult", "bundle_volume", "partition_for"]

log = logging.getLogger("amibundle.volume")

DEFAULT_SIZE_MIB = 10240


@dataclass(frozen=True)
class VolumeBundleResult(JsonRecord):
    """What :func:`bundle_volume` made: the image, and the bundle unless clone-only."""

    image_path: Path
    builder: Builder
    fs_type: str
    partition: PartitionTable
    boot_mode: BootMode  # what a registration sends as EC2's BootMode
    image_size: int
    files_copied: int
    data_bytes: int
    seconds: float
    inherited: tuple[str, ...]  # manifest fields taken from the instance metadata
    bundle: BundleResult | BundleUploadResult | None  # the latter with ``upload``


def bundle_volume(
    volume: str | os.PathLike[str] = "/",
    *,
    metadata: BundleMetadata | None,
    keys: BundleKeys | None,
    destination: str | os.PathLike[str] = "/tmp",
    prefix: str = "image",
    size_mib: int | None = DEFAULT_SIZE_MIB,
    exclude: Sequence[str] = (),
    include: Sequence[str] = (),
    all_mounts: bool = False,
    use_filter: bool = True,
    partition: PartitionTable | str | None = None,
    script: str | os.PathLike[str] | None = None,
    fstab: str | os.PathLike[str] | None = None,
    generate_fstab: FstabVariant | str | None = None,
    grub_config: str | os.PathLike[str] | None = None,
    inherit: bool | None = None,
    builder: Builder | str | None = None,
    fs_type: str | None = None,
    label: str | None = None,
    bootloader: bool = True,
    boot_mode: BootMode | str = BootMode.LEGACY_BIOS,
    keep_partial: bool = False,
    size_checks: bool = True,
    force: bool = False,
    part_size: int = DEFAULT_PART_SIZE,
    codec: Codec | None = None,
    progress: Progress | None = None,
    metadata_service: MetadataClient | None = None,
    notify: Callable[[str], None] | None = None,
    upload: UploadTarget | None = None,
) -> VolumeBundleResult:
    """Builds ``destination/prefix`` from ``volume`` and bundles it there.

    ``metadata`` and ``keys`` say what the manifest says and who it is for;
    both None makes only the image (the classic ``--clone-only``).
    ``size_mib=None`` sizes the image from the data (plus headroom).
    ``partition`` None is the classic automatic choice (gpt for
    ``boot_mode="uefi"``). Partitioned images get GRUB 2 for ``boot_mode``
    (written into the image file, no loop device needed) unless
    ``bootloader`` is False; the volume must then have a kernel in ``/boot``.
    ``inherit`` None means "when on EC2": the metadata service is asked, and
    if it cannot be reached, bundling goes on without inheriting; True makes
    an unreachable service an error (:class:`MetadataUnavailable`). Values
    in ``metadata`` always win over inherited ones. ``notify`` receives one
    line per step (the CLI prints them).
    With ``upload``, the bundle streams straight to that bucket
    (:func:`amibundle.uploading.bundle_upload`, ``keep_partial`` keeping
    what was sent after a failure) instead of into ``destination``; the
    image file is still built there.
    """
    started = time.monotonic()
    say = notify or (lambda line: log.info("%s", line))
    metadata = check_optional_record(metadata, BundleMetadata, "metadata")
    keys = check_optional_record(keys, BundleKeys, "keys")
    _check_what_to_bundle(metadata, keys, upload)
    progress = check_progress(progress)
    source_path = _checked_volume(volume)
    folder = as_path(destination, "destination")
    check_directory(folder, "destination")
    name = check_plain_name(prefix, "prefix")
    refuse_existing(_outputs(folder, name, keys, upload), force=force)
    _check_size(size_mib, size_checks=size_checks)
    check_patterns_exist(source_path, exclude, "exclude")
    check_patterns_exist(source_path, include, "include")
    client = _metadata_client(inherit, metadata is None, metadata_service, say)
    spec, chosen = _image_spec(
        source_path, folder / name, say, size_mib=size_mib, partition=partition, fstab=fstab,
        generate_fstab=generate_fstab, grub_config=grub_config, script=script, builder=builder,
        fs_type=fs_type, label=label, bootloader=bootloader, boot_mode=boot_mode,
        keep_partial=keep_partial, force=force, size_checks=size_checks,
    )  # fmt: skip
    say(f"Using the {chosen.value} builder: {spec.fs_type}, partitions: {spec.partition.value}")
    rules = rules_for_volume(
        source_path,
        excludes=exclude,
        includes=include,
        all_mounts=all_mounts,
        use_filter=use_filter,
        own_paths=_own_paths(folder, name),
    )
    built = build_image(source_path, rules, spec, builder=chosen, notify=say)
    say(f"Image file {built.image_path} created ({built.image_size // MiB} MiB)")
    if metadata is None or keys is None:
        say("Not bundling (image only)")
        return _result(built, (), None, started)
    inherited: tuple[str, ...] = ()
    if client is not None:
        metadata, inherited = _inherit(client, metadata, say)
    bundle: BundleResult | BundleUploadResult
    if upload is not None:
        from amibundle.uploading import bundle_upload

        bundle = bundle_upload(
            built.image_path, upload.bucket, metadata=metadata, keys=keys,
            settings=upload.settings, prefix=name, acl=upload.acl, location=upload.location,
            fix_ownership=upload.fix_ownership, keep_partial=keep_partial, force=force,
            size_checks=size_checks, part_size=part_size, codec=codec, progress=progress,
        )  # fmt: skip
    else:
        bundle = bundle_image(
            built.image_path, metadata=metadata, keys=keys, destination=folder, prefix=name,
            size_checks=size_checks, part_size=part_size, codec=codec, force=force,
            progress=progress,
        )  # fmt: skip
    return _result(built, inherited, bundle, started)


def _image_spec(
    source_path: Path,
    image_path: Path,
    say: Callable[[str], None],
    *,
    size_mib: int | None,
    partition: PartitionTable | str | None,
    fstab: str | os.PathLike[str] | None,
    generate_fstab: FstabVariant | str | None,
    grub_config: str | os.PathLike[str] | None,
    script: str | os.PathLike[str] | None,
    builder: Builder | str | None,
    fs_type: str | None,
    label: str | None,
    bootloader: bool,
    boot_mode: BootMode | str,
    keep_partial: bool,
    force: bool,
    size_checks: bool,
) -> tuple[ImageSpec, Builder]:
    """What image to build from ``source_path`` and with which builder: the
    caller's choices checked, the rest taken from the volume (its file system
    type, label, UUID, the root disk's partition table). GRUB, its tools and a
    kernel in the volume are checked now, not after the copy."""
    fstab_path, fstab_variant = _fstab_choice(fstab, generate_fstab)
    requested = None if builder is None else as_enum(Builder, builder, "builder")
    table = None if partition is None else as_enum(PartitionTable, partition, "partition")
    mode = firmware_mode(boot_mode, "boot_mode")
    grub_path = _input_file(grub_config, "grub_config")
    script_path = _input_file(script, "script")
    source = source_filesystem(source_path)
    chosen_table = partition_for(table, source_path, say, boot_mode=mode)
    chosen_type = fs_type or _default_fs_type(source.fs_type)
    chosen = choose_builder(requested, chosen_type)
    uuid = source.uuid or new_uuid()
    boot = (
        None
        if chosen_table is PartitionTable.NONE
        else prepare_boot(source_path, mode, uuid=uuid, fs_type=chosen_type, bootloader=bootloader)
    )
    spec = ImageSpec(
        path=image_path,
        size=None if size_mib is None else size_mib * MiB,
        fs_type=chosen_type,
        label=label if label is not None else source.label,
        uuid=uuid,
        partition=chosen_table,
        fstab=fstab_path,
        generate_fstab=fstab_variant,
        grub_config=grub_path,
        script=script_path,
        keep_partial=keep_partial,
        force=force,
        max_size=MAX_IMAGE_SIZE if size_checks else None,
        boot=boot,
    )
    return spec, chosen


def _check_what_to_bundle(
    metadata: BundleMetadata | None, keys: BundleKeys | None, upload: UploadTarget | None
) -> None:
    """Both metadata and keys (a bundle) or neither (the image only, which is
    never uploaded)."""
    if (metadata is None) != (keys is None):
        raise UsageError("give both metadata and keys to bundle, or neither to make only the image")
    if upload is not None:
        from amibundle.uploading import UploadTarget

        check_record(upload, UploadTarget, "upload")
        if metadata is None:
            raise UsageError("{param} needs metadata and keys: an image only is not uploaded",
                             param="upload")  # fmt: skip


def _outputs(
    folder: Path, name: str, keys: BundleKeys | None, upload: UploadTarget | None
) -> list[Path]:
    """The files this run will publish in ``folder``: the image, and the
    manifest and generated keys of a bundle written there."""
    if keys is None or upload is not None:
        return [folder / name]
    generated = keys.generated.paths if keys.generated is not None else ()
    return [folder / name, folder / f"{name}.manifest.xml", *generated]


def _own_paths(destination: Path, name: str) -> list[Path]:
    """What this run writes: never copied into the image (the rest of the
    destination folder is, as with the classic tool)."""
    return [
        destination / name,
        destination / f".{name}.*",  # the staging tree
        destination / f"{WORK_PREFIX}*",  # the partial image, work folders
        destination / f"{name}.part.*",
        destination / f"{name}.manifest.xml",
        Path(tempfile.gettempdir()) / "amibundle-mnt-*",  # the loop builder's mount point
    ]


def _result(
    built: BuildResult,
    inherited: tuple[str, ...],
    bundle: BundleResult | BundleUploadResult | None,
    started: float,
) -> VolumeBundleResult:
    return VolumeBundleResult(
        image_path=built.image_path,
        builder=built.builder,
        fs_type=built.fs_type,
        partition=built.partition,
        boot_mode=built.boot_mode,
        image_size=built.image_size,
        files_copied=built.entries,
        data_bytes=built.data_bytes,
        seconds=time.monotonic() - started,
        inherited=inherited,
        bundle=bundle,
    )


# --- checks before anything is written -------------------------------------------------


def _checked_volume(value: str | os.PathLike[str]) -> Path:
    volume = as_path(value, "volume")
    if not volume.exists():
        raise UsageError(f"{{param}} {volume} does not exist", param="volume")
    if not volume.is_dir():
        raise UsageError(f"{{param}} {volume} is not a folder", param="volume")
    return volume


def _fstab_choice(
    fstab: str | os.PathLike[str] | None, generate: FstabVariant | str | None
) -> tuple[Path | None, FstabVariant | None]:
    """The fstab to install: a file, a generated variant, or neither (the volume's)."""
    path = _input_file(fstab, "fstab")
    variant = None if generate is None else as_enum(FstabVariant, generate, "generate_fstab")
    if path is not None and variant is not None:
        raise UsageError("{param} cannot be combined with a generated fstab", param="fstab")
    return path, variant


def _input_file(value: str | os.PathLike[str] | None, param: str) -> Path | None:
    """An optional file the user gives (fstab, GRUB menu, script), checked now
    to be a regular file, before the long copy."""
    path = as_optional_path(value, param)
    if path is not None:
        try:
            os.close(open_input(path, param.replace("_", " ")))
        except FileNotFoundError:
            raise UsageError(f"{{param}} {path} does not exist", param=param) from None
        except OSError as err:
            raise UsageError(
                f"{{param}} {path} cannot be read: {err.strerror}", param=param
            ) from None
    return path


def _default_fs_type(volume_type: str | None) -> str:
    """The volume's own file system type when a builder can make it, else the classic ext3."""
    return volume_type if volume_type in LOOP_TYPES else DEFAULT_FS_TYPE


def _check_size(size_mib: int | None, *, size_checks: bool) -> None:
    if size_mib is None:
        return
    if isinstance(size_mib, bool) or not isinstance(size_mib, int) or size_mib < 1:
        raise UsageError(
            f"{{param}} must be at least 1 MiB (or auto), not {size_mib!r}", param="size_mib"
        )
    if size_checks and size_mib * MiB > MAX_IMAGE_SIZE:
        raise ImageSizeError(
            f"an image of {size_mib} MiB is larger than EC2's 10240 MiB limit for "
            "instance-store images",
            hint="{off} lifts the limit, for other clouds",
            param="size_checks",
        )


def partition_for(
    requested: PartitionTable | None,
    volume: Path,
    say: Callable[[str], None],
    *,
    boot_mode: BootMode = BootMode.LEGACY_BIOS,
) -> PartitionTable:
    """``requested``, or the classic automatic choice: the table type of the
    disk holding the volume when it is ``/``, else none. UEFI needs GPT (its
    EFI system partition)."""
    uefi = boot_mode is BootMode.UEFI
    if uefi and requested is not None and requested is not PartitionTable.GPT:
        raise UsageError(
            "{param} uefi needs a GPT image (an EFI system partition), "
            f"not a partition table of type {requested.value}",
            param="boot_mode",
        )
    if requested is not None:
        return requested
    if uefi:
        say("Partition type: gpt (boot mode uefi)")
        return PartitionTable.GPT
    if os.path.realpath(volume) != "/":
        say("Not partitioning (the volume is not /)")
        return PartitionTable.NONE
    chosen = _root_disk_table()
    say(f"Partition type of the root disk: {chosen.value}")
    return chosen


def _root_disk_table() -> PartitionTable:
    """mbr/gpt when / is on a partition of a disk with that table, else none."""
    source = source_filesystem(Path("/"))
    device = source.device or ""
    name = Path(os.path.realpath(device)).name if device.startswith("/dev/") else ""
    sys_entry = Path("/sys/class/block") / name
    if not name or not (sys_entry / "partition").exists():
        return PartitionTable.NONE  # a whole disk, device-mapper, overlay...
    disk = Path(os.path.realpath(sys_entry)).parent.name
    try:
        out = tools.run(["blkid", "-p", "-s", "PTTYPE", "-o", "value", f"/dev/{disk}"]).stdout
    except ToolError:
        return PartitionTable.NONE
    tables = {"dos": PartitionTable.MBR, "gpt": PartitionTable.GPT}
    return tables.get(out.strip(), PartitionTable.NONE)


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
            raise MetadataUnavailable(
                str(err), hint="not on EC2? use {off}", param="inherit"
            ) from None
        say(
            "note: not on EC2 (no instance metadata); not inheriting kernel, ramdisk, "
            "product codes, block device mapping or ancestry"
        )
        return None
    return client


def _inherit(
    client: MetadataClient, metadata: BundleMetadata, say: Callable[[str], None]
) -> tuple[BundleMetadata, tuple[str, ...]]:
    """Fills what ``metadata`` leaves empty from the instance metadata (§3.9)."""
    data = client.inherited()
    for key in data.missing:
        say(f"note: the instance metadata has no {key}; not inherited")
    return metadata.inherit(
        kernel_id=data.kernel_id,
        ramdisk_id=data.ramdisk_id,
        product_codes=data.product_codes,
        block_device_mapping=dict(data.block_device_mapping),
        ancestry=data.ancestry,
    )
