"""``register_snapshot``: an EBS-backed AMI of a snapshot that to-ebs completed.

The request is the snapshot's :class:`~amibundle.ebs.registration.EbsImageSpec`
(root device, the snapshot as root volume plus the manifest's instance-store
mappings, architecture, virtualization type, boot mode and ENA for a
bootable disk) with a name, a description and tags, checked by the rules of
:class:`~amibundle.ec2.registration.ImageRegistration` before anything is
sent. EC2 registers only a ``completed`` snapshot. A refused registration
leaves the snapshot as it is (complete, and the caller's): the error says
so, with the commands to register it by hand or to delete it.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from amibundle.ebs.convert import SnapshotResult
from amibundle.ec2.client import connect, ec2_errors
from amibundle.ec2.register import DEFAULT_WAIT_TIMEOUT, ImageResult, wait_for_image
from amibundle.ec2.registration import ImageRegistration
from amibundle.errors import Ec2Error, UsageError
from amibundle.s3.settings import S3Settings
from amibundle.validate import check_optional_record, check_record, check_text

__all__ = ["RegisteredImage", "check_image_name", "register_snapshot"]

WAIT_POLL = 2.0  # seconds between DescribeImages of ``wait`` (a module value for tests)


@dataclass(frozen=True)
class RegisteredImage(ImageResult):
    """What :func:`register_snapshot` registered: the AMI of ``snapshot_id``."""

    snapshot_id: str


def check_image_name(
    name: str,
    *,
    description: str | None = None,
    tags: Mapping[str, str] | Iterable[tuple[str, str]] = (),
) -> ImageRegistration:
    """The AMI's name, description and tags, checked by RegisterImage's rules
    (so that a bad name is refused before a snapshot is written)."""
    return ImageRegistration.create(name=name, description=description, tags=tags)


def register_snapshot(
    snapshot: SnapshotResult,
    name: str,
    *,
    description: str | None = None,
    tags: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    settings: S3Settings | None = None,
    ec2_url: str | None = None,
    wait: bool = False,
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
) -> RegisteredImage:
    """Registers the ``completed`` snapshot of ``snapshot`` (what
    :func:`~amibundle.ebs.convert.bundle_to_snapshot` and its siblings
    return, made with ``wait=True``) as an EBS-backed AMI named ``name``, in
    the snapshot's region; ``ec2_url`` overrides boto3's EC2 endpoint. With
    ``wait``, returns once the image is ``available``."""
    started = time.monotonic()
    snapshot = check_record(snapshot, SnapshotResult, "snapshot")
    registration = check_image_name(name, description=description, tags=tags)
    settings = check_optional_record(settings, S3Settings, "settings") or S3Settings()
    check_text(ec2_url, "ec2_url", optional=True)
    if snapshot.state != "completed":
        raise UsageError(
            f"{{param}} {snapshot.snapshot_id} is {snapshot.state}: EC2 registers only a "
            "completed snapshot (make it with wait=True)",
            param="snapshot",
        )
    request = snapshot.registration.request(name, description=description)
    if registration.tags:
        request["TagSpecifications"] = [
            {
                "ResourceType": "image",
                "Tags": [{"Key": k, "Value": v} for k, v in registration.tags],
            }
        ]
    conn = connect(settings, endpoint_url=ec2_url, region=snapshot.region)
    try:
        with ec2_errors(f"register {snapshot.snapshot_id} as {name!r}", conn):
            image_id = str(conn.client.register_image(**request)["ImageId"])
    except Ec2Error as err:
        raise _snapshot_kept(err, snapshot, name) from None
    state = "pending"
    if wait:
        state = wait_for_image(conn, image_id, timeout=wait_timeout, interval=WAIT_POLL)
    return RegisteredImage(
        image_id=image_id,
        name=name,
        region=conn.region,
        snapshot_id=snapshot.snapshot_id,
        state=state,
        request=request,
        seconds=time.monotonic() - started,
    )


def _snapshot_kept(err: Ec2Error, snapshot: SnapshotResult, name: str) -> Ec2Error:
    """The refusal, and what to do with the complete snapshot it leaves."""
    by_hand = snapshot.registration.aws_command(snapshot.region, name)
    delete = ["aws", "ec2", "delete-snapshot", "--region", snapshot.region,
              "--snapshot-id", snapshot.snapshot_id]  # fmt: skip
    return Ec2Error(
        f"{err}; snapshot {snapshot.snapshot_id} is complete and stays",
        hint=f"register it by hand: {shlex.join(by_hand)}; or delete it: {shlex.join(delete)}",
    )
