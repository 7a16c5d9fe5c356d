"""``download_bundle``: a bundle from a bucket into a folder, manifest first.

Only the file names the manifest lists (checked plain names) are written,
inside the folder, each under a temporary name until its SHA-1 matched;
parts already there and valid are kept; the manifest is written last.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from amibundle.errors import ManifestError, StorageError
from amibundle.files import check_directory, temp_output, write_all, write_atomically
from amibundle.format import manifest as mf
from amibundle.format.manifest_reader import parse_manifest
from amibundle.progress import BatchedProgress, NullProgress, Progress, Stage
from amibundle.reading import name_problems
from amibundle.s3.client import Connection, connect
from amibundle.s3.engine import hash_file, run_parallel
from amibundle.s3.remote import (
    CheckedPart,
    S3Result,
    bundle_keys,
    fetch_part,
    get_manifest,
    throughput,
)
from amibundle.s3.settings import BucketRef, S3Settings, as_bucket
from amibundle.validate import as_path, check_plain_name, check_progress, check_record

__all__ = ["DownloadResult", "download_bundle"]


@dataclass(frozen=True)
class DownloadResult(S3Result):
    """What :func:`download_bundle` did."""

    manifest_key: str
    manifest_path: Path
    part_paths: tuple[Path, ...]  # in manifest order
    parts_downloaded: int
    parts_skipped: int  # already in the folder with the right SHA-1: not fetched
    bytes_downloaded: int  # parts and manifest
    seconds: float
    throughput: float  # bytes per second


@dataclass(frozen=True)
class _Download:
    conn: Connection
    bucket: BucketRef
    directory: Path
    bundled_size: int
    progress: Progress
    stop: threading.Event


def _valid_local_part(path: Path, sha1: str, down: _Download) -> int | None:
    """The size of ``path`` if it is a regular file (not a link) with the
    right SHA-1, else None."""
    try:
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode) or st.st_size > down.bundled_size:
            return None
        with open(path, "rb") as handle:
            digests = hash_file(handle, down.stop)
    except OSError:
        return None
    return digests.size if digests.sha1 == sha1 else None


def _receive_part(
    down: _Download, part: mf.PartEntry, url: str, body: Any, report: Callable[[int], None]
) -> int:
    final = down.directory / part.filename
    with temp_output(final) as out:
        check = CheckedPart(part, url, bundled_size=down.bundled_size, stop=down.stop)
        for chunk in check.chunks(body):
            try:
                write_all(out.fd, chunk)
            except OSError as err:
                raise StorageError(f"cannot write {final}: {err.strerror}") from None
            report(len(chunk))
        check.verify()
        out.publish(overwrite=True)
    return check.size


def _download_part(down: _Download, part: mf.PartEntry) -> int | None:
    """Fetches one part unless a valid copy is there; its size if fetched."""
    # The name passed the manifest's plain-name check; joined to the folder
    # it cannot point anywhere else.
    present = _valid_local_part(down.directory / part.filename, part.digest, down)
    if present is not None:
        down.progress.advance(Stage.DOWNLOAD, present)
        return None
    return fetch_part(
        down.conn,
        down.bucket,
        part.filename,
        partial(_receive_part, down, part),
        stop=down.stop,
        progress=down.progress,
    )


def download_bundle(
    bucket: BucketRef | str,
    *,
    settings: S3Settings,
    manifest_name: str,
    directory: str | os.PathLike[str],
    progress: Progress | None = None,
) -> DownloadResult:
    """Downloads the bundle whose manifest is ``<prefix><manifest_name>`` into
    ``directory``: the manifest is read first, its parts are fetched in
    parallel and checked against its SHA-1s, and the manifest is written
    last. Parts already in ``directory`` with the right SHA-1 are kept, so
    an interrupted download resumes."""
    started = time.monotonic()
    bucket = as_bucket(bucket)
    settings = check_record(settings, S3Settings, "settings")
    progress = check_progress(progress)
    check_plain_name(manifest_name, "manifest_name")
    directory = as_path(directory, "directory")
    check_directory(directory, "directory")
    conn = connect(settings)
    manifest_key = bucket.key(manifest_name)
    raw = get_manifest(conn, bucket, manifest_key)
    manifest = parse_manifest(raw, bucket.url(manifest_key)).manifest
    bundle_keys(bucket, manifest_name, manifest)
    if problems := name_problems(manifest, directory):
        raise ManifestError(problems[0])
    parts = sorted(manifest.parts, key=lambda p: p.filename)

    down = _Download(
        conn,
        bucket,
        directory,
        manifest.bundled_size,
        BatchedProgress(progress or NullProgress()),
        threading.Event(),
    )
    down.progress.start(Stage.DOWNLOAD, manifest.bundled_size)
    try:
        fetched = run_parallel(
            [partial(_download_part, down, part) for part in parts],
            jobs=settings.jobs,
            stop=down.stop,
        )
        manifest_path = directory / manifest_name
        write_atomically(manifest_path, raw, overwrite=True)
    except BaseException as err:
        down.progress.finish(Stage.DOWNLOAD, err)
        raise
    down.progress.finish(Stage.DOWNLOAD)

    downloaded = [size for size in fetched if size is not None]
    nbytes = sum(downloaded) + len(raw)
    seconds = time.monotonic() - started
    return DownloadResult(
        bucket=bucket,
        manifest_key=manifest_key,
        manifest_path=manifest_path,
        part_paths=tuple(directory / p.filename for p in manifest.parts),
        parts_downloaded=len(downloaded),
        parts_skipped=len(parts) - len(downloaded),
        bytes_downloaded=nbytes,
        seconds=seconds,
        throughput=throughput(nbytes, seconds),
    )
