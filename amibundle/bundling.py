"""``bundle_image``: an image file into parts and a signed manifest in a folder.

The steps, each its own function so that other part sinks (S3) reuse them:
:func:`open_image` checks and opens the image and finds its data,
:func:`~amibundle.pipeline.bundle_stream` streams it into a part sink, and
:func:`signed_manifest` writes the manifest for what was streamed.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from amibundle.crypto import BundleKey, sign, wrap_secret
from amibundle.errors import StorageError, UsageError, shorten
from amibundle.files import check_directory, name_problem, open_input, refuse_existing
from amibundle.folder import DirectoryPartSink, bundle_files, recover_abandoned
from amibundle.format import manifest as mf
from amibundle.format.manifest_writer import render, signed_sections
from amibundle.format.tar import Extent, MemberInfo, stored_size
from amibundle.identity import BundleKeys
from amibundle.metadata import BundleMetadata
from amibundle.pipeline import BundleStreamResult, Codec, bundle_stream
from amibundle.progress import Progress
from amibundle.results import JsonRecord
from amibundle.sparse import carve_zero_runs, data_extents
from amibundle.validate import (
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


@dataclass(frozen=True)
class OpenImage:
    """An image file open for bundling, with where its data is."""

    fd: int
    member: MemberInfo

    @property
    def size(self) -> int:
        return self.member.size


@contextmanager
def open_image(image: Path, name: str, *, size_checks: bool) -> Iterator[OpenImage]:
    """Opens ``image`` (following symlinks, like the classic ``tar -h``), checks
    its size and maps its data (holes and zero runs become sparse extents)."""
    try:
        fd = open_input(image, "image")
    except FileNotFoundError:
        raise UsageError(f"{{param}} {image} does not exist", param="image") from None
    except OSError as err:
        raise StorageError(f"cannot read image {image}: {err.strerror}") from None
    try:
        st = os.fstat(fd)
        check_image_size(st.st_size, size_checks=size_checks)
        yield OpenImage(fd, _member_for(fd, st, name))
    finally:
        os.close(fd)


def _member_for(fd: int, st: os.stat_result, name: str) -> MemberInfo:
    extents = carve_zero_runs(fd, data_extents(fd, st.st_size))
    dense = st.st_size == 0 or extents == [Extent(0, st.st_size)]
    return MemberInfo(
        name=name,
        size=st.st_size,
        mode=stat.S_IMODE(st.st_mode),
        mtime=int(st.st_mtime),
        extents=None if dense else extents,
    )


def signed_manifest(
    *,
    name: str,
    metadata: BundleMetadata,
    keys: BundleKeys,
    key: BundleKey,
    image_size: int,
    stream: BundleStreamResult,
    part_names: list[str],
) -> bytes:
    """The manifest file for a streamed bundle, signed with the user's key."""
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
    progress: Progress | None = None,
    randbytes: Callable[[int], bytes] = os.urandom,
) -> BundleResult:
    """Bundles an image file into ``destination``: parts and a signed manifest.

    Everything is checked before the image is read; the parts are written
    under temporary names and appear, followed by the manifest, only when the
    whole bundle is complete. ``prefix`` defaults to the image's file name.
    """
    started = time.monotonic()
    metadata = check_record(metadata, BundleMetadata, "metadata")
    keys = check_record(keys, BundleKeys, "keys")
    codec = check_optional_record(codec, Codec, "codec") or Codec()
    progress = check_progress(progress)
    image_path = as_path(image, "image")
    folder = as_path(destination, "destination")
    name = check_plain_name(prefix if prefix is not None else image_path.name, "prefix")
    check_positive(part_size, "part_size")
    check_directory(folder, "destination")
    # The longest name a bundle writes is its manifest's.
    if problem := name_problem(folder, f"{name}.manifest.xml"):
        manifest = shorten(f"{name}.manifest.xml")
        raise UsageError(f"{{param}} is too long: {manifest} {problem}", param="prefix")
    recover_abandoned(folder)
    manifest_name = f"{name}.manifest.xml"
    existing = [folder / n for n in [manifest_name, *bundle_files(folder, name)]]
    refuse_existing(existing, force=force)
    key = BundleKey.generate(randbytes)
    with open_image(image_path, name, size_checks=size_checks) as source:
        sink = DirectoryPartSink(folder, name, overwrite=force)
        try:
            stream = bundle_stream(
                source.fd, source.member, key, sink, part_size=part_size, codec=codec,
                progress=progress,
            )  # fmt: skip
            part_names = mf.part_filenames(name, len(stream.parts))
            manifest_bytes = signed_manifest(
                name=name, metadata=metadata, keys=keys, key=key, image_size=source.size,
                stream=stream, part_names=part_names,
            )  # fmt: skip
            # Parts, then the manifest: the bundle appears whole or not at all.
            part_paths = sink.commit(part_names, manifest=(manifest_name, manifest_bytes))
        except BaseException:
            sink.abort()
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
    )
