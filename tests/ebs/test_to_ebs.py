"""to-ebs against the strict EBS stand-in, through the recording, fault-injecting proxy: the
snapshot read back with ListSnapshotBlocks/GetSnapshotBlock equals the image (all-zero
blocks absent), for sparse, dense and odd-sized images, a 16 GiB sparse one and a raw image
file; faults on the way still give a correct snapshot; a tampered bundle never gives a
completed one.

Expected blocks are cut from the image here, with plain reads (tests.support.ebs_readback),
and the LINEAR checksum is recomputed with hashlib; the stand-in checks every block's
checksum, the changed-block count and the aggregate on its own as well.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

import amibundle
from amibundle.cli import main
from amibundle.ebs import SnapshotSpec, bundle_to_snapshot, image_to_snapshot
from amibundle.errors import EbsError, IntegrityError, UsageError
from amibundle.progress import NullProgress, Stage
from amibundle.s3.settings import S3Settings
from tests.support.aws import AwsStandIn
from tests.support.bundling import bundle_for
from tests.support.common import Identity, write_image
from tests.support.ebs_readback import BLOCK, image_blocks, read_back
from tests.support.ebs_snapshots import Phase, SnapshotFate
from tests.support.s3proxy import Faults, Proxy

MIB = 1 << 20
GIB = 1 << 30
KEY_ARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def rnd(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def sparse_image(path: Path) -> Path:
    """8 MiB: data at a block's start, inside a block, across a boundary, a written run of
    zeros two blocks long, holes between and at the end."""
    return write_image(path, 8 * MIB, [
        (0, rnd(1, 4096)),
        (BLOCK + 1000, rnd(2, 300)),
        (3 * BLOCK - 10, rnd(3, 20)),
        (4 * BLOCK, bytes(2 * BLOCK)),
        (7 * BLOCK + 7, b"end of the data"),
    ])  # fmt: skip


def dense_image(path: Path) -> Path:
    """3 MiB written end to end (no hole), with one whole block of written zeros."""
    data = bytearray(rnd(4, 3 * MIB))
    data[2 * BLOCK : 3 * BLOCK] = bytes(BLOCK)
    path.write_bytes(data)
    return path


def odd_image(path: Path) -> Path:
    """Not a multiple of 512 KiB (nor of 512): data up to the last byte."""
    size = 2 * MIB + 300_001
    return write_image(path, size, [(MIB, rnd(5, 70_000)), (size - 5000, rnd(6, 5000))])


IMAGES = {"sparse": sparse_image, "dense": dense_image, "odd-size": odd_image}


@dataclass(frozen=True)
class Bundle:
    image: Path
    manifest: Path
    digest: str


@pytest.fixture
def env(aws: AwsStandIn, aws_proxy: Proxy, monkeypatch: pytest.MonkeyPatch) -> Proxy:
    """boto3 in this process talks to the stand-in through the proxy (AWS_ENDPOINT_URL)."""
    for name, value in aws.environment(aws_proxy.endpoint_url).items():
        monkeypatch.setenv(name, value)
    return aws_proxy


def make_bundle(tmp_path: Path, user_id: Identity, kind: str, **options: object) -> Bundle:
    image = IMAGES[kind](tmp_path / f"{kind}.img")
    out = tmp_path / "bundle"
    out.mkdir(exist_ok=True)
    result = bundle_for(image, user_id, destination=out, part_size=256 * 1024, **options)
    return Bundle(image, result.manifest_path, result.digest)


def linear(blocks: dict[int, bytes]) -> str:
    digests = b"".join(hashlib.sha256(blocks[i]).digest() for i in sorted(blocks))
    return base64.b64encode(hashlib.sha256(digests).digest()).decode()


def b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def blocks_of(aws: AwsStandIn, snapshot_id: str) -> dict[int, bytes]:
    return read_back(aws.client("ebs"), snapshot_id, ec2=aws.client("ec2")).blocks


def snapshots(aws: AwsStandIn) -> dict[str, str]:
    """Every snapshot EC2 shows, with its state (this looks, so a sealing one moves on)."""
    found = aws.client("ec2").describe_snapshots(OwnerIds=["self"])["Snapshots"]
    return {s["SnapshotId"]: s["State"] for s in found}


# --- snapshots equal their images ---------------------------------------------------------


@pytest.mark.parametrize("kind", list(IMAGES))
def test_a_bundle_becomes_a_snapshot_equal_to_its_image(
    kind: str, env: Proxy, aws: AwsStandIn, tmp_path: Path, user_id: Identity
) -> None:
    bundle = make_bundle(tmp_path, user_id, kind)
    result = bundle_to_snapshot(bundle.manifest, private_key=user_id.key, cert=user_id.cert)
    expected = image_blocks(bundle.image)
    back = read_back(aws.client("ebs"), result.snapshot_id, ec2=aws.client("ec2"))
    assert back.blocks == expected  # all-zero blocks are not in the listing
    assert back.volume_gib == result.volume_size == 1
    assert (result.blocks_written, result.bytes_sent) == (len(expected), len(expected) * BLOCK)
    assert result.digest == bundle.digest
    assert result.image_size == bundle.image.stat().st_size
    # What was sent, as the proxy saw it: one PUT per data block, each with its checksum,
    # then one completion with the count and the LINEAR aggregate.
    puts = [r for r in env.requests if r.method == "PUT"]
    assert sorted(int(r.path.rsplit("/", 1)[1]) for r in puts) == sorted(expected)
    for request in puts:
        assert request.headers["x-amz-checksum-algorithm"] == "SHA256"
        assert request.headers["x-amz-data-length"] == str(BLOCK)
    assert {r.headers["x-amz-checksum"] for r in puts} == {b64_sha256(b) for b in expected.values()}
    (done,) = [r for r in env.requests if "/completion/" in r.path]
    assert done.headers["x-amz-changedblockscount"] == str(len(expected))
    assert done.headers["x-amz-checksum"] == linear(expected)
    assert done.headers["x-amz-checksum-aggregation-method"] == "LINEAR"
    assert snapshots(aws) == {result.snapshot_id: "completed"}


def test_a_16_gib_sparse_image_costs_its_data(
    env: Proxy, aws: AwsStandIn, tmp_path: Path, user_id: Identity
) -> None:
    """Holes are never read, cut or sent: both the bundle and the raw image of a 16 GiB
    image with 2 MiB of data send exactly its data blocks (the suite's timeout would catch
    a walk over 16 GiB of zeros)."""
    size = 16 * GIB
    writes = [
        (0, rnd(7, MIB)),
        (5 * GIB + 12345, rnd(8, 200_000)),
        (size - 700_000, rnd(9, 700_000)),
    ]
    image = write_image(tmp_path / "big.img", size, writes)
    out = tmp_path / "bundle"
    out.mkdir()
    bundle = bundle_for(image, user_id, destination=out, size_checks=False)
    expected = image_blocks(image)
    assert len(expected) == 2 + 1 + 2
    for result in (
        bundle_to_snapshot(bundle.manifest_path, private_key=user_id.key),
        image_to_snapshot(image),
    ):
        assert result.volume_size == 16 and result.blocks_written == len(expected)
        assert blocks_of(aws, result.snapshot_id) == expected
    assert len([r for r in env.requests if r.method == "PUT"]) == 2 * len(expected)


def test_a_raw_image_file_through_the_command(
    env: Proxy, aws: AwsStandIn, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = sparse_image(tmp_path / "raw.img")
    assert main(["to-ebs", "-i", str(image), "--json", "--tag", "Name=raw", "--arch", "i386"]) == 0
    report = json.loads(capsys.readouterr().out)
    expected = image_blocks(image)
    assert blocks_of(aws, report["snapshot_id"]) == expected
    assert (report["blocks_written"], report["bytes_sent"]) == (
        len(expected),
        len(expected) * BLOCK,
    )
    assert report["digest"] is None and report["bootable"] is None
    assert report["registration"]["architecture"] == "i386"
    assert report["registration"]["virtualization_type"] == "paravirtual"


# --- what StartSnapshot is asked for -----------------------------------------------------


def test_start_parameters_as_sent(
    env: Proxy, aws: AwsStandIn, tmp_path: Path, user_id: Identity
) -> None:
    bundle = make_bundle(tmp_path, user_id, "sparse")
    spec = SnapshotSpec(
        size_gib=3, description="root of web-1", tags={"Name": "web-1", "team": ""},
        kms_key_arn=KEY_ARN, timeout_minutes=30, client_token="to-ebs-test-1",
    )  # fmt: skip
    result = bundle_to_snapshot(bundle.manifest, private_key=user_id.key, snapshot=spec)
    (start,) = aws.ebs.calls_to("StartSnapshot")
    sent = json.loads(start.body)
    assert sent == {
        "VolumeSize": 3,
        "Timeout": 30,
        "ClientToken": "to-ebs-test-1",
        "Description": "root of web-1",
        "Tags": [{"Key": "Name", "Value": "web-1"}, {"Key": "team", "Value": ""}],
        "Encrypted": True,  # a key implies it
        "KmsKeyArn": KEY_ARN,
    }
    shown = aws.client("ec2").describe_snapshots(SnapshotIds=[result.snapshot_id])["Snapshots"]
    assert (shown[0]["VolumeSize"], shown[0]["Encrypted"], shown[0]["KmsKeyId"]) == (
        3,
        True,
        KEY_ARN,
    )


def test_a_client_token_is_made_per_run() -> None:
    assert SnapshotSpec().client_token is None  # the session makes one


def test_a_volume_too_small_or_a_bad_endpoint_is_refused_before_any_request(
    env: Proxy, aws: AwsStandIn, tmp_path: Path, user_id: Identity
) -> None:
    image = write_image(tmp_path / "two.img", GIB + 1, [(GIB, b"x")])
    with pytest.raises(UsageError, match=r"size_gib= 1 GiB is too small: the disk needs 2 GiB"):
        image_to_snapshot(image, snapshot=SnapshotSpec(size_gib=1))
    # EC2's endpoint is used only on a failure or to wait: it is checked at once all the same.
    with pytest.raises(UsageError, match=r"ec2_url= 'ec2\.local' is not an http\(s\)://HOST"):
        image_to_snapshot(image, ec2_url="ec2.local")
    assert env.requests == []


# --- faults ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("fast_retries")
def test_faults_on_a_fifth_of_the_puts_still_give_a_correct_snapshot(
    env: Proxy, aws: AwsStandIn, tmp_path: Path, user_id: Identity
) -> None:
    image = write_image(
        tmp_path / "many.img", 24 * MIB, [(i * BLOCK, rnd(i, BLOCK - 1)) for i in range(0, 48, 1)]
    )
    out = tmp_path / "bundle"
    out.mkdir()
    bundle = bundle_for(image, user_id, destination=out)
    env.set_faults(Faults(error_rate=0.1, reset_rate=0.1, methods=frozenset({"PUT"}), seed=3))
    result = bundle_to_snapshot(
        bundle.manifest_path, private_key=user_id.key, settings=S3Settings(jobs=4)
    )
    assert blocks_of(aws, result.snapshot_id) == image_blocks(image)
    kinds = {r.fault for r in env.requests if r.fault}
    assert (
        env.faults_injected >= 5 and {"drop", "cut"} & kinds and {"500", "503", "SlowDown"} & kinds
    )
    assert snapshots(aws) == {result.snapshot_id: "completed"}


@pytest.mark.usefixtures("fast_retries")
@pytest.mark.parametrize("seed", [0, 1], ids=["answer-lost", "request-lost"])
def test_a_lost_start_or_completion_is_retried_safely(
    seed: int, env: Proxy, aws: AwsStandIn, tmp_path: Path, user_id: Identity
) -> None:
    """The first StartSnapshot and the CompleteSnapshot each lose their answer (seed 0:
    done upstream, answer cut) or their request (seed 1): the retried start comes back with
    the same snapshot (ClientToken), the retried completion is answered again."""
    bundle = make_bundle(tmp_path, user_id, "sparse")
    lose_next_post = Faults(reset_rate=1.0, methods=frozenset({"POST"}), max_faults=1, seed=seed)
    env.set_faults(lose_next_post)

    class LoseCompletion(NullProgress):
        def finish(self, stage: Stage, error: BaseException | None = None) -> None:
            env.set_faults(lose_next_post)  # the stream is through: the next POST completes

    result = bundle_to_snapshot(bundle.manifest, private_key=user_id.key, progress=LoseCompletion())
    faults = [(r.path, r.fault) for r in env.requests if r.fault]
    assert [path.split("/")[1:3][:1] for path, _ in faults] == [["snapshots"], ["snapshots"]]
    assert {kind for _, kind in faults} == {"cut" if seed == 0 else "drop"}
    assert len(aws.ebs.calls_to("StartSnapshot")) == (2 if seed == 0 else 1)
    assert blocks_of(aws, result.snapshot_id) == image_blocks(bundle.image)
    assert snapshots(aws) == {result.snapshot_id: "completed"}


# --- never completed after a failure ----------------------------------------------------------


def test_a_start_whose_answer_was_lost_leaves_nothing_when_the_run_gives_up(
    env: Proxy, aws: AwsStandIn, tmp_path: Path
) -> None:
    """EBS made the snapshot but its answer was cut and no retry is allowed: the run fails,
    and the client token finds the snapshot again to delete it (as after Ctrl-C inside
    StartSnapshot)."""
    env.set_faults(Faults(reset_rate=1.0, methods=frozenset({"POST"}), max_faults=1, seed=0))
    with pytest.raises(EbsError, match="cannot start a snapshot of 1 GiB"):
        image_to_snapshot(odd_image(tmp_path / "odd.img"), settings=S3Settings(attempts=1))
    assert [r.fault for r in env.requests if r.path == "/snapshots"] == ["cut", ""]
    first, again = aws.ebs.calls_to("StartSnapshot")
    assert json.loads(first.body)["ClientToken"] == json.loads(again.body)["ClientToken"]
    assert aws.ec2.calls_to("DeleteSnapshot") and snapshots(aws) == {}


def test_a_tampered_part_never_gives_a_completed_snapshot(
    env: Proxy,
    aws: AwsStandIn,
    tmp_path: Path,
    user_id: Identity,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bundle = make_bundle(tmp_path, user_id, "dense")
    part = sorted(bundle.manifest.parent.glob("*.part.*"))[3]
    data = bytearray(part.read_bytes())
    data[100] ^= 1
    part.write_bytes(data)
    status = main(["to-ebs", "-m", str(bundle.manifest), "-k", str(user_id.key), "-q"])
    err = capsys.readouterr().err
    assert status == 1
    assert f"part {part.name} is damaged" in err and "Traceback" not in err
    assert aws.ebs.calls_to("StartSnapshot") and not aws.ebs.calls_to("CompleteSnapshot")
    assert snapshots(aws) == {}  # deleted
    assert "was not completed and is deleted" in err


def test_an_image_digest_that_does_not_match_at_the_end(
    env: Proxy, aws: AwsStandIn, tmp_path: Path, user_id: Identity, caplog: pytest.LogCaptureFixture
) -> None:
    """The digest is known only once the whole stream is through, when blocks have been
    cut and most of them sent (how many depends on the machine's load: blocks still
    queued are dropped): the snapshot is still not completed, and deleted."""
    bundle = make_bundle(tmp_path, user_id, "sparse")
    text = bundle.manifest.read_text()
    wrong = ("0" if bundle.digest[0] != "0" else "1") + bundle.digest[1:]
    bundle.manifest.write_text(text.replace(bundle.digest, wrong))
    with pytest.raises(IntegrityError, match="image digest mismatch"):
        bundle_to_snapshot(bundle.manifest, private_key=user_id.key)
    assert aws.ebs.calls_to("StartSnapshot")
    assert len(aws.ebs.calls_to("PutSnapshotBlock")) <= len(image_blocks(bundle.image))
    assert not aws.ebs.calls_to("CompleteSnapshot")
    assert snapshots(aws) == {}


def test_when_the_deletion_fails_too_the_snapshot_stays_pending(
    env: Proxy,
    aws: AwsStandIn,
    tmp_path: Path,
    user_id: Identity,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bundle = make_bundle(tmp_path, user_id, "dense")
    sorted(bundle.manifest.parent.glob("*.part.*"))[3].unlink()
    with pytest.raises(IntegrityError, match="is missing"):
        bundle_to_snapshot(
            bundle.manifest, private_key=user_id.key, ec2_url="http://127.0.0.1:9",
            snapshot=SnapshotSpec(timeout_minutes=15),
        )  # fmt: skip
    (snapshot_id,) = snapshots(aws)
    assert snapshots(aws)[snapshot_id] == "pending" and not aws.ebs.calls_to("CompleteSnapshot")
    assert f"{snapshot_id} stays pending, never completed" in caplog.text
    assert "after 15 minutes without a write" in caplog.text


# --- endpoints, waiting -------------------------------------------------------------------------


def test_the_ebs_endpoint_follows_boto3_configuration_and_the_flag_wins(
    env: Proxy, aws: AwsStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = odd_image(tmp_path / "odd.img")
    closed = "http://127.0.0.1:9"
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed)
    monkeypatch.setenv("AWS_ENDPOINT_URL_EBS", env.endpoint_url)
    first = image_to_snapshot(image)
    monkeypatch.setenv("AWS_ENDPOINT_URL_EBS", closed)
    second = image_to_snapshot(image, ebs_url=env.endpoint_url)
    with pytest.raises(EbsError, match=r"cannot start a snapshot of 1 GiB: cannot connect"):
        image_to_snapshot(image, settings=S3Settings(attempts=1))
    started = [r for r in env.requests if r.method == "POST" and r.path == "/snapshots"]
    assert len(started) == 2
    assert set(snapshots(aws)) == {first.snapshot_id, second.snapshot_id}


def test_a_profile_can_name_the_ebs_endpoint(
    env: Proxy, aws: AwsStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """boto3's configuration file: a profile whose services section names EBS's endpoint
    (and its own keys: a named profile does not take them from the environment)."""
    config = tmp_path / "config"
    config.write_text(
        "[profile standin]\n"
        f"region = {aws.region}\n"
        f"aws_access_key_id = {aws.access_key}\n"
        f"aws_secret_access_key = {aws.secret_key}\n"
        "services = standin-endpoints\n\n"
        "[services standin-endpoints]\n"
        f"ebs =\n  endpoint_url = {env.endpoint_url}\n"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    for name in ("AWS_ENDPOINT_URL", "AWS_REGION"):  # the environment would win over the file
        monkeypatch.delenv(name)
    result = image_to_snapshot(
        odd_image(tmp_path / "odd.img"), settings=S3Settings(profile="standin")
    )
    assert result.region == aws.region
    assert [r.path for r in env.requests if r.method == "POST"] == [
        "/snapshots",
        f"/snapshots/completion/{result.snapshot_id}",
    ]


@pytest.mark.usefixtures("fast_retries")
def test_wait_returns_once_completed_or_says_why_it_failed(
    env: Proxy, aws: AwsStandIn, tmp_path: Path
) -> None:
    image = odd_image(tmp_path / "odd.img")
    aws.ebs.snapshot_fate = SnapshotFate(pending_describes=3)
    result = image_to_snapshot(image, wait=True)
    assert result.state == "completed"
    assert len(aws.ec2.calls_to("DescribeSnapshots")) == 4  # pending three times, then completed
    aws.ebs.snapshot_fate = SnapshotFate(1, Phase.ERROR, "copy failed")
    with pytest.raises(EbsError, match=r"snapshot snap-[0-9a-f]+ failed: copy failed"):
        image_to_snapshot(image, wait=True)


def test_the_public_names() -> None:
    assert amibundle.bundle_to_snapshot is bundle_to_snapshot
    assert amibundle.SnapshotSpec is SnapshotSpec
    assert Path(amibundle.image_to_snapshot.__code__.co_filename).name == "convert.py"
