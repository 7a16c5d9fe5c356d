"""A snapshot written through the EBS direct APIs: a moto EC2 snapshot plus its blocks.

Being a moto `Snapshot` in the EC2 backend's `snapshots`, it is what EC2 DescribeSnapshots,
CreateTags and DeleteSnapshot see. Its life:

    OPEN (EC2: pending) --CompleteSnapshot--> SEALING (EC2: pending) --looks--> COMPLETED
      |                                                                  \\-> ERROR (when told)
      \\-- Timeout minutes without a write or completion --> ERROR ("timed out")

Blocks are written only while OPEN; they are read (ListSnapshotBlocks, GetSnapshotBlock)
only once COMPLETED. After CompleteSnapshot, DescribeSnapshots says `pending` for
`SnapshotFate.pending_describes` calls that look at the snapshot, then the fate's final state,
so a `--wait` loop can be tested without sleeping.
"""

from __future__ import annotations

import base64
import os
import threading
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from moto.ec2.models.elastic_block_store import Snapshot

from .ebs_rules import BLOCK_SIZE

__all__ = ["DirectSnapshot", "Phase", "SnapshotFate", "StoredBlock"]

NO_VOLUME = "vol-ffffffff"  # what EC2 shows for a snapshot not taken from a volume


class Phase(str, Enum):
    OPEN = "open"
    SEALING = "sealing"
    COMPLETED = "completed"
    ERROR = "error"


@dataclass(frozen=True)
class SnapshotFate:
    """After CompleteSnapshot: `pending` for `pending_describes` looks, then `final` (COMPLETED
    or ERROR, with `message` as DescribeSnapshots' StateMessage)."""

    pending_describes: int = 1
    final: Phase = Phase.COMPLETED
    message: str | None = None

    def __post_init__(self) -> None:
        if self.pending_describes < 0:
            raise ValueError("pending_describes must be >= 0")
        if self.final not in (Phase.COMPLETED, Phase.ERROR):
            raise ValueError("the final phase must be COMPLETED or ERROR")


@dataclass(frozen=True)
class StoredBlock:
    data: bytes
    digest: bytes  # raw SHA256 of data
    token: str

    @property
    def checksum(self) -> str:
        return base64.b64encode(self.digest).decode("ascii")


@dataclass(frozen=True)
class _NoVolume:
    """Stands where moto's Snapshot expects the volume it was taken from."""

    size: int
    id: str = NO_VOLUME
    encrypted: bool = False


class DirectSnapshot(Snapshot):
    def __init__(
        self,
        backend: Any,
        snapshot_id: str,
        *,
        request: dict[str, Any],
        kms_key_arn: str | None,
        owner_id: str,
        now: float,
    ) -> None:
        super().__init__(
            backend,
            snapshot_id,
            _NoVolume(request["VolumeSize"]),
            request["Description"] or "",
            encrypted=request["Encrypted"],
            kms_key_id=kms_key_arn,
            owner_id=owner_id,
        )
        self.request = request
        self.kms_key_arn = kms_key_arn
        self.blocks: dict[int, StoredBlock] = {}
        self.completion: tuple[Any, ...] | None = None
        self.state_message: str | None = None
        self.started_at: datetime = self.start_time
        self._timeout_s = request["Timeout"] * 60.0
        self._deadline = now + self._timeout_s
        self._fate: SnapshotFate | None = None  # set by a test; else the stand-in's at completion
        self._looks = 0
        self.lock = threading.RLock()
        self._set_phase(Phase.OPEN)

    # -- phase ---------------------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        return self._phase

    def _set_phase(self, phase: Phase, message: str | None = None) -> None:
        self._phase = phase
        # moto's Snapshot answers DescribeSnapshots' State from `status`.
        self.status = {Phase.COMPLETED: "completed", Phase.ERROR: "error"}.get(phase, "pending")
        if message is not None:
            self.state_message = message

    @property
    def progress(self) -> str:
        return "100%" if self._phase is Phase.COMPLETED else "0%"

    @property
    def volume_gib(self) -> int:
        return int(self.request["VolumeSize"])

    @property
    def timed_out(self) -> bool:
        return self._phase is Phase.ERROR and self.state_message == "timed out"

    def refresh(self, now: float) -> None:
        """Cancel an OPEN snapshot whose Timeout passed since its start or its last write."""
        with self.lock:
            if self._phase is Phase.OPEN and now > self._deadline:
                self._set_phase(Phase.ERROR, "timed out")

    def write(self, index: int, data: bytes, digest: bytes, now: float) -> None:
        with self.lock:
            token = base64.b64encode(os.urandom(24)).decode("ascii")
            self.blocks[index] = StoredBlock(data, digest, token)
            self._deadline = now + self._timeout_s

    def digests_in_order(self) -> list[bytes]:
        with self.lock:
            return [self.blocks[i].digest for i in sorted(self.blocks)]

    def seal(self, default_fate: SnapshotFate, completion: tuple[Any, ...]) -> None:
        """CompleteSnapshot accepted: stop writes, then follow this snapshot's fate (if a test
        set one) or `default_fate`."""
        with self.lock:
            self.completion = completion
            fate = self._fate = self._fate or default_fate
            self._looks = 0
            if fate.pending_describes == 0:
                self._set_phase(fate.final, fate.message)
            else:
                self._set_phase(Phase.SEALING)

    def set_fate(self, fate: SnapshotFate) -> None:
        with self.lock:
            if self._phase in (Phase.COMPLETED, Phase.ERROR):
                raise ValueError(f"{self.id} is already {self._phase.value}")
            self._fate, self._looks = fate, 0
            if self._phase is Phase.SEALING and fate.pending_describes == 0:
                self._set_phase(fate.final, fate.message)

    def look(self) -> None:
        """One DescribeSnapshots call looked at this snapshot."""
        with self.lock:
            if self._phase is not Phase.SEALING:
                return
            self._looks += 1
            fate = self._fate or SnapshotFate()
            if self._looks > fate.pending_describes:
                self._set_phase(fate.final, fate.message)

    # -- answers -------------------------------------------------------------------------

    def start_answer(self) -> dict[str, Any]:
        """StartSnapshot's answer for this snapshot (replayed for a repeated ClientToken)."""
        answer: dict[str, Any] = {
            "SnapshotId": self.id,
            "OwnerId": self.owner_id,
            "Status": "pending",
            "StartTime": self.started_at,
            "VolumeSize": self.volume_gib,
            "BlockSize": BLOCK_SIZE,
            "Tags": [{"Key": k, "Value": v} for k, v in self.request["Tags"]],
        }
        if self.request["Description"] is not None:
            answer["Description"] = self.request["Description"]
        if self.kms_key_arn is not None:
            answer["KmsKeyArn"] = self.kms_key_arn
        return answer
