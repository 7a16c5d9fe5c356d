"""The strict EBS direct API stand-in, driven with plain boto3: a snapshot written, completed
and read back; every refusal moto alone lets through, with AWS's exception and Reason; and
the snapshot's state as EC2 DescribeSnapshots shows it.

Checksums here are computed with hashlib, independently of the stand-in's own code.
"""

from __future__ import annotations

import base64
import hashlib
import random
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support.aws import AwsStandIn
from tests.support.ebs_snapshots import Phase, SnapshotFate
from tests.support.s3proxy import Proxy

BLOCK = 524_288


def block(seed: int) -> bytes:
    return random.Random(seed).randbytes(BLOCK)


def b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def linear(blocks: dict[int, bytes]) -> str:
    """SHA256 over the per-block SHA256 digests in block-index order, Base64."""
    digests = b"".join(hashlib.sha256(blocks[i]).digest() for i in sorted(blocks))
    return b64_sha256(digests)


def put(ebs: Any, snapshot_id: str, index: int, data: bytes, **overrides: Any) -> Any:
    request = {
        "SnapshotId": snapshot_id,
        "BlockIndex": index,
        "BlockData": data,
        "DataLength": len(data),
        "Checksum": b64_sha256(data),
        "ChecksumAlgorithm": "SHA256",
        **overrides,
    }
    return ebs.put_snapshot_block(**request)


def refusal(error: pytest.ExceptionInfo[ClientError]) -> tuple[str, str | None, int]:
    response = error.value.response
    return (
        str(response["Error"]["Code"]),
        response.get("Reason"),
        int(response["ResponseMetadata"]["HTTPStatusCode"]),
    )


def state(aws: AwsStandIn, snapshot_id: str) -> str:
    snapshots = aws.client("ec2").describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
    return str(snapshots[0]["State"])


def started(aws: AwsStandIn, gib: int = 1, **extra: Any) -> str:
    return str(aws.client("ebs").start_snapshot(VolumeSize=gib, **extra)["SnapshotId"])


# -- a snapshot, start to finish --------------------------------------------------------


def test_write_complete_and_read_back(aws: AwsStandIn, aws_proxy: Proxy) -> None:
    ebs = aws.client("ebs", endpoint_url=aws_proxy.endpoint_url)
    answer = ebs.start_snapshot(
        VolumeSize=2, Description="root", Tags=[{"Key": "Name", "Value": "t"}], Timeout=30
    )
    assert (answer["BlockSize"], answer["VolumeSize"], answer["Status"]) == (BLOCK, 2, "pending")
    assert answer["OwnerId"] == aws.account_id
    snapshot_id = answer["SnapshotId"]
    written = {4095: block(1), 0: block(2), 7: block(3)}  # the last block of 2 GiB, out of order
    for index, data in written.items():
        put(ebs, snapshot_id, index, data, Progress=50)
    assert state(aws, snapshot_id) == "pending"

    status = ebs.complete_snapshot(
        SnapshotId=snapshot_id,
        ChangedBlocksCount=3,
        Checksum=linear(written),
        ChecksumAlgorithm="SHA256",
        ChecksumAggregationMethod="LINEAR",
    )["Status"]
    assert status == "pending"
    assert [state(aws, snapshot_id) for _ in range(2)] == ["pending", "completed"]

    listed = ebs.list_snapshot_blocks(SnapshotId=snapshot_id)
    assert (listed["BlockSize"], listed["VolumeSize"]) == (BLOCK, 2)
    assert [b["BlockIndex"] for b in listed["Blocks"]] == [0, 7, 4095]
    for entry in listed["Blocks"]:
        got = ebs.get_snapshot_block(
            SnapshotId=snapshot_id, BlockIndex=entry["BlockIndex"], BlockToken=entry["BlockToken"]
        )
        data = got["BlockData"].read()
        assert data == written[entry["BlockIndex"]]
        assert (got["DataLength"], got["Checksum"]) == (BLOCK, b64_sha256(data))
    # The proxy saw every request; the block headers as sent are there to check.
    puts = [r for r in aws_proxy.requests if r.method == "PUT"]
    assert [r.headers["x-amz-checksum"] for r in puts] == [b64_sha256(d) for d in written.values()]
    assert {r.headers["x-amz-data-length"] for r in puts} == {str(BLOCK)}
    assert aws.ebs.blocks(snapshot_id) == dict(sorted(written.items()))
    described = aws.client("ec2").describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
    assert (described["VolumeSize"], described["Description"]) == (2, "root")
    assert described["Tags"] == [{"Key": "Name", "Value": "t"}]


def test_a_block_may_be_overwritten_and_counts_once(aws: AwsStandIn) -> None:
    ebs = aws.client("ebs")
    snapshot_id = started(aws)
    put(ebs, snapshot_id, 3, block(1))
    put(ebs, snapshot_id, 3, block(2))
    ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=1)
    assert aws.ebs.blocks(snapshot_id) == {3: block(2)}


def test_the_aggregate_is_in_index_order_not_write_order(aws: AwsStandIn) -> None:
    ebs = aws.client("ebs")
    snapshot_id = started(aws)
    written = {9: block(9), 1: block(1)}
    for index, data in written.items():
        put(ebs, snapshot_id, index, data)
    in_write_order = b64_sha256(b"".join(hashlib.sha256(d).digest() for d in written.values()))
    checksum = {"ChecksumAlgorithm": "SHA256", "ChecksumAggregationMethod": "LINEAR"}
    with pytest.raises(ClientError) as error:
        ebs.complete_snapshot(
            SnapshotId=snapshot_id, ChangedBlocksCount=2, Checksum=in_write_order, **checksum
        )
    assert refusal(error)[0] == "ValidationException"
    ebs.complete_snapshot(
        SnapshotId=snapshot_id, ChangedBlocksCount=2, Checksum=linear(written), **checksum
    )


def test_a_repeated_completion_answers_again(aws: AwsStandIn) -> None:
    """A CompleteSnapshot retried after its answer was lost must not fail the upload."""
    ebs = aws.client("ebs")
    snapshot_id = started(aws)
    put(ebs, snapshot_id, 0, block(0))
    assert (
        ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=1)["Status"] == "pending"
    )
    assert (
        ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=1)["Status"] == "pending"
    )
    with pytest.raises(ClientError) as error:
        ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=2)
    assert refusal(error)[:2] == ("ValidationException", "INVALID_SNAPSHOT_ID")


# -- PutSnapshotBlock refusals ----------------------------------------------------------

PUT_REFUSALS: list[tuple[str, int, bytes, dict[str, Any], str]] = [
    ("wrong checksum", 0, block(0), {"Checksum": b64_sha256(b"other")}, "INVALID_PARAMETER_VALUE"),
    ("checksum not base64 sha256", 0, block(0), {"Checksum": "abc="}, "INVALID_PARAMETER_VALUE"),
    ("wrong algorithm", 0, block(0), {"ChecksumAlgorithm": "SHA1"}, "INVALID_PARAMETER_VALUE"),
    ("50-byte block", 0, b"x" * 50, {}, "INVALID_PARAMETER_VALUE"),
    ("block one byte long", 0, block(0) + b"x", {}, "INVALID_PARAMETER_VALUE"),
    ("length header lies", 0, block(0)[:1000], {"DataLength": BLOCK}, "INVALID_PARAMETER_VALUE"),
    ("index past a 1 GiB volume", 2048, block(0), {}, "INVALID_BLOCK"),
    ("negative index", -1, block(0), {}, "INVALID_BLOCK"),
    ("progress over 100", 0, block(0), {"Progress": 101}, "INVALID_PARAMETER_VALUE"),
]


@pytest.mark.parametrize(
    ("case", "index", "data", "overrides", "reason"), PUT_REFUSALS, ids=[c[0] for c in PUT_REFUSALS]
)
def test_put_refusals(
    aws: AwsStandIn, case: str, index: int, data: bytes, overrides: dict[str, Any], reason: str
) -> None:
    snapshot_id = started(aws, gib=1)
    if "Checksum" not in overrides:
        overrides["Checksum"] = b64_sha256(data)
    ebs = aws.client("ebs", parameter_validation=False)
    with pytest.raises(ClientError) as error:
        put(ebs, snapshot_id, index, data, **overrides)
    assert refusal(error) == ("ValidationException", reason, 400)
    assert aws.ebs.blocks(snapshot_id) == {}
    put(ebs, snapshot_id, 2047, block(0))  # the last block of 1 GiB is fine


def test_puts_only_while_pending(aws: AwsStandIn) -> None:
    ebs = aws.client("ebs")
    snapshot_id = started(aws)
    put(ebs, snapshot_id, 0, block(0))
    ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=1)
    for _ in range(2):  # sealing (EC2 still says pending), then completed
        with pytest.raises(ClientError) as error:
            put(ebs, snapshot_id, 1, block(1))
        assert refusal(error)[:2] == ("ValidationException", "INVALID_SNAPSHOT_ID")
        state(aws, snapshot_id)
    assert state(aws, snapshot_id) == "completed"


def test_unknown_and_malformed_snapshots(aws: AwsStandIn) -> None:
    ebs = aws.client("ebs", parameter_validation=False)
    with pytest.raises(ClientError) as error:
        put(ebs, "snap-0123456789abcdef0", 0, block(0))
    assert refusal(error) == ("ResourceNotFoundException", "SNAPSHOT_NOT_FOUND", 404)
    with pytest.raises(ClientError) as error:
        ebs.complete_snapshot(SnapshotId="snapshot-1", ChangedBlocksCount=0)
    assert refusal(error)[:2] == ("ValidationException", "INVALID_SNAPSHOT_ID")


# -- CompleteSnapshot refusals ----------------------------------------------------------

LINEAR = {"ChecksumAlgorithm": "SHA256", "ChecksumAggregationMethod": "LINEAR"}
COMPLETE_REFUSALS: list[tuple[str, dict[str, Any]]] = [
    ("count too low", {"ChangedBlocksCount": 1}),
    ("count too high", {"ChangedBlocksCount": 3}),
    ("aggregate of other data", {"Checksum": b64_sha256(b"x"), **LINEAR}),
    ("aggregate over base64 text", {"Checksum": "{text}", **LINEAR}),
    ("checksum without algorithm", {"Checksum": "{linear}"}),
    (
        "method not LINEAR",
        {
            "Checksum": "{linear}",
            "ChecksumAlgorithm": "SHA256",
            "ChecksumAggregationMethod": "TREE",
        },
    ),
]


@pytest.mark.parametrize(
    ("case", "overrides"), COMPLETE_REFUSALS, ids=[c[0] for c in COMPLETE_REFUSALS]
)
def test_complete_refusals(aws: AwsStandIn, case: str, overrides: dict[str, Any]) -> None:
    ebs = aws.client("ebs")
    snapshot_id = started(aws)
    written = {0: block(0), 5: block(5)}
    for index, data in written.items():
        put(ebs, snapshot_id, index, data)
    as_text = b64_sha256("".join(b64_sha256(written[i]) for i in sorted(written)).encode())
    values = {"{linear}": linear(written), "{text}": as_text}
    request = {"SnapshotId": snapshot_id, "ChangedBlocksCount": 2, **overrides}
    request = {k: values.get(v, v) if isinstance(v, str) else v for k, v in request.items()}
    with pytest.raises(ClientError) as error:
        ebs.complete_snapshot(**request)
    assert refusal(error) == ("ValidationException", "INVALID_PARAMETER_VALUE", 400)
    assert state(aws, snapshot_id) == "pending"
    ebs.complete_snapshot(
        SnapshotId=snapshot_id, ChangedBlocksCount=2, Checksum=linear(written), **LINEAR
    )


# -- reading ----------------------------------------------------------------------------


def test_reads_only_on_completed_snapshots_with_real_tokens(aws: AwsStandIn) -> None:
    ebs = aws.client("ebs")
    snapshot_id = started(aws)
    put(ebs, snapshot_id, 1, block(1))
    with pytest.raises(ClientError) as error:
        ebs.list_snapshot_blocks(SnapshotId=snapshot_id)
    assert refusal(error)[:2] == ("ValidationException", "INVALID_SNAPSHOT_ID")
    aws.ebs.snapshot_fate = SnapshotFate(pending_describes=0)
    ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=1)
    token = ebs.list_snapshot_blocks(SnapshotId=snapshot_id)["Blocks"][0]["BlockToken"]
    for index, bad_token in [(1, "bm90LWEtdG9rZW4="), (0, token), (2, token)]:
        with pytest.raises(ClientError) as error:
            ebs.get_snapshot_block(SnapshotId=snapshot_id, BlockIndex=index, BlockToken=bad_token)
        assert refusal(error)[:2] == ("ValidationException", "INVALID_BLOCK_TOKEN")


def test_list_pages(aws: AwsStandIn) -> None:
    ebs = aws.client("ebs", parameter_validation=False)
    snapshot_id = started(aws)
    data = block(0)
    digest = hashlib.sha256(data).digest()
    snapshot = aws.ebs.snapshot(snapshot_id)
    for index in range(0, 2048, 8):  # 256 blocks, stored directly: this test is about listing
        snapshot.write(index, data, digest, aws.ebs.now())
    aws.ebs.snapshot_fate = SnapshotFate(pending_describes=0)
    ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=256)
    first = ebs.list_snapshot_blocks(SnapshotId=snapshot_id, MaxResults=100)
    second = ebs.list_snapshot_blocks(
        SnapshotId=snapshot_id, MaxResults=100, NextToken=first["NextToken"]
    )
    third = ebs.list_snapshot_blocks(SnapshotId=snapshot_id, NextToken=second["NextToken"])
    indexes = [b["BlockIndex"] for page in (first, second, third) for b in page["Blocks"]]
    assert indexes == list(range(0, 2048, 8))
    assert "NextToken" not in third
    late = ebs.list_snapshot_blocks(SnapshotId=snapshot_id, StartingBlockIndex=2000)
    assert [b["BlockIndex"] for b in late["Blocks"]] == list(range(2000, 2048, 8))
    refusals: list[tuple[dict[str, Any], str]] = [
        ({"MaxResults": 99}, "INVALID_PARAMETER_VALUE"),
        ({"NextToken": "x"}, "INVALID_PAGE_TOKEN"),
    ]
    for query, reason in refusals:
        with pytest.raises(ClientError) as error:
            ebs.list_snapshot_blocks(SnapshotId=snapshot_id, **query)
        assert refusal(error)[:2] == ("ValidationException", reason)


# -- StartSnapshot ----------------------------------------------------------------------


def test_client_token_replays_or_conflicts(aws: AwsStandIn) -> None:
    ebs = aws.client("ebs")
    first = ebs.start_snapshot(VolumeSize=1, ClientToken="to-ebs-1", Description="a")
    again = ebs.start_snapshot(VolumeSize=1, ClientToken="to-ebs-1", Description="a")
    assert again["SnapshotId"] == first["SnapshotId"]
    assert len(aws.client("ec2").describe_snapshots()["Snapshots"]) == 1
    with pytest.raises(ClientError) as error:
        ebs.start_snapshot(VolumeSize=2, ClientToken="to-ebs-1", Description="a")
    assert refusal(error)[0::2] == ("ConflictException", 409)
    assert ebs.start_snapshot(VolumeSize=1, Description="a")["SnapshotId"] != first["SnapshotId"]


KEY_ARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
START_REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    ("volume 0 GiB", {"VolumeSize": 0}, "INVALID_VOLUME_SIZE"),
    ("volume over 64 TiB", {"VolumeSize": 65537}, "INVALID_VOLUME_SIZE"),
    ("timeout 5 minutes", {"Timeout": 5}, "INVALID_PARAMETER_VALUE"),
    ("timeout over 3 days", {"Timeout": 4321}, "INVALID_PARAMETER_VALUE"),
    ("description too long", {"Description": "d" * 256}, "INVALID_PARAMETER_VALUE"),
    ("aws: tag", {"Tags": [{"Key": "aws:x", "Value": "v"}]}, "INVALID_TAG"),
    ("tag key too long", {"Tags": [{"Key": "k" * 128, "Value": "v"}]}, "INVALID_TAG"),
    (
        "tag twice",
        {"Tags": [{"Key": "k", "Value": "1"}, {"Key": "k", "Value": "2"}]},
        "INVALID_TAG",
    ),
    ("key without Encrypted", {"KmsKeyArn": KEY_ARN}, "INVALID_PARAMETER_VALUE"),
    (
        "key with Encrypted=false",
        {"KmsKeyArn": KEY_ARN, "Encrypted": False},
        "INVALID_PARAMETER_VALUE",
    ),
    ("key not an ARN", {"KmsKeyArn": "alias/mine", "Encrypted": True}, "INVALID_CUSTOMER_KEY"),
    (
        "parent and Encrypted",
        {"ParentSnapshotId": "snap-0123456789abcdef0", "Encrypted": True},
        "INVALID_PARAMETER_VALUE",
    ),
]


@pytest.mark.parametrize(
    ("case", "overrides", "reason"), START_REFUSALS, ids=[c[0] for c in START_REFUSALS]
)
def test_start_refusals(aws: AwsStandIn, case: str, overrides: dict[str, Any], reason: str) -> None:
    ebs = aws.client("ebs", parameter_validation=False)
    with pytest.raises(ClientError) as error:
        ebs.start_snapshot(**{"VolumeSize": 1, **overrides})
    assert refusal(error) == ("ValidationException", reason, 400)
    assert aws.client("ec2").describe_snapshots()["Snapshots"] == []


def test_encryption(aws: AwsStandIn) -> None:
    ebs, ec2 = aws.client("ebs"), aws.client("ec2")
    chosen = ebs.start_snapshot(VolumeSize=1, Encrypted=True, KmsKeyArn=KEY_ARN)
    assert chosen["KmsKeyArn"] == KEY_ARN
    default = ebs.start_snapshot(VolumeSize=1, Encrypted=True)
    assert default["KmsKeyArn"].startswith(f"arn:aws:kms:{aws.region}:{aws.account_id}:key/")
    plain = ebs.start_snapshot(VolumeSize=1)
    assert "KmsKeyArn" not in plain
    shown = {s["SnapshotId"]: s for s in ec2.describe_snapshots()["Snapshots"]}
    assert (shown[chosen["SnapshotId"]]["Encrypted"], shown[chosen["SnapshotId"]]["KmsKeyId"]) == (
        True,
        KEY_ARN,
    )
    assert shown[plain["SnapshotId"]]["Encrypted"] is False

    aws.ebs.encryption_by_default = True
    with pytest.raises(ClientError) as error:
        ebs.start_snapshot(VolumeSize=1, Encrypted=False)
    assert refusal(error)[:2] == ("ValidationException", "INVALID_PARAMETER_VALUE")
    assert "KmsKeyArn" in ebs.start_snapshot(VolumeSize=1)


def test_parent_snapshots_are_not_modelled(aws: AwsStandIn) -> None:
    with pytest.raises(ClientError) as error:
        aws.client("ebs").start_snapshot(VolumeSize=1, ParentSnapshotId=started(aws))
    assert refusal(error)[0] == "NotImplementedByStandIn"


def test_timeout_cancels_a_snapshot(aws: AwsStandIn) -> None:
    ebs = aws.client("ebs")
    snapshot_id = started(aws, Timeout=10)
    aws.ebs.advance(minutes=9)
    put(ebs, snapshot_id, 0, block(0))  # a write restarts the clock
    aws.ebs.advance(minutes=9)
    put(ebs, snapshot_id, 1, block(1))
    aws.ebs.advance(minutes=11)
    with pytest.raises(ClientError) as error:
        put(ebs, snapshot_id, 2, block(2))
    assert refusal(error)[:2] == ("ValidationException", "WRITE_REQUEST_TIMEOUT")
    with pytest.raises(ClientError) as error:
        ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=2)
    assert refusal(error)[:2] == ("ValidationException", "WRITE_REQUEST_TIMEOUT")
    shown = aws.client("ec2").describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
    assert (shown["State"], shown["StateMessage"]) == ("error", "timed out")


# -- EC2's view: states for --wait, DeleteSnapshot --------------------------------------


def test_a_snapshot_can_be_made_to_fail_after_completion(aws: AwsStandIn) -> None:
    ebs = aws.client("ebs")
    snapshot_id = started(aws)
    aws.ebs.fail_snapshot(snapshot_id, after=2, message="copy failed")
    ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=0)
    assert [state(aws, snapshot_id) for _ in range(3)] == ["pending", "pending", "error"]
    assert aws.ebs.snapshot(snapshot_id).phase is Phase.ERROR

    aws.ebs.snapshot_fate = SnapshotFate(3)
    other = started(aws)
    ebs.complete_snapshot(SnapshotId=other, ChangedBlocksCount=0)
    assert [state(aws, other) for _ in range(4)] == ["pending"] * 3 + ["completed"]

    quick = started(aws)
    aws.ebs.complete_after(quick, 0)  # this one overrides the stand-in's fate
    assert ebs.complete_snapshot(SnapshotId=quick, ChangedBlocksCount=0)["Status"] == "completed"


def test_delete_snapshot(aws: AwsStandIn) -> None:
    ebs, ec2 = aws.client("ebs"), aws.client("ec2")
    snapshot_id = started(aws)
    ec2.delete_snapshot(SnapshotId=snapshot_id)
    with pytest.raises(ClientError) as error:
        put(ebs, snapshot_id, 0, block(0))
    assert refusal(error)[0] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as error:
        ec2.delete_snapshot(SnapshotId=snapshot_id)
    assert error.value.response["Error"]["Code"] == "InvalidSnapshot.NotFound"


def test_moto_alone_accepts_a_wrong_checksum(aws: AwsStandIn) -> None:
    """Why the stand-in exists: moto's own EBS stores a block whatever its checksum."""
    aws.ebs.uninstall()
    try:
        ebs = aws.client("ebs")
        snapshot_id = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
        put(ebs, snapshot_id, 99_999, b"x" * 50, Checksum=b64_sha256(b"other"))
    finally:
        aws.ebs.install()
    with pytest.raises(ClientError):
        put(aws.client("ebs"), started(aws), 0, b"x" * 50)
