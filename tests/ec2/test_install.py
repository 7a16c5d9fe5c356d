"""``amibundle install`` (bundle-upload + register in one command), the account and region
taken from the environment, and boto3's endpoint configuration, against the strict
stand-ins (S3, STS, EC2 in one moto) through the recording proxy."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from amibundle.cli import main
from amibundle.reading import read_manifest
from tests.support.aws import AwsStandIn
from tests.support.aws_bundles import identity_args, proxied_services, small_image
from tests.support.common import Identity
from tests.support.ec2_images import ImageFate, ImageState
from tests.support.s3proxy import Proxy

DEAD = "http://127.0.0.1:9"  # nothing listens on the discard port here


def install(*argv: str) -> int:
    return main(["install", *argv])


def bucket_keys(aws: AwsStandIn, bucket: str) -> list[str]:
    listing = aws.client("s3").list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []))


@pytest.fixture
def image_argv(tmp_path: Path, user_id: Identity) -> list[str]:
    """-i, a small random image at tmp_path/img, and the key pair's options."""
    return ["-i", str(small_image(tmp_path)), *identity_args(user_id)]


def rootfs(folder: Path, files: dict[str, bytes]) -> Path:
    """A tree ``folder/rootfs`` holding ``files`` (relative names)."""
    root = folder / "rootfs"
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def volume_argv(tree: Path, out: Path, user_id: Identity) -> list[str]:
    """The tree, -d, an 8 MiB ext2 image built without root or the instance metadata, and
    the key pair: the options install --volume and bundle-vol share."""
    return [
        str(tree), "-d", str(out), "--size", "8", "--fs-type", "ext2", "--builder", "rootless",
        "--no-inherit", "-P", "none", *identity_args(user_id),
    ]  # fmt: skip


def test_install_registers_the_streamed_bundle(
    aws: AwsStandIn,
    aws_env: Proxy,
    image_argv: list[str],
    fast_polls: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = install(
        *image_argv, "-b", "cibucket/builds/7", "-n", "ci build 7",
        "--part-size", "65536", "--wait", "--ena", "--boot-mode", "uefi-preferred",
        "-B", "ami=sda1,root=/dev/sda1,ephemeral0=sdb",
    )  # fmt: skip
    captured = capsys.readouterr()
    out = captured.out
    assert status == 0, captured.err
    image_id = out.strip().splitlines()[-1]
    registered = aws.ec2.image(image_id).to_api()
    assert registered["RootDeviceType"] == "instance-store"
    assert registered["ImageLocation"] == "cibucket/builds/7/img.manifest.xml"
    assert registered["State"] == "available"
    sent = aws.ec2.calls_to("RegisterImage")[-1].params
    assert (sent["VirtualizationType"], sent["BootMode"], sent["EnaSupport"]) == (
        "hvm",
        "uefi-preferred",
        "true",
    )
    assert sent["BlockDeviceMapping.1.VirtualName"] == "ephemeral0"
    assert bucket_keys(aws, "cibucket") == sorted(
        ["builds/7/img.manifest.xml", *(f"builds/7/img.part.{i}" for i in range(3))]
    )
    # One conversation: the account (no -u) from STS, S3 for the bundle, then EC2.
    services = proxied_services(aws_env)
    assert services[0] == "sts:us-east-1"
    first_ec2 = services.index("ec2:us-east-1")
    assert set(services[1:first_ec2]) == {"s3:us-east-1"}
    assert set(services[first_ec2:]) == {"ec2:us-east-1"}


def test_manifest_account_comes_from_sts(
    aws: AwsStandIn, aws_env: Proxy, image_argv: list[str], tmp_path: Path
) -> None:
    assert main(["bundle-upload", *image_argv, "-b", "acct", "--json"]) == 0
    fetched = tmp_path / "fetched"
    fetched.mkdir()
    assert main(["download", "-b", "acct", "-p", "img", "-d", str(fetched)]) == 0
    assert read_manifest(fetched / "img.manifest.xml").manifest.user == aws.account_id


def test_without_credentials_user_is_required(
    aws: AwsStandIn,
    no_aws_config: None,
    image_argv: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [*image_argv, "-b", "bbb", "--url", aws.endpoint_url]
    assert main(["bundle-upload", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("amibundle bundle-upload: error: missing mandatory option --user\n")
    assert "STS" in err


def test_region_comes_from_the_bucket(
    aws: AwsStandIn,
    aws_env: Proxy,
    image_argv: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    aws.client("s3").create_bucket(
        Bucket="euro", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    argv = [*image_argv, "-u", aws.account_id, "-b", "euro/x"]
    assert install(*argv, "-n", "in europe", "--json") == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["upload"]["region"] == answer["registration"]["region"] == "eu-west-1"
    services = proxied_services(aws_env)
    # Only the bucket's location is asked in us-east-1; everything else goes to eu-west-1.
    assert services[0] == "s3:us-east-1"
    assert set(services[1:]) == {"s3:eu-west-1", "ec2:eu-west-1"}


def test_service_endpoints_and_flags_win_over_the_general_one(
    aws: AwsStandIn,
    aws_env: Proxy,
    image_argv: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """AWS_ENDPOINT_URL points nowhere: the service-specific variables reach the stand-in;
    then those point nowhere and --url / --ec2-url reach it."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", DEAD)
    for service in ("S3", "EC2", "STS"):
        monkeypatch.setenv(f"AWS_ENDPOINT_URL_{service}", aws_env.endpoint_url)
    assert install(*image_argv, "-b", "ends/a", "-n", "by variables") == 0
    for service in ("S3", "EC2"):
        monkeypatch.setenv(f"AWS_ENDPOINT_URL_{service}", DEAD)
    flags = ["--url", aws_env.endpoint_url, "--ec2-url", aws_env.endpoint_url]
    assert install(*image_argv, "-b", "ends/b", "-n", "by flags", *flags) == 0
    assert sorted(i.name for i in aws.ec2.images()) == ["by flags", "by variables"]


def test_a_profile_endpoint_is_honoured(
    aws: AwsStandIn,
    aws_env: Proxy,
    image_argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = tmp_path / "config"
    config.write_text(
        f"[profile standin]\nregion = us-east-1\nendpoint_url = {aws_env.endpoint_url}\n"
        f"aws_access_key_id = {aws.access_key}\naws_secret_access_key = {aws.secret_key}\n"
    )
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    argv = [*image_argv, "-b", "prof", "-n", "from a profile"]
    assert install(*argv, "--profile", "standin") == 0
    assert [i.name for i in aws.ec2.images()] == ["from a profile"]


def test_a_failed_registration_keeps_the_bundle_and_says_so(
    aws: AwsStandIn,
    aws_env: Proxy,
    image_argv: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert install(*image_argv, "-b", "dupes/a", "-n", "taken") == 0
    first = [i.id for i in aws.ec2.images()]
    capsys.readouterr()
    assert install(*image_argv, "-b", "dupes/b", "-n", "taken") == 1
    err = capsys.readouterr().err.splitlines()
    assert "registering failed" in err[0] and "InvalidAMIName.Duplicate" in err[0]
    assert "nothing was registered" in err[0]
    assert "s3://dupes/b/img.manifest.xml" in err[1]  # the hint: what exists
    assert [i.id for i in aws.ec2.images()] == first  # the other image untouched
    assert "b/img.manifest.xml" in bucket_keys(aws, "dupes")


def test_a_failed_image_is_deregistered_and_the_bundle_kept(
    aws: AwsStandIn,
    aws_env: Proxy,
    image_argv: list[str],
    fast_polls: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    aws.ec2.image_fate = ImageFate(2, ImageState.FAILED)
    assert install(*image_argv, "-b", "fail", "-n", "fails", "--wait") == 1
    err = capsys.readouterr().err
    assert "is failed: Internal error while registering the image; it was deregistered" in err
    assert "s3://fail/img.manifest.xml" in err
    assert aws.ec2.images() == []
    assert "img.manifest.xml" in bucket_keys(aws, "fail")


def test_install_from_a_volume(
    aws: AwsStandIn,
    aws_env: Proxy,
    user_id: Identity,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tree = rootfs(tmp_path, {"etc/hostname": b"built\n", "bin/tool": os.urandom(50_000)})
    out = tmp_path / "out"
    out.mkdir()
    argv = volume_argv(tree, out, user_id)
    status = install("--volume", *argv, "-b", "volumes", "-n", "from a tree", "-p", "root.img")
    captured = capsys.readouterr()
    assert status == 0, captured.err
    image_id = captured.out.strip().splitlines()[-1]
    assert aws.ec2.image(image_id).to_api()["ImageLocation"] == "volumes/root.img.manifest.xml"
    assert sorted(p.name for p in out.iterdir()) == ["root.img"]  # the image, no parts


def test_bundle_vol_straight_to_a_bucket(
    aws: AwsStandIn,
    aws_env: Proxy,
    user_id: Identity,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tree = rootfs(tmp_path, {"etc/motd": b"hello\n"})
    out = tmp_path / "out"
    out.mkdir()
    argv = volume_argv(tree, out, user_id)
    bucket = ["--bucket", "volbucket/v1", "-p", "root.img", "--part-size", "65536"]
    status = main(["bundle-vol", "-v", *argv, *bucket])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert sorted(p.name for p in out.iterdir()) == ["root.img"]
    keys = bucket_keys(aws, "volbucket")
    assert "v1/root.img.manifest.xml" in keys and "v1/root.img.part.0" in keys
    fetched = tmp_path / "fetched"
    fetched.mkdir()
    assert main(["download", "-b", "volbucket/v1", "-p", "root.img", "-d", str(fetched)]) == 0
    manifest = read_manifest(fetched / "root.img.manifest.xml").manifest
    assert manifest.user == aws.account_id  # no -u: STS
    assert "manifest at s3://volbucket/v1/root.img.manifest.xml" in captured.out
