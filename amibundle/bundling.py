"""``bundle_image``: an image into parts and a signed manifest in a folder.

The steps, each its own function so that other part sinks (S3) reuse them:
:func:`open_image` checks and opens the image, whatever its format
(:mod:`amibundle.sources`), and finds its data,
:func:`~amibundle.pipeline.bundle_stream` streams it into a part sink, and
:func:`signed_manifest` writes the manifest for what was streamed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from amibundle import interrupts
from amibundle.compression import Compression
from amibundle.crypto import BundleKey, sign, wrap_secret
from amibundle.errors import UsageError, shorten
from amibundle.files import check_directory, name_problem, refuse_existing
from amibundle.folder import DirectoryPartSink, bundle_files, recover_abandoned
from amibundle.format import manifest as mf
from amibundle.format.manifest_writer import render, signed_sections
from amibundle.format.tar import MemberInfo, stored_size
from amibundle.identity import BundleKeys
from amibundle.metadata import BundleMetadata
from amibundle.pipeline import BundleStreamResult, Codec, bundle_stream
from amibundle.progress import NullProgress, Progress
from amibundle.results import JsonRecord
from amibundle.sources import STDIN, ImageFormat, SizeOrigin, SourceInfo, describe, open_source
from amibundle.sparse import ExtentReader
from amibundle.validate import (
    MAX_IMAGE_SIZE,
    as_enum,
    as_path,
    check_image_size,
    check_optional_record,
    check_plain_name,
    check_positive,
    check_progress,
    check_record,
)

__all__ = ["BundleResult", "OpenImage", "bundle_image", "open_image", "signed_manifest"]


@dataclass(frozen=True)
class BundleResult(JsonRecord):
    """What :func:`bundle_image` made."""

    manifest_path: Path
    part_paths: tuple[Path, ...]
    name: str
    image_size: int
    data_size: int  # image bytes actually read (holes and zero runs skipped)
    tar_size: int
    bundled_size: int
    digest: str
    compression: str
    ec2_certificate: Path
    seconds: float
    image_format: str = "raw"  # what the image was read as: raw, gzip, ..., qcow2, ...
    # The key and certificate made for this bundle (BundleKeys.generate_for_bundle).
    generated_private_key: Path | None = None
    generated_certificate: Path | None = None


@dataclass(frozen=True)
class OpenImage:
    """An image open for bundling: what reads its data, and the tar member
    (size and data extents) it becomes."""

    reader: int | ExtentReader  # a file descriptor (raw files) or a reader of extents
    member: MemberInfo
    source: SourceInfo

    @property
    def size(self) -> int:
        return self.member.size

    @property
    def fd(self) -> int | ExtentReader:
        """The old name of :attr:`reader` (sinks written before other formats came in)."""
        return self.reader


@contextmanager
def open_image(
    image: Path | str,
    name: str,
    *,
    size_checks: bool,
    image_format: ImageFormat | str | None = None,
    image_size: int | None = None,
    progress: Progress | None = None,
    notify: Callable[[str], None] | None = None,
) -> Iterator[OpenImage]:
    """Opens ``image`` (a path, following symlinks like the classic ``tar -h``,
    or ``"-"`` for standard input), recognises its format, checks its size
    and maps its data (holes and zero runs become sparse extents; a first
    pass over a compressed image finds them, reported as ``Stage.SCAN``).
    ``notify`` gets one line on how an image that is not a raw file is read."""
    kind = None if image_format is None else as_enum(ImageFormat, image_format, "image_format")
    if image_size is not None:
        check_positive(image_size, "image_size")
    source = open_source(image, image_format=kind, image_size=image_size)
    try:
        info = source.info
        if info.size is not None:
            check_image_size(info.size, size_checks=size_checks)
        if notify is not None and (
            info.format is not ImageFormat.RAW or info.size_origin is not SizeOrigin.FILE
        ):
            notify(describe(info))
        layout = source.layout(progress or NullProgress(), MAX_IMAGE_SIZE if size_checks else None)
        check_image_size(layout.size, size_checks=size_checks)
        member = MemberInfo(
            name=name,
            size=layout.size,
            mode=info.mode,
            mtime=info.mtime,
            extents=layout.extents,
        )
        yield OpenImage(source.reader, member, info)
    finally:
        source.close()


def signed_manifest(
    *,
    name: str,
    metadata: BundleMetadata,
    keys: BundleKeys,
    key: BundleKey,
    image_size: int,
    stream: BundleStreamResult,
    part_names: list[str],
    compression: Compression = Compression.GZIP,
) -> bytes:
    """The manifest file for a streamed bundle, signed with the user's key.
    A zstd bundle says so in its bundler element (EC2 cannot read it; the
    classic bundler name is kept for the gzip bundles EC2 reads)."""
    unsigned = mf.Manifest(
        name=name,
        user=metadata.account,
        digest=stream.tar_sha1,
        size=image_size,
        bundled_size=stream.bundled_size,
        ec2_encrypted_key=wrap_secret(keys.ec2_public, key.key),
        user_encrypted_key=wrap_secret(keys.user_public, key.key),
        ec2_encrypted_iv=wrap_secret(keys.ec2_public, key.iv),
        user_encrypted_iv=wrap_secret(keys.user_public, key.iv),
        parts=tuple(mf.PartEntry(r.index, part_names[r.index], r.sha1) for r in stream.parts),
        architecture=metadata.architecture,
        block_device_mapping=metadata.block_device_mapping,
        kernel_id=metadata.kernel_id,
        ramdisk_id=metadata.ramdisk_id,
        product_codes=metadata.product_codes,
        image_type=metadata.image_type,
        kernel_name=metadata.kernel_name,
        ancestry=metadata.ancestry,
        bundler=mf.ZSTD_BUNDLER if compression is Compression.ZSTD else mf.CLASSIC_BUNDLER,
    )
    return render(replace(unsigned, signature=sign(keys.signer, signed_sections(unsigned))))


def bundle_image(
    image: str | os.PathLike[str],
    *,
    metadata: BundleMetadata,
    keys: BundleKeys,
    destination: str | os.PathLike[str] = "/tmp",
    prefix: str | None = None,
    size_checks: bool = True,
    part_size: int = mf.DEFAULT_PART_SIZE,
    codec: Codec | None = None,
    force: bool = False,
    image_format: ImageFormat | str | None = None,
    image_size: int | None = None,
    progress: Progress | None = None,
    notify: Callable[[str], None] | None = None,
    randbytes: Callable[[int], bytes] = os.urandom,
) -> BundleResult:
    """Bundles an image into ``destination``: parts and a signed manifest.

    ``image`` is a raw image file, a gzip/bzip2/xz/zstd-compressed one, a
    qcow2/VMDK/VHD/VHDX disk image (read through qemu-img), or ``"-"`` for
    standard input (its size in ``image_size``); the format is recognised by
    content (``image_format`` forces one). Everything is checked before the
    image is read; the parts are written under temporary names and appear,
    followed by the manifest, only when the whole bundle is complete. Keys
    made by :meth:`BundleKeys.generate_for_bundle` are published with them,
    before the manifest. ``prefix`` defaults to the image's file name (``image``
    for standard input).
    """
    started = time.monotonic()
    metadata = check_record(metadata, BundleMetadata, "metadata")
    keys = check_record(keys, BundleKeys, "keys")
    codec = check_optional_record(codec, Codec, "codec") or Codec()
    progress = check_progress(progress)
    image_path = as_path(image, "image")
    folder = as_path(destination, "destination")
    default_name = "image" if str(image_path) == STDIN else image_path.name
    name = check_plain_name(prefix if prefix is not None else default_name, "prefix")
    check_positive(part_size, "part_size")
    check_directory(folder, "destination")
    # The longest name a bundle writes is its manifest's.
    manifest_name = f"{name}.manifest.xml"
    if problem := name_problem(folder, manifest_name):
        raise UsageError(
            f"{{param}} is too long: {shorten(manifest_name)} {problem}", param="prefix"
        )
    recover_abandoned(folder)
    generated = keys.generated_files()
    existing = [folder / n for n in [manifest_name, *bundle_files(folder, name)]]
    refuse_existing([*existing, *(path for path, _data in generated)], force=force)
    key = BundleKey.generate(randbytes)
    with open_image(
        image_path, name, size_checks=size_checks, image_format=image_format,
        image_size=image_size, progress=progress, notify=notify,
    ) as source:  # fmt: skip
        sink: DirectoryPartSink | None = None
        written: tuple[Path, ...] = ()
        try:
            with interrupts.held():  # the work folder is never made without being known here
                sink = DirectoryPartSink(folder, name, overwrite=force)
            stream = bundle_stream(
                source.reader, source.member, key, sink, part_size=part_size, codec=codec,
                progress=progress,
            )  # fmt: skip
            part_names = mf.part_filenames(name, len(stream.parts))
            manifest_bytes = signed_manifest(
                name=name, metadata=metadata, keys=keys, key=key, image_size=source.size,
                stream=stream, part_names=part_names, compression=codec.compression,
            )  # fmt: skip
            here = all(path.parent.resolve() == folder.resolve() for path, _data in generated)
            if not here:  # a key made for another folder: written there, before the manifest
                written = keys.write_generated(force=force)
            # Parts, the key made for the bundle, then the manifest: the bundle
            # appears whole or not at all.
            part_paths = sink.commit(
                part_names,
                manifest=(manifest_name, manifest_bytes),
                beside=[(path.name, data) for path, data in generated] if here else [],
            )
        except BaseException:
            if sink is not None:
                sink.abort()
            for path in written:
                path.unlink(missing_ok=True)
            raise
    manifest_path = folder / manifest_name
    return BundleResult(
        manifest_path=manifest_path,
        part_paths=tuple(part_paths),
        name=name,
        image_size=source.size,
        data_size=stored_size(source.member),
        tar_size=stream.tar_size,
        bundled_size=stream.bundled_size,
        digest=stream.tar_sha1,
        compression=codec.compression.value,
        ec2_certificate=keys.ec2_certificate,
        seconds=time.monotonic() - started,
        image_format=source.source.format.value,
        generated_private_key=keys.generated.private_key if keys.generated else None,
        generated_certificate=keys.generated.certificate if keys.generated else None,
    )
