"""``s3_bundle_to_snapshot``: a bundle in a bucket streamed into an EBS
snapshot, with nothing bundle-sized on disk.

The bucket is read as ``download-unbundle`` reads it
(:func:`amibundle.downloading.open_remote_bundle`: the manifest fetched and
its signature checked, the key unwrapped, then the parts fetched a few
ahead, each checked against the manifest's size and SHA-1 before a byte of
it is used), and the stream goes into the snapshot as a local bundle's does
(:func:`~amibundle.ebs.convert.parts_to_snapshot`: image digest at the end,
the snapshot never completed after a failure).
"""

from __future__ import annotations

import os
import time

from amibundle.downloading import DEFAULT_PREFETCH, open_remote_bundle
from amibundle.ebs.bootable import BootableSpec
from amibundle.ebs.convert import SnapshotResult, parts_to_snapshot
from amibundle.ebs.snapshot import SnapshotSpec
from amibundle.progress import Progress
from amibundle.s3.settings import BucketRef, S3Settings

__all__ = ["s3_bundle_to_snapshot"]


def s3_bundle_to_snapshot(
    bucket: BucketRef | str,
    *,
    settings: S3Settings,
    manifest_name: str,
    private_key: str | os.PathLike[str],
    cert: str | os.PathLike[str] | None = None,
    snapshot: SnapshotSpec | None = None,
    bootable: BootableSpec | None = None,
    ebs_url: str | None = None,
    ec2_url: str | None = None,
    wait: bool = False,
    work_dir: str | os.PathLike[str] | None = None,
    prefetch: int = DEFAULT_PREFETCH,
    progress: Progress | None = None,
) -> SnapshotResult:
    """Streams the bundle ``<prefix><manifest_name>`` in ``bucket`` into a new
    EBS snapshot. ``settings`` reach S3 (their ``endpoint_url`` is S3's) and
    EBS (credentials, region, ``jobs``, ``attempts``): the snapshot is made in
    the region the settings give, else the default one, not necessarily the
    bucket's. ``prefetch`` parts are fetched ahead. Otherwise as
    :func:`~amibundle.ebs.convert.bundle_to_snapshot`."""
    started = time.monotonic()
    with open_remote_bundle(
        bucket, settings=settings, manifest_name=manifest_name, private_key=private_key,
        cert=cert, prefetch=prefetch, progress=progress,
    ) as remote:  # fmt: skip
        return parts_to_snapshot(
            remote.manifest, remote.reader, remote.key, settings=settings, snapshot=snapshot,
            bootable=bootable, ebs_url=ebs_url, ec2_url=ec2_url, wait=wait, work_dir=work_dir,
            progress=remote.progress, started=started,
        )  # fmt: skip
