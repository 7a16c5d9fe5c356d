"""``bundle_to_snapshot`` and ``image_to_snapshot``: a bundle, or an image
file, streamed into an EBS snapshot with no instance and no volume.

The stream (a bundle's)::

    parts (SHA-1 each) -> AES-CBC -> inflate -> tar (SHA-1, bomb limit)   pipeline.unbundle_stream
      -> BlockCutter (512 KiB blocks, all-zero ones dropped, shifted on a bootable disk)
        -> BlockWriter (jobs threads: SHA-256, PutSnapshotBlock, retries)

An image file is read through :func:`amibundle.bundling.open_image`'s checks
and extents, so its holes are never read. The snapshot is completed only
when everything checked out (parts, the image digest, every block); after
any failure, Ctrl-C included, it is never completed: it is deleted (see
:class:`~amibundle.ebs.snapshot.SnapshotSession`).

:func:`parts_to_snapshot` takes any :class:`~amibundle.parts.PartSource`,
so a bundle read from S3 plugs in as a folder's does.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from botocore.exceptions import BotoCoreError, ClientError

from amibundle.bundling import OpenImage, open_image
from amibundle.crypto import BundleKey
from amibundle.ebs.blocks import BlockCutter, BlockWriter, RetryPolicy, WrittenBlocks
from amibundle.ebs.bootable import (
    BootableSpec,
    BootDisk,
    DiskPlan,
    RootFs,
    boot_region_blocks,
    build_boot_region,
    plan_disk,
    probe_root,
    work_folder,
)
from amibundle.ebs.client import EbsConnection, connect, is_retryable
from amibundle.ebs.registration import EbsImageSpec, ebs_image_spec
from amibundle.ebs.snapshot import GIB, SnapshotSession, SnapshotSpec, volume_gib_for
from amibundle.errors import UsageError
from amibundle.format.manifest import DeviceMapping, Manifest
from amibundle.format.tar import Extent, Member
from amibundle.parts import PartReader, PartSource
from amibundle.pipeline import MemberWriter, unbundle_stream
from amibundle.progress import NullProgress, Progress, Stage
from amibundle.reading import (
    bundle_key,
    check_image,
    check_signature,
    local_part_specs,
    read_manifest,
)
from amibundle.results import JsonRecord
from amibundle.s3.settings import S3Settings
from amibundle.sources import ImageFormat
from amibundle.sparse import SparseWriter, read_image_extents
from amibundle.validate import (
    as_optional_path,
    as_path,
    check_optional_record,
    check_progress,
    check_text,
    detect_architecture,
)

__all__ = [
    "SnapshotResult",
    "bundle_to_snapshot",
    "image_to_snapshot",
    "parts_to_snapshot",
]

# Module values, so that a test can make the backoff and the polling instant.
RETRY = RetryPolicy()
WAIT_POLL = 2.0  # seconds before the first DescribeSnapshots of --wait (then 1.5x, up to 15)
_READ_BUFFER = 1 << 20


@dataclass(frozen=True)
class SnapshotResult(JsonRecord):
    """What :func:`bundle_to_snapshot` / :func:`image_to_snapshot` made."""

    snapshot_id: str
    state: str  # pending (EBS is still sealing it) or completed (after wait)
    volume_size: int  # GiB
    region: str
    image_size: int
    blocks_written: int
    bytes_sent: int
    blocks_retried: int
    digest: str | None  # the bundle's image digest (SHA-1 of its tar stream), checked
    bootable: BootDisk | None
    registration: EbsImageSpec  # what RegisterImage needs for an AMI of it
    seconds: float


@dataclass(frozen=True)
class _Facts:
    """What registration takes from the manifest (or, for an image, the caller)."""

    architecture: str | None
    block_device_mapping: tuple[DeviceMapping, ...] = ()
    kernel_id: str | None = None
    ramdisk_id: str | None = None


class _Source(Protocol):
    @property
    def size(self) -> int: ...

    @property
    def image_path(self) -> Path | None:
        """A file holding the image as it is (its /boot is read before streaming)."""

    def stream(self, writer: BlockCutter, spill: Path | None, progress: Progress) -> str | None:
        """Feeds the image to ``writer`` (and, with ``spill``, writes it there
        too); returns the checked digest, if the source has one."""


@dataclass
class _BundleSource:
    manifest: Manifest
    parts: PartSource
    key: BundleKey
    size: int = field(init=False)
    image_path: Path | None = None

    def __post_init__(self) -> None:
        self.size = self.manifest.size

    def stream(self, writer: BlockCutter, spill: Path | None, progress: Progress) -> str | None:
        with contextlib.ExitStack() as resources:

            def open_output(member: Member) -> MemberWriter:
                if spill is None:
                    return writer
                fd = os.open(spill, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                resources.callback(os.close, fd)
                return _Tee(writer, SparseWriter(fd, str(spill)))

            result = unbundle_stream(
                self.parts,
                self.key,
                open_output,
                expected_size=self.manifest.size,
                progress=progress,
                stage=Stage.UPLOAD,
            )
        check_image(self.manifest, result.tar_sha1, result.member)
        return result.tar_sha1


class _Tee:
    """The member written to EBS and, for ``--make-bootable``, to a local
    sparse file whose ``/boot`` is read once the stream is through."""

    def __init__(self, first: BlockCutter, second: SparseWriter) -> None:
        self._first, self._second = first, second

    def write(self, offset: int, data: memoryview) -> None:
        self._second.write(offset, data)
        self._first.write(offset, data)

    def finish(self, size: int) -> None:
        self._second.finish(size)
        self._first.finish(size)

    def abort(self) -> None:
        self._first.abort()


@dataclass
class _ImageSource:
    image: OpenImage
    image_path: Path | None

    @property
    def size(self) -> int:
        return self.image.size

    def stream(self, writer: BlockCutter, spill: Path | None, progress: Progress) -> str | None:
        member = self.image.member
        extents = member.extents if member.extents is not None else (Extent(0, member.size),)
        buffers = itertools.repeat(bytearray(_READ_BUFFER))
        progress.start(Stage.UPLOAD, sum(extent.length for extent in extents))
        try:
            for extent in extents:
                position = extent.offset
                for view in read_image_extents(self.image.reader, [extent], buffers):
                    writer.write(position, view)
                    position += len(view)
                    progress.advance(Stage.UPLOAD, len(view))
            writer.finish(member.size)
        except BaseException as err:
            progress.finish(Stage.UPLOAD, err)
            raise
        progress.finish(Stage.UPLOAD)
        return None


def bundle_to_snapshot(
    manifest: str | os.PathLike[str],
    *,
    private_key: str | os.PathLike[str],
    settings: S3Settings | None = None,
    snapshot: SnapshotSpec | None = None,
    bootable: BootableSpec | None = None,
    source: str | os.PathLike[str] | None = None,
    cert: str | os.PathLike[str] | None = None,
    ebs_url: str | None = None,
    ec2_url: str | None = None,
    wait: bool = False,
    work_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> SnapshotResult:
    """Streams a local bundle into a new EBS snapshot; parts are read from
    ``source`` (default: the manifest's folder).

    ``settings`` carry the credentials, region, ``jobs`` (blocks written at
    once) and ``attempts``; ``ebs_url`` and ``ec2_url`` override boto3's
    configured endpoints. ``snapshot`` says what StartSnapshot is asked for;
    ``bootable`` makes a partitioned disk that boots (its file system is
    also written to a sparse file in ``work_dir``, default the temporary
    folder, to read ``/boot``). ``wait``: return once the snapshot is
    ``completed``. On any failure the snapshot is not completed.
    """
    started = time.monotonic()
    progress = check_progress(progress)
    manifest_path = as_path(manifest, "manifest")
    key_path = as_path(private_key, "private_key")
    folder = as_optional_path(source, "source") or manifest_path.parent
    cert_path = as_optional_path(cert, "cert")
    parsed = read_manifest(manifest_path)
    if cert_path is not None:
        check_signature(parsed, cert_path)
    key = bundle_key(parsed, key_path)
    reader = PartReader(local_part_specs(parsed, folder), parsed.manifest.bundled_size)
    try:
        return parts_to_snapshot(
            parsed.manifest, reader, key, settings=settings, snapshot=snapshot,
            bootable=bootable, ebs_url=ebs_url, ec2_url=ec2_url, wait=wait, work_dir=work_dir,
            progress=progress, started=started,
        )  # fmt: skip
    finally:
        reader.close()


def parts_to_snapshot(
    manifest: Manifest,
    parts: PartSource,
    key: BundleKey,
    *,
    settings: S3Settings | None = None,
    snapshot: SnapshotSpec | None = None,
    bootable: BootableSpec | None = None,
    ebs_url: str | None = None,
    ec2_url: str | None = None,
    wait: bool = False,
    work_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    started: float | None = None,
) -> SnapshotResult:
    """The bundle whose ``manifest`` (already read, its signature checked)
    and ``parts`` (each part checked as it is read) are given, into a new
    snapshot: what :func:`bundle_to_snapshot` does after reading the folder."""
    facts = _Facts(
        architecture=manifest.architecture,
        block_device_mapping=manifest.block_device_mapping,
        kernel_id=manifest.kernel_id,
        ramdisk_id=manifest.ramdisk_id,
    )
    return _write_snapshot(
        _BundleSource(manifest, parts, key), facts, settings=settings, snapshot=snapshot,
        bootable=bootable, ebs_url=ebs_url, ec2_url=ec2_url, wait=wait,
        work_dir=as_optional_path(work_dir, "work_dir"), progress=progress,
        started=time.monotonic() if started is None else started,
    )  # fmt: skip


def image_to_snapshot(
    image: str | os.PathLike[str],
    *,
    settings: S3Settings | None = None,
    snapshot: SnapshotSpec | None = None,
    bootable: BootableSpec | None = None,
    architecture: str | None = None,
    ebs_url: str | None = None,
    ec2_url: str | None = None,
    wait: bool = False,
    progress: Progress | None = None,
) -> SnapshotResult:
    """Writes a raw image file into a new EBS snapshot (its data extents only:
    holes are never read). ``architecture`` (default: this machine's) is for
    the registration it reports. Otherwise as :func:`bundle_to_snapshot`."""
    started = time.monotonic()
    progress = check_progress(progress)
    image_path = as_path(image, "image")
    check_text(architecture, "architecture", optional=True)
    facts = _Facts(architecture=architecture or detect_architecture())
    # The file's own bytes, whatever they look like: --make-bootable reads the
    # file system in it directly, so compressed or qemu images are not unpacked.
    with open_image(
        image_path, image_path.name, size_checks=False, image_format=ImageFormat.RAW
    ) as opened:
        if opened.size == 0:
            raise UsageError(f"{{param}} {image_path} is empty (zero bytes)", param="image")
        return _write_snapshot(
            _ImageSource(opened, image_path), facts, settings=settings, snapshot=snapshot,
            bootable=bootable, ebs_url=ebs_url, ec2_url=ec2_url, wait=wait, work_dir=None,
            progress=progress, started=started,
        )  # fmt: skip


def _write_snapshot(
    source: _Source,
    facts: _Facts,
    *,
    settings: S3Settings | None,
    snapshot: SnapshotSpec | None,
    bootable: BootableSpec | None,
    ebs_url: str | None,
    ec2_url: str | None,
    wait: bool,
    work_dir: Path | None,
    progress: Progress | None,
    started: float,
) -> SnapshotResult:
    settings = check_optional_record(settings, S3Settings, "settings") or S3Settings()
    spec = check_optional_record(snapshot, SnapshotSpec, "snapshot") or SnapshotSpec()
    bootable = check_optional_record(bootable, BootableSpec, "bootable")
    for url, param in ((ebs_url, "ebs_url"), (ec2_url, "ec2_url")):
        check_text(url, param, optional=True)
    # Everything that can be checked is, before the snapshot is started.
    plan = plan_disk(bootable) if bootable else None
    disk_bytes = plan.disk_bytes(source.size) if plan else source.size
    volume_gib = volume_gib_for(disk_bytes, spec)
    early_root = probe_root(source.image_path) if plan and source.image_path else None
    conn = connect(settings, endpoint_url=ebs_url, ec2_endpoint_url=ec2_url)
    session = SnapshotSession(conn, spec, volume_gib)
    with _work(plan, work_dir) as work:
        with _abandoned_on_failure(session):
            session.start()
        filled = _fill(session, conn, source, plan, early_root, work, progress or NullProgress())
        with _abandoned_on_failure(session):
            session.complete(filled.blocks)
    if wait and not session.interrupted:
        session.wait(poll=WAIT_POLL)
    assert session.snapshot_id is not None
    return SnapshotResult(
        snapshot_id=session.snapshot_id,
        state=session.state,
        volume_size=volume_gib,
        region=conn.region,
        image_size=source.size,
        blocks_written=filled.blocks.count,
        bytes_sent=filled.blocks.bytes_sent,
        blocks_retried=filled.blocks.retried,
        digest=filled.digest,
        bootable=filled.boot_disk,
        registration=ebs_image_spec(
            session.snapshot_id,
            volume_gib,
            architecture=facts.architecture,
            bootable=bootable.boot_mode if bootable else None,
            block_device_mapping=facts.block_device_mapping,
            kernel_id=facts.kernel_id,
            ramdisk_id=facts.ramdisk_id,
        ),
        seconds=time.monotonic() - started,
    )


@contextlib.contextmanager
def _abandoned_on_failure(session: SnapshotSession) -> Iterator[None]:
    """A start or a completion that failed (or was interrupted) leaves no
    snapshot behind: one whose start answer was lost is found by its token."""
    try:
        yield
    except BaseException:
        session.abandon()
        raise


@contextlib.contextmanager
def _work(plan: DiskPlan | None, parent: Path | None) -> Iterator[Path | None]:
    if plan is None:
        yield None
        return
    with work_folder(parent) as folder:
        yield Path(folder)


@dataclass(frozen=True)
class _Filled:
    blocks: WrittenBlocks
    digest: str | None
    boot_disk: BootDisk | None


def _fill(
    session: SnapshotSession,
    conn: EbsConnection,
    source: _Source,
    plan: DiskPlan | None,
    root: RootFs | None,
    work: Path | None,
    progress: Progress,
) -> _Filled:
    """Every block of the disk into the started snapshot; on any failure the
    writers stop and the snapshot is abandoned (deleted, never completed)."""
    writer = BlockWriter(
        session.put_block, jobs=conn.settings.jobs, is_retryable=is_retryable, retry=RETRY
    )
    try:
        cutter = BlockCutter(writer, shift=plan.root_offset if plan else 0)
        spill = work / "image" if work is not None and root is None else None
        digest = source.stream(cutter, spill, progress)
        boot_disk = None
        if plan is not None and work is not None:
            if root is None:
                assert spill is not None
                root = probe_root(spill)
            disk, boot_disk = build_boot_region(work, plan, session.volume_gib * GIB, root)
            for index, block in boot_region_blocks(disk, plan, source.size):
                writer.put(index, block)
        return _Filled(writer.finish(), digest, boot_disk)
    except BaseException as err:
        writer.abort()
        session.abandon()
        if isinstance(err, (ClientError, BotoCoreError)):
            raise session.block_failure(err) from None
        raise
