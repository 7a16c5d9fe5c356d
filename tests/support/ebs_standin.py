"""A strict EBS direct API (StartSnapshot, PutSnapshotBlock, CompleteSnapshot,
ListSnapshotBlocks, GetSnapshotBlock), patched into the in-process moto.

moto 5.x routes the `ebs` API in server mode and stores blocks but checks nothing: a wrong
checksum, a block index past the volume, a 50-byte block, a put after completion and a wrong
changed-block count are all accepted, it reports BlockSize 512, and reading a block never
written is a 500. With `EbsStandIn.install()` the same endpoint checks what AWS checks:

* StartSnapshot: VolumeSize 1-65536 GiB, Timeout 10-4320 minutes (60 by default), Description,
  Tags (INVALID_TAG), ClientToken idempotency (the same token and parameters replay the first
  answer; different parameters are a ConflictException), Encrypted/KmsKeyArn as the user
  guide's encryption outcomes say (a KmsKeyArn needs Encrypted=true; `encryption_by_default`
  turns the account setting on), and it answers BlockSize 524288. ParentSnapshotId is refused
  as not modelled (amibundle writes whole snapshots), after AWS's own check that it is not
  combined with Encrypted.
* PutSnapshotBlock: only while the snapshot is pending and not sealed; block index below
  VolumeSize x 2048; x-amz-Data-Length equal to the body and to 524288; ChecksumAlgorithm
  SHA256; the checksum the Base64 SHA256 of the body; a block may be overwritten.
* CompleteSnapshot: ChangedBlocksCount must equal the number of distinct blocks written; when
  a checksum is given, algorithm SHA256, method LINEAR and the value SHA256 over the blocks'
  digests in index order (`linear_checksum`). A repeat with the same parameters answers the
  current status (a retried request after a lost answer); a different one is refused.
* ListSnapshotBlocks / GetSnapshotBlock: only on completed snapshots; tokens only for blocks
  written (INVALID_BLOCK_TOKEN otherwise); MaxResults 100-10000, NextToken, StartingBlockIndex.
* ListChangedBlocks is refused as not modelled.
* EC2 DescribeSnapshots shows these snapshots (pending, then completed or error, see
  ebs_snapshots) with their tags and encryption; DeleteSnapshot removes them.

Why patch moto: the same reasons as the EC2 stand-in (ec2_standin's docstring) — one
endpoint, moto's REST-JSON parsing and serialisation, and snapshots that EC2's calls see.
"""

from __future__ import annotations

import base64
import threading
import time
import urllib.parse
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.ebs.responses import EBSResponse
from moto.ec2.responses import EC2Response
from moto.ec2.utils import random_snapshot_id

from .ebs_rules import (
    BLOCK_SIZE,
    EbsError,
    NotModelled,
    Reason,
    check_block_write,
    check_completion_checksum,
    check_snapshot_id,
    check_start,
    invalid,
    linear_checksum,
    not_found,
)
from .ebs_snapshots import DirectSnapshot, Phase, SnapshotFate
from .moto_patches import Patches, as_handler, backend_state, ec2_backend, require_moto_5

__all__ = ["EbsCall", "EbsStandIn", "Phase", "SnapshotFate"]

_TOKENS = "_standin_ebs_client_tokens"
MAX_LIST = (100, 10_000)


@dataclass(frozen=True)
class EbsCall:
    """One EBS request as received: operation, method, path, query, the x-amz-* headers and
    the body (StartSnapshot's JSON; for blocks only its length matters, so `body` is empty)."""

    operation: str
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    body_length: int


def _default_key_arn(account_id: str, region: str) -> str:
    """The stand-in's AWS managed key for EBS (aws/ebs) of one account and region."""
    return f"arn:aws:kms:{region}:{account_id}:key/00000000-0000-4000-8000-0000000000eb"


class EbsStandIn:
    """The strict EBS direct API, installed into moto for as long as `install()` lasts."""

    def __init__(self, *, account_id: str, region: str) -> None:
        self.account_id = account_id
        self.region = region
        self.snapshot_fate = SnapshotFate()
        self.encryption_by_default = False
        self._offset = 0.0
        self._patches = Patches()
        self._lock = threading.Lock()
        self._calls: list[EbsCall] = []

    # -- installing ----------------------------------------------------------------------

    def install(self) -> None:
        require_moto_5()
        if self._patches.installed:
            return
        handlers = {
            "start_snapshot": self._start_snapshot,
            "put_snapshot_block": self._put_snapshot_block,
            "complete_snapshot": self._complete_snapshot,
            "list_snapshot_blocks": self._list_snapshot_blocks,
            "get_snapshot_block": self._get_snapshot_block,
            "list_changed_blocks": self._not_modelled,
        }
        for name, method in handlers.items():
            self._patches.replace(EBSResponse, name, as_handler(method))
        call_action = EBSResponse.call_action
        describe = EC2Response.describe_snapshots

        def recording_call_action(response: Any) -> Any:
            self._record(response)
            return call_action(response)

        def looking_describe_snapshots(response: Any) -> Any:
            self._look_at_snapshots(response)
            return describe(response)

        self._patches.replace(EBSResponse, "call_action", recording_call_action)
        self._patches.replace(EC2Response, "describe_snapshots", looking_describe_snapshots)

    def uninstall(self) -> None:
        self._patches.undo()

    def reset(self) -> None:
        with self._lock:
            self._calls.clear()
        self.snapshot_fate = SnapshotFate()
        self.encryption_by_default = False
        self._offset = 0.0

    # -- what tests use ------------------------------------------------------------------

    def now(self) -> float:
        return time.monotonic() + self._offset

    def advance(self, *, minutes: float) -> None:
        """Move the stand-in's clock on (for StartSnapshot's Timeout)."""
        self._offset += minutes * 60.0

    @property
    def calls(self) -> list[EbsCall]:
        with self._lock:
            return list(self._calls)

    def calls_to(self, operation: str) -> list[EbsCall]:
        return [call for call in self.calls if call.operation == operation]

    def snapshot(self, snapshot_id: str, *, account_id: str | None = None) -> DirectSnapshot:
        found = ec2_backend(account_id or self.account_id, self.region).snapshots.get(snapshot_id)
        if not isinstance(found, DirectSnapshot):
            raise KeyError(f"no snapshot {snapshot_id} written through the EBS stand-in")
        return found

    def blocks(self, snapshot_id: str, *, account_id: str | None = None) -> dict[int, bytes]:
        """The data written to a snapshot, by block index (whatever its state)."""
        snapshot = self.snapshot(snapshot_id, account_id=account_id)
        with snapshot.lock:
            return {index: block.data for index, block in sorted(snapshot.blocks.items())}

    def fail_snapshot(
        self,
        snapshot_id: str,
        *,
        after: int = 0,
        message: str = "internal error",
        account_id: str | None = None,
    ) -> None:
        """After CompleteSnapshot, DescribeSnapshots says `pending` `after` times, then
        `error` with `message` (for a pending or sealing snapshot)."""
        fate = SnapshotFate(after, Phase.ERROR, message)
        self.snapshot(snapshot_id, account_id=account_id).set_fate(fate)

    def complete_after(
        self, snapshot_id: str, describes: int, *, account_id: str | None = None
    ) -> None:
        self.snapshot(snapshot_id, account_id=account_id).set_fate(SnapshotFate(describes))

    # -- plumbing ------------------------------------------------------------------------

    def _record(self, response: Any) -> None:
        operation = response._get_action() or ""
        body = response.raw_body if isinstance(response.raw_body, bytes) else b""
        headers = {
            k.lower(): v for k, v in response.headers.items() if k.lower().startswith("x-amz-")
        }
        call = EbsCall(
            operation=operation,
            method=response.method,
            path=response.path,
            query=urllib.parse.parse_qs(response.parsed_url.query, keep_blank_values=True),
            headers=headers,
            body=b"" if operation == "PutSnapshotBlock" else body,
            body_length=len(body),
        )
        with self._lock:
            self._calls.append(call)

    def _look_at_snapshots(self, response: Any) -> None:
        backend = response.ec2_backend
        wanted = response._get_param("SnapshotIds", []) or list(backend.snapshots)
        for snapshot_id in wanted:
            snapshot = backend.snapshots.get(snapshot_id)
            if isinstance(snapshot, DirectSnapshot):
                snapshot.refresh(self.now())
                snapshot.look()

    def _find(self, response: Any, snapshot_id: str | None) -> DirectSnapshot:
        check_snapshot_id(snapshot_id)
        assert snapshot_id is not None
        snapshot = _ec2_of(response).snapshots.get(snapshot_id)
        if not isinstance(snapshot, DirectSnapshot):
            raise not_found(snapshot_id)
        snapshot.refresh(self.now())
        return snapshot

    @staticmethod
    def _refuse_unless_open(snapshot: DirectSnapshot) -> None:
        if snapshot.timed_out:
            raise invalid(
                Reason.WRITE_REQUEST_TIMEOUT,
                f"The snapshot {snapshot.id} was cancelled: its Timeout passed",
            )
        if snapshot.phase is not Phase.OPEN:
            raise invalid(
                Reason.INVALID_SNAPSHOT_ID,
                f"The snapshot {snapshot.id} is not pending (it is {snapshot.phase.value})",
            )

    @staticmethod
    def _refuse_unless_completed(snapshot: DirectSnapshot) -> None:
        if snapshot.phase is not Phase.COMPLETED:
            raise invalid(
                Reason.INVALID_SNAPSHOT_ID,
                f"The snapshot {snapshot.id} is not completed (it is {snapshot.status})",
            )

    @staticmethod
    def _not_modelled(response: Any) -> ActionResult:
        raise NotModelled(str(response._get_action()))

    # -- the five calls ------------------------------------------------------------------

    def _start_snapshot(self, response: Any) -> ActionResult:
        names = (
            "VolumeSize",
            "ParentSnapshotId",
            "Tags",
            "Description",
            "ClientToken",
            "Encrypted",
            "KmsKeyArn",
            "Timeout",
        )
        request = check_start(
            {name: response._get_param(name) for name in names},
            encryption_by_default=self.encryption_by_default,
        )
        if request["ParentSnapshotId"] is not None:
            raise NotModelled("ParentSnapshotId")
        backend = _ec2_of(response)
        account, region = response.current_account, response.region
        key_arn = request["KmsKeyArn"] or (
            _default_key_arn(account, region) if request["Encrypted"] else None
        )
        fingerprint = tuple(sorted((k, repr(v)) for k, v in request.items()))
        tokens: dict[str, tuple[Any, dict[str, Any]]] = backend_state(backend, _TOKENS, dict)
        with self._lock:
            token = request["ClientToken"]
            if token is not None and token in tokens:
                earlier, answer = tokens[token]
                if earlier != fingerprint:
                    raise EbsError(
                        "ConflictException",
                        "The request uses the same client token as a previous, "
                        "but non-identical request.",
                    )
                return ActionResult(answer)
            snapshot = DirectSnapshot(
                backend,
                random_snapshot_id(),
                request=request,
                kms_key_arn=key_arn,
                owner_id=account,
                now=self.now(),
            )
            backend.snapshots[snapshot.id] = snapshot
            answer = snapshot.start_answer()
            if token is not None:
                tokens[token] = (fingerprint, answer)
        if request["Tags"]:
            backend.create_tags([snapshot.id], dict(request["Tags"]))
        return ActionResult(answer)

    def _put_snapshot_block(self, response: Any) -> ActionResult:
        snapshot = self._find(response, response._get_param("SnapshotId"))
        self._refuse_unless_open(snapshot)
        data = response._get_param("BlockData") or b""
        digest = check_block_write(
            index=int(response._get_param("BlockIndex")),
            volume_gib=snapshot.volume_gib,
            data=bytes(data),
            length_header=response.headers.get("x-amz-Data-Length"),
            checksum=response._get_param("Checksum"),
            algorithm=response._get_param("ChecksumAlgorithm"),
            progress=response._get_param("Progress"),
        )
        with snapshot.lock:  # the state may have changed while the block was hashed
            self._refuse_unless_open(snapshot)
            snapshot.write(int(response._get_param("BlockIndex")), bytes(data), digest, self.now())
        checksum = base64.b64encode(digest).decode("ascii")
        return ActionResult({"Checksum": checksum, "ChecksumAlgorithm": "SHA256"})

    def _complete_snapshot(self, response: Any) -> ActionResult:
        snapshot = self._find(response, response._get_param("SnapshotId"))
        count = response._get_param("ChangedBlocksCount")
        checksum = response._get_param("Checksum")
        algorithm = response._get_param("ChecksumAlgorithm")
        method = response._get_param("ChecksumAggregationMethod")
        completion = (count, checksum, algorithm, method)
        with snapshot.lock:
            if (
                snapshot.phase in (Phase.SEALING, Phase.COMPLETED)
                and snapshot.completion == completion
            ):
                return ActionResult({"Status": snapshot.status})
            self._refuse_unless_open(snapshot)
            if count is None:
                raise invalid(Reason.INVALID_PARAMETER_VALUE, "ChangedBlocksCount is required")
            if int(count) != len(snapshot.blocks):
                raise invalid(
                    Reason.INVALID_PARAMETER_VALUE,
                    f"ChangedBlocksCount is {count} but {len(snapshot.blocks)} blocks were written",
                )
            if check_completion_checksum(
                checksum, algorithm, method
            ) and checksum != linear_checksum(snapshot.digests_in_order()):
                raise invalid(
                    Reason.INVALID_PARAMETER_VALUE,
                    "The aggregated checksum does not match the blocks written",
                )
            snapshot.seal(self.snapshot_fate, completion)
            return ActionResult({"Status": snapshot.status})

    def _list_snapshot_blocks(self, response: Any) -> ActionResult:
        snapshot = self._find(response, response._get_param("SnapshotId"))
        self._refuse_unless_completed(snapshot)
        limit = response._get_param("MaxResults")
        limit = MAX_LIST[1] if limit is None else int(limit)
        if not MAX_LIST[0] <= limit <= MAX_LIST[1]:
            raise invalid(Reason.INVALID_PARAMETER_VALUE, "MaxResults must be 100-10000")
        start = _page_start(
            response._get_param("NextToken"), response._get_param("StartingBlockIndex")
        )
        with snapshot.lock:
            indexes = sorted(i for i in snapshot.blocks if i >= start)
            page = [
                {"BlockIndex": i, "BlockToken": snapshot.blocks[i].token} for i in indexes[:limit]
            ]
        answer: dict[str, Any] = {
            "Blocks": page,
            "ExpiryTime": utcnow() + timedelta(hours=1),
            "VolumeSize": snapshot.volume_gib,
            "BlockSize": BLOCK_SIZE,
        }
        if len(indexes) > limit:
            answer["NextToken"] = f"from-{indexes[limit]}"
        return ActionResult(answer)

    def _get_snapshot_block(self, response: Any) -> ActionResult:
        snapshot = self._find(response, response._get_param("SnapshotId"))
        self._refuse_unless_completed(snapshot)
        index = int(response._get_param("BlockIndex"))
        token = response._get_param("BlockToken")
        block = snapshot.blocks.get(index)
        if block is None or token != block.token:
            raise invalid(
                Reason.INVALID_BLOCK_TOKEN,
                f"The block token is not valid for block {index} of {snapshot.id}",
            )
        return ActionResult(
            {
                "DataLength": len(block.data),
                "BlockData": block.data,
                "Checksum": block.checksum,
                "ChecksumAlgorithm": "SHA256",
            }
        )


def _ec2_of(response: Any) -> Any:
    """The EC2 backend (where snapshots live) of the account and region an EBS request is for."""
    return ec2_backend(response.current_account, response.region)


def _page_start(token: str | None, starting_index: int | None) -> int:
    """ListSnapshotBlocks: NextToken wins over StartingBlockIndex."""
    if token is None:
        return 0 if starting_index is None else int(starting_index)
    if not token.startswith("from-") or not token[len("from-") :].isdigit():
        raise invalid(Reason.INVALID_PAGE_TOKEN, f"The page token '{token}' is not valid")
    return int(token[len("from-") :])
