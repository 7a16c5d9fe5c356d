"""``download_unbundle``: a bundle in a bucket back into its image, in one pass.

The way back from :func:`amibundle.uploading.bundle_upload`: the manifest
is fetched and checked (signature with ``cert``, the key unwrapped) before
any part; then the parts stream in order, a few fetched ahead
(:class:`~amibundle.s3.source.S3PartReader`: each checked against the
manifest's size and SHA-1 before a byte of it is used), and are decrypted,
inflated and written by the same engine as ``unbundle``
(:func:`~amibundle.pipeline.unbundle_stream`). Nothing bundle-sized is
stored. Where the image goes:

* ``destination`` (a folder): a new sparse file under a temporary name,
  renamed only when every check passed, as ``unbundle`` does;
* ``stream``: any binary stream (standard output), holes as zeros;
* ``device``: an existing block device or file, written whole
  (:class:`~amibundle.outputs.DeviceWriter`).

A stream or device cannot be taken back: a failure part way raises
:class:`~amibundle.errors.PartialImageError` saying how far the image got.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from amibundle.crypto import BundleKey
from amibundle.errors import AmibundleError, PartialImageError, UsageError
from amibundle.files import TempOutput, check_directory, refuse_existing, temp_output
from amibundle.format.manifest import Manifest, ParsedManifest
from amibundle.format.manifest_reader import parse_manifest
from amibundle.format.tar import Member
from amibundle.outputs import DeviceWriter, StreamWriter, open_device
from amibundle.pipeline import MemberWriter, UnbundleStreamResult, unbundle_stream
from amibundle.progress import BatchedProgress, NullProgress, Progress, Stage
from amibundle.reading import bundle_key, check_image, check_signature
from amibundle.s3.buckets import with_bucket_region
from amibundle.s3.client import Connection, connect
from amibundle.s3.remote import S3Result, bundle_keys, get_manifest, throughput
from amibundle.s3.settings import BucketRef, S3Settings, as_bucket
from amibundle.s3.source import S3PartReader
from amibundle.sparse import SparseWriter
from amibundle.validate import as_optional_path, as_path, check_plain_name, check_record

__all__ = ["DownloadUnbundleResult", "RemoteBundle", "download_unbundle", "open_remote_bundle"]

log = logging.getLogger("amibundle")

DEFAULT_PREFETCH = 4


@dataclass(frozen=True)
class DownloadUnbundleResult(S3Result):
    """What :func:`download_unbundle` wrote."""

    manifest_key: str
    output: str  # the image file, the device, or "-" for a stream
    output_kind: str  # "file", "device" or "stream"
    size: int
    digest: str
    compression: str
    parts: int
    bytes_downloaded: int  # parts and manifest
    signature_checked: bool
    seconds: float
    throughput: float  # image bytes per second


class _StopOnFailure:
    """Passes progress on; when the stream ends in an error, stops the
    fetches at once (they would otherwise finish the part they are on)."""

    def __init__(self, inner: Progress, reader: S3PartReader) -> None:
        self._inner = inner
        self._reader = reader

    def start(self, stage: Stage, total: int | None) -> None:
        self._inner.start(stage, total)

    def advance(self, stage: Stage, nbytes: int) -> None:
        self._inner.advance(stage, nbytes)

    def finish(self, stage: Stage, error: BaseException | None = None) -> None:
        if error is not None:
            self._reader.stop.set()
        self._inner.finish(stage, error)


def _one_output(
    destination: str | os.PathLike[str] | None,
    device: str | os.PathLike[str] | None,
    stream: BinaryIO | None,
) -> tuple[Path | None, Path | None]:
    given = sum(x is not None for x in (destination, device, stream))
    if given > 1:
        raise UsageError("give one place for the image: a destination folder, a device or a stream")
    folder = as_optional_path(destination, "destination")
    if given == 0:
        folder = Path()
    return folder, as_optional_path(device, "device")


def _fetch_manifest(conn: Connection, bucket: BucketRef, name: str) -> ParsedManifest:
    key = bucket.key(name)
    parsed = parse_manifest(get_manifest(conn, bucket, key), bucket.url(key))
    bundle_keys(bucket, name, parsed.manifest)  # refuses a manifest listing itself
    return parsed


@dataclass(frozen=True)
class RemoteBundle:
    """A bundle in a bucket, open for one pass: its manifest fetched and
    checked, its key unwrapped, its parts ready to stream (``reader``)."""

    bucket: BucketRef
    manifest_name: str
    parsed: ParsedManifest
    key: BundleKey
    reader: S3PartReader
    progress: Progress  # for the stream: a failure in it stops the fetches at once
    signature_checked: bool

    @property
    def manifest(self) -> Manifest:
        return self.parsed.manifest

    @property
    def bytes_downloaded(self) -> int:
        """The parts fetched so far, and the manifest."""
        return self.reader.total + len(self.parsed.raw)


@contextlib.contextmanager
def open_remote_bundle(
    bucket: BucketRef | str,
    *,
    settings: S3Settings,
    manifest_name: str,
    private_key: str | os.PathLike[str],
    cert: str | os.PathLike[str] | None = None,
    prefetch: int = DEFAULT_PREFETCH,
    progress: Progress | None = None,
    check_first: Callable[[], None] = lambda: None,
) -> Iterator[RemoteBundle]:
    """The bundle ``<prefix><manifest_name>`` in ``bucket``, read by
    :func:`download_unbundle` and :func:`amibundle.ebs.s3_bundle_to_snapshot`:
    the arguments are checked (then ``check_first``, the caller's own checks)
    before any request; the manifest is fetched, its signature checked with
    ``cert`` and its key unwrapped before any part; ``prefetch`` parts are
    fetched ahead once the stream starts reading. The download's progress
    stage spans the block; the fetches stop when it ends."""
    bucket = as_bucket(bucket)
    settings = check_record(settings, S3Settings, "settings")
    check_plain_name(manifest_name, "manifest_name")
    key_path = as_path(private_key, "private_key")
    cert_path = as_optional_path(cert, "cert")
    check_first()

    settings = with_bucket_region(settings, bucket)
    conn = connect(settings)
    parsed = _fetch_manifest(conn, bucket, manifest_name)
    m = parsed.manifest
    if cert_path is not None:
        check_signature(parsed, cert_path)
    key = bundle_key(parsed, key_path)
    batched = BatchedProgress(progress or NullProgress())
    reader = S3PartReader(
        conn, bucket, m.parts, m.bundled_size, prefetch=prefetch, progress=batched
    )
    watched = _StopOnFailure(progress or NullProgress(), reader)
    batched.start(Stage.DOWNLOAD, m.bundled_size)
    try:
        yield RemoteBundle(
            bucket, manifest_name, parsed, key, reader, watched, cert_path is not None
        )
    except BaseException as err:
        batched.finish(Stage.DOWNLOAD, err)
        raise
    finally:
        reader.close()
    batched.finish(Stage.DOWNLOAD)


def download_unbundle(
    bucket: BucketRef | str,
    *,
    settings: S3Settings,
    manifest_name: str,
    private_key: str | os.PathLike[str],
    destination: str | os.PathLike[str] | None = None,
    device: str | os.PathLike[str] | None = None,
    stream: BinaryIO | None = None,
    cert: str | os.PathLike[str] | None = None,
    force: bool = False,
    prefetch: int = DEFAULT_PREFETCH,
    progress: Progress | None = None,
) -> DownloadUnbundleResult:
    """Recreates the image of the bundle ``<prefix><manifest_name>`` in
    ``bucket`` without storing the bundle: into ``destination`` (a folder;
    the default is the current one), over ``device`` (an existing block
    device or file) or into ``stream``. ``prefetch`` parts are fetched ahead."""
    started = time.monotonic()
    folder, device_path = _one_output(destination, device, stream)

    def check_outputs() -> None:
        if folder is not None:
            check_directory(folder, "destination")

    with open_remote_bundle(
        bucket, settings=settings, manifest_name=manifest_name, private_key=private_key,
        cert=cert, prefetch=prefetch, progress=progress, check_first=check_outputs,
    ) as remote:  # fmt: skip
        m, reader, key, watched = remote.manifest, remote.reader, remote.key, remote.progress
        if folder is not None:
            output, kind, result = _to_file(folder / m.name, m, reader, key, watched, force=force)
        elif device_path is not None:
            output, kind = str(device_path), "device"
            result = _to_device(device_path, m, reader, key, watched)
        else:
            assert stream is not None
            output, kind = "-", "stream"
            result = _to_stream(stream, m, reader, key, watched)
    seconds = time.monotonic() - started
    return DownloadUnbundleResult(
        bucket=remote.bucket,
        manifest_key=remote.bucket.key(manifest_name),
        output=output,
        output_kind=kind,
        size=result.member.size,
        digest=result.tar_sha1,
        compression=result.compression.value,
        parts=len(m.parts),
        bytes_downloaded=remote.bytes_downloaded,
        signature_checked=remote.signature_checked,
        seconds=seconds,
        throughput=throughput(result.member.size, seconds),
    )


def _stream_into(
    m: Manifest,
    reader: S3PartReader,
    key: BundleKey,
    open_output: Callable[[Member], MemberWriter],
    progress: Progress,
) -> UnbundleStreamResult:
    result = unbundle_stream(reader, key, open_output, expected_size=m.size, progress=progress)
    check_image(m, result.tar_sha1, result.member)
    return result


def _named(m: Manifest, final: str) -> Callable[[Member], None]:
    def note(member: Member) -> None:
        if member.name != m.name:
            log.warning(
                "the image inside the bundle is named %r; writing it as %r", member.name, final
            )

    return note


def _to_file(
    final: Path,
    m: Manifest,
    reader: S3PartReader,
    key: BundleKey,
    progress: Progress,
    *,
    force: bool,
) -> tuple[str, str, UnbundleStreamResult]:
    refuse_existing([final], force=force)
    note = _named(m, final.name)
    out: TempOutput
    with temp_output(final) as out:

        def open_output(member: Member) -> SparseWriter:
            note(member)
            return SparseWriter(out.fd, str(final))

        result = _stream_into(m, reader, key, open_output, progress)
        # Modes like setuid make no sense on an image file; keep permission bits.
        out.publish(overwrite=force, mode=result.member.mode & 0o777, mtime=result.member.mtime)
    return str(final), "file", result


@contextlib.contextmanager
def _partial(target: str, size: int, written: Callable[[], int]) -> Iterator[None]:
    """A failure after the first byte reached ``target`` says how far it got."""
    try:
        yield
    except AmibundleError as err:
        done = written()
        if done == 0:
            raise
        state = (
            f"all {size} bytes were written to {target}, which must not be used"
            if done >= size
            else f"{target} holds the image only in part: every byte before offset "
            f"{done} of {size} was written, the rest is as it was"
        )
        raise PartialImageError(f"{err}; {state}", written=done) from err
    except BaseException:
        if written():
            log.warning("%s holds the image only up to byte %d of %d", target, written(), size)
        raise


def _to_device(
    path: Path, m: Manifest, reader: S3PartReader, key: BundleKey, progress: Progress
) -> UnbundleStreamResult:
    fd, block = open_device(path, m.size)
    writer = DeviceWriter(fd, str(path), block_device=block)
    note = _named(m, str(path))

    def open_output(member: Member) -> DeviceWriter:
        note(member)
        return writer

    try:
        with _partial(str(path), m.size, lambda: writer.written):
            return _stream_into(m, reader, key, open_output, progress)
    finally:
        os.close(fd)


def _to_stream(
    stream: BinaryIO, m: Manifest, reader: S3PartReader, key: BundleKey, progress: Progress
) -> UnbundleStreamResult:
    writer = StreamWriter(stream, "the output stream")

    def open_output(member: Member) -> StreamWriter:
        return writer

    with _partial("the output stream", m.size, lambda: writer.written):
        return _stream_into(m, reader, key, open_output, progress)
