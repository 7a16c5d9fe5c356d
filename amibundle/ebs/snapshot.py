"""One EBS snapshot written through the direct APIs, from start to completion
(or to its deletion).

:class:`SnapshotSpec` is what StartSnapshot is asked for, checked when made.
:class:`SnapshotSession` runs the calls: :meth:`~SnapshotSession.start`
(with a client token: a retried start returns the same snapshot),
:meth:`~SnapshotSession.put_block` for the :class:`~amibundle.ebs.blocks.BlockWriter`,
:meth:`~SnapshotSession.complete` with the changed-block count and the LINEAR
checksum, :meth:`~SnapshotSession.wait` (EC2 DescribeSnapshots until
``completed``), and :meth:`~SnapshotSession.abandon` after any failure.

Abandoning never completes: it deletes the pending snapshot (EC2 DeleteSnapshot
allows that while it is pending), with one quick try so that Ctrl-C still ends
the command within two seconds. When even that fails the snapshot stays
pending, EBS moves it to ``error`` once ``timeout_minutes`` pass without a
write, and the warning names it for deletion by hand.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from amibundle.ebs.blocks import BLOCK_SIZE, WrittenBlocks
from amibundle.ebs.client import EbsConnection, ebs_errors, ebs_failure
from amibundle.errors import EbsError, UsageError, plural
from amibundle.validate import Problems, check_text

__all__ = [
    "GIB",
    "MAX_VOLUME_GIB",
    "SnapshotSession",
    "SnapshotSpec",
    "parse_tag",
]

GIB = 1 << 30
MAX_VOLUME_GIB = 65_536  # StartSnapshot's VolumeSize limit (64 TiB)
TIMEOUT_MINUTES = (10, 4320)
MAX_TAGS = 50
_KMS_KEY_ARN = re.compile(r"arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/\S+")
_TOKEN = re.compile(r"\S{1,255}")
log = logging.getLogger("amibundle.ebs")


def parse_tag(value: str) -> tuple[str, str]:
    """``KEY=VALUE`` (the value may be empty, or hold ``=``)."""
    key, equals, tag_value = value.partition("=")
    if not equals or not key:
        raise UsageError(f"{{param}} {value!r} is not KEY=VALUE", param="tags")
    return key, tag_value


def _check_tags(tags: object) -> tuple[tuple[str, str], ...]:
    if isinstance(tags, Mapping):
        pairs = tuple(tags.items())
    elif isinstance(tags, (str, bytes)) or not isinstance(tags, Iterable):
        raise UsageError("{param} must be a mapping or (key, value) pairs", param="tags")
    else:
        pairs = tuple(parse_tag(t) if isinstance(t, str) else tuple(t) for t in tags)
    if len(pairs) > MAX_TAGS:
        raise UsageError(f"{{param}}: at most {MAX_TAGS} tags per snapshot", param="tags")
    keys = []
    for pair in pairs:
        if len(pair) != 2 or not all(isinstance(part, str) for part in pair):
            raise UsageError(f"{{param}}: {pair!r} is not a (key, value) pair", param="tags")
        key, value = pair
        if not 1 <= len(key) <= 127 or len(value) > 255:
            raise UsageError(
                f"{{param}}: tag {key!r} needs a key of 1 to 127 characters and a value "
                "of at most 255",
                param="tags",
            )
        if key.lower().startswith("aws:"):
            raise UsageError("{param}: tag keys starting with 'aws:' are AWS's", param="tags")
        keys.append(key)
    if len(set(keys)) != len(keys):
        raise UsageError("{param}: a tag key is given twice", param="tags")
    return pairs


def _check_size(size: object) -> int | None:
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_VOLUME_GIB:
        raise UsageError(
            f"{{param}} must be a whole number of GiB from 1 to {MAX_VOLUME_GIB}, not {size!r}",
            param="size_gib",
        )
    return size


def _check_timeout(minutes: object) -> int:
    low, high = TIMEOUT_MINUTES
    if isinstance(minutes, bool) or not isinstance(minutes, int) or not low <= minutes <= high:
        raise UsageError(
            f"{{param}} must be {low} to {high} minutes, not {minutes!r}", param="timeout_minutes"
        )
    return minutes


def _check_description(description: object) -> None:
    check_text(description, "description", optional=True)
    if isinstance(description, str) and not 1 <= len(description) <= 255:
        raise UsageError("{param} must be 1 to 255 characters", param="description")


def _check_key(arn: object) -> None:
    check_text(arn, "kms_key_arn", optional=True)
    if isinstance(arn, str) and not _KMS_KEY_ARN.fullmatch(arn):
        raise UsageError(
            f"{{param}} {arn!r} is not a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID): "
            "StartSnapshot takes no key id or alias",
            param="kms_key_arn",
        )


def _check_token(token: object) -> None:
    check_text(token, "client_token", optional=True)
    if isinstance(token, str) and not _TOKEN.fullmatch(token):
        raise UsageError("{param} must be 1 to 255 characters, no spaces", param="client_token")


@dataclass(frozen=True)
class SnapshotSpec:
    """What StartSnapshot is asked for; every value is checked when made.

    ``size_gib`` None: the image's size (a bootable disk's) rounded up to GiB.
    A ``kms_key_arn`` implies ``encrypted``. ``timeout_minutes`` is how long
    EBS keeps the snapshot pending without a write before it moves it to
    ``error`` (10 to 4320). ``client_token`` None: a new one per run; the same
    token with the same parameters gives back the same snapshot (a start that
    is retried, by botocore or by running the command again)."""

    size_gib: int | None = None
    description: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    encrypted: bool = False
    kms_key_arn: str | None = None
    timeout_minutes: int = 60
    client_token: str | None = None

    def __post_init__(self) -> None:
        with Problems() as problems:
            problems.check(_check_size, self.size_gib)
            problems.check(_check_description, self.description)
            tags = problems.check(_check_tags, self.tags)
            problems.check(_check_key, self.kms_key_arn)
            problems.check(_check_timeout, self.timeout_minutes)
            problems.check(_check_token, self.client_token)
        object.__setattr__(self, "tags", tags)
        object.__setattr__(self, "encrypted", bool(self.encrypted or self.kms_key_arn))

    def start_request(self, volume_gib: int, client_token: str) -> dict[str, Any]:
        request: dict[str, Any] = {
            "VolumeSize": volume_gib,
            "Timeout": self.timeout_minutes,
            "ClientToken": client_token,
        }
        if self.description is not None:
            request["Description"] = self.description
        if self.tags:
            request["Tags"] = [{"Key": k, "Value": v} for k, v in self.tags]
        if self.encrypted:
            request["Encrypted"] = True
        if self.kms_key_arn is not None:
            request["KmsKeyArn"] = self.kms_key_arn
        return request


def volume_gib_for(disk_bytes: int, spec: SnapshotSpec) -> int:
    """The snapshot's volume size: ``spec.size_gib``, which must hold the
    disk, else the disk's size rounded up to GiB."""
    needed = max(1, -(-disk_bytes // GIB))
    if needed > MAX_VOLUME_GIB:
        raise UsageError(
            f"the disk is {disk_bytes} bytes, more than an EBS volume's {MAX_VOLUME_GIB} GiB"
        )
    if spec.size_gib is None:
        return needed
    if spec.size_gib < needed:
        raise UsageError(
            f"{{param}} {spec.size_gib} GiB is too small: the disk needs {needed} GiB",
            param="size_gib",
        )
    return spec.size_gib


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Holds SIGINT and SIGTERM back while CompleteSnapshot is sent (main
    thread only): once the request is out, the snapshot is complete, and the
    command must say so rather than report an interruption."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class SnapshotSession:
    """The calls that make one snapshot, in order: start, put_block (from the
    writer threads), complete, wait; or abandon after a failure."""

    def __init__(self, conn: EbsConnection, spec: SnapshotSpec, volume_gib: int) -> None:
        self._conn = conn
        self._spec = spec
        self.volume_gib = volume_gib
        self.client_token = spec.client_token or f"amibundle-{uuid.uuid4()}"
        self.snapshot_id: str | None = None
        self.state = "not started"
        self.interrupted = False  # a signal came once the snapshot was completed
        self._start_sent = False

    def start(self) -> str:
        request = self._spec.start_request(self.volume_gib, self.client_token)
        self._start_sent = True
        with ebs_errors(f"start a snapshot of {self.volume_gib} GiB", self._conn):
            answer = self._conn.ebs.start_snapshot(**request)
        block_size = int(answer.get("BlockSize") or BLOCK_SIZE)
        self.snapshot_id = str(answer["SnapshotId"])
        self.state = "pending"
        if block_size != BLOCK_SIZE:
            raise EbsError(
                f"EBS answered a block size of {block_size} bytes for {self.snapshot_id}; "
                f"amibundle writes {BLOCK_SIZE}-byte blocks"
            )
        log.debug("started %s (%d GiB)", self.snapshot_id, self.volume_gib)
        return self.snapshot_id

    def put_block(self, index: int, data: bytes, checksum: str) -> None:
        """One PutSnapshotBlock; botocore errors are raised as they are (the
        block writer tells retryable ones apart, then words the last)."""
        self._conn.ebs.put_snapshot_block(
            SnapshotId=self.snapshot_id,
            BlockIndex=index,
            BlockData=data,
            DataLength=len(data),
            Checksum=checksum,
            ChecksumAlgorithm="SHA256",
        )

    def block_failure(self, err: Exception) -> Exception:
        """The writer's last failure for a block, worded like every other."""
        return ebs_failure(f"write a block of {self.snapshot_id}", err, self._conn)

    def complete(self, written: WrittenBlocks) -> str:
        """CompleteSnapshot. A Ctrl-C held back while it was sent is taken
        once it is accepted as what it then is: too late to stop anything
        (``interrupted`` says so; the caller then does not wait)."""
        what = f"complete {self.snapshot_id} ({plural(written.count, 'block')})"
        answer: dict[str, Any] | None = None
        try:
            with _signals_held(), ebs_errors(what, self._conn):
                answer = self._conn.ebs.complete_snapshot(
                    SnapshotId=self.snapshot_id,
                    ChangedBlocksCount=written.count,
                    Checksum=written.checksum,
                    ChecksumAlgorithm="SHA256",
                    ChecksumAggregationMethod="LINEAR",
                )
        except KeyboardInterrupt:
            if answer is None:
                raise
            log.warning("interrupted after %s was completed: not waiting", self.snapshot_id)
            self.interrupted = True
        assert answer is not None
        self.state = str(answer.get("Status") or "pending")
        return self.state

    def wait(self, *, poll: float = 2.0, poll_limit: float = 15.0) -> str:
        """Polls EC2 DescribeSnapshots until the snapshot is ``completed``
        (``error`` raises :class:`EbsError` with EBS's reason)."""
        interval = poll
        while self.state != "completed":
            time.sleep(interval)
            interval = min(poll_limit, interval * 1.5)
            with ebs_errors(f"look up {self.snapshot_id}", self._conn):
                found = self._conn.ec2.describe_snapshots(SnapshotIds=[self.snapshot_id])
            snapshots = found.get("Snapshots") or []
            state = str(snapshots[0].get("State")) if snapshots else "pending"
            if state == "error":
                reason = snapshots[0].get("StateMessage") or "no reason given"
                raise EbsError(f"snapshot {self.snapshot_id} failed: {reason}")
            self.state = state
        return self.state

    def abandon(self) -> None:
        """Deletes the pending snapshot after a failure; never completes it.
        One quick try, so that Ctrl-C still ends the command at once. When the
        start was sent but its answer never came (Ctrl-C during the request),
        the same client token asks EBS which snapshot it made."""
        if self.snapshot_id is None and self._start_sent:
            request = self._spec.start_request(self.volume_gib, self.client_token)
            with contextlib.suppress(EbsError), ebs_errors("ask again", self._conn):
                answer = self._conn.ebs_quick.start_snapshot(**request)
                self.snapshot_id = str(answer["SnapshotId"])
        if self.snapshot_id is None:
            return
        try:
            with ebs_errors(f"delete {self.snapshot_id}", self._conn):
                self._conn.ec2_quick.delete_snapshot(SnapshotId=self.snapshot_id)
        except EbsError as err:
            log.warning(
                "%s stays pending, never completed: EBS moves it to 'error' after %d minutes "
                "without a write; delete it then (%s)",
                self.snapshot_id,
                self._spec.timeout_minutes,
                err,
            )
            self.state = "abandoned"
            return
        log.warning("%s was not completed and is deleted", self.snapshot_id)
        self.state = "deleted"
