"""amibundle to-ebs on the command line: usage errors name the flag typed (never the
library's parameter), exit 2, before any request; the human summary names the snapshot
and the equivalent aws ec2 register-image command."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from amibundle.cli import main
from tests.support.aws import AwsStandIn
from tests.support.common import Identity, write_image
from tests.support.s3proxy import Proxy

PYTHON_SPELLING = re.compile(r"\b[a-z_]+=(True|False)?(?=[ ;,)']|$)")


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return write_image(tmp_path / "disk.img", 3 << 20, [(1 << 20, b"data" * 100)])


IMG = ["-i", "{image}"]
USAGE: dict[str, tuple[list[str], str]] = {
    "none": ([], r"missing mandatory option: give one of --manifest, --bucket or --image"),
    "no-key": (["-m", "{image}"], r"missing mandatory option --privatekey .*"),
    "both": ([*IMG, "-m", "{image}"], r"--manifest cannot be combined with --image"),
    "key-with-image": (
        [*IMG, "-k", "{image}"],
        r"--privatekey is for a bundle \(-m\), not an image file \(-i\)",
    ),
    "partition": ([*IMG, "--partition", "mbr"], r"--partition needs --make-bootable"),
    "size": (
        [*IMG, "--size", "0"],
        r"--size must be a whole number of GiB from 1 to 65536, not 0",
    ),
    "timeout": ([*IMG, "--timeout", "5"], r"--timeout must be 10 to 4320 minutes, not 5"),
    "tag": ([*IMG, "--tag", "oops"], r"--tag 'oops' is not KEY=VALUE"),
    "aws-tag": ([*IMG, "--tag", "aws:x=1"], r"--tag: tag keys starting with 'aws:' are AWS's"),
    "kms": ([*IMG, "--kms-key-id", "alias/k"], r"--kms-key-id 'alias/k' is not a KMS key ARN .*"),
    "uefi-mbr": (
        [*IMG, "--make-bootable", "--partition", "mbr", "--boot-mode", "uefi"],
        r"--boot-mode uefi needs a GPT disk",
    ),
    "url": ([*IMG, "--ebs-url", "ftp://x"], r"invalid value for --ebs-url: .*"),
    "no-manifest": (["-m", "nowhere", "-k", "{image}"], r"invalid value for --manifest: .*"),
    "bucket-image": ([*IMG, "-b", "bkt"], r"--bucket cannot be combined with --image"),
    "bucket-key": (["-b", "bkt/p"], r"missing mandatory option --privatekey .*-b\)"),
    "bucket-name": (["-b", "bkt", "-m", "a/b", "-k", "{image}"], r".*--manifest: 'a/b'.*"),
    "bucket-source": (["-b", "bkt", "-k", "{image}", "--source", "/"], r"--source is for .*"),
    "prefix-local": (["-m", "{image}", "-k", "{image}", "-p", "x"], r"--prefix is for .*"),
    "ami-name": ([*IMG, "--register", "a"], r"--register 'a' is not a valid AMI name: .*"),
}


@pytest.mark.parametrize(("argv", "message"), list(USAGE.values()), ids=list(USAGE))
def test_usage_errors_name_the_flag(
    argv: list[str],
    message: str,
    image: Path,
    aws: AwsStandIn,
    aws_proxy: Proxy,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in aws.environment(aws_proxy.endpoint_url).items():
        monkeypatch.setenv(name, value)
    status = main(["to-ebs", *(word.format(image=image) for word in argv)])
    err = capsys.readouterr().err.splitlines()
    assert status == 2, err
    lead = "amibundle to-ebs: error: "
    assert err[0].startswith(lead) and re.fullmatch(message, err[0][len(lead) :]), err
    assert not PYTHON_SPELLING.search(err[0]), err[0]
    assert err[-1] == "Try 'amibundle to-ebs --help'."
    assert aws_proxy.requests == []


def test_the_summary_says_how_to_register(
    image: Path,
    tmp_path: Path,
    aws: AwsStandIn,
    aws_proxy: Proxy,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    user_id: Identity,
) -> None:
    for name, value in aws.environment(aws_proxy.endpoint_url).items():
        monkeypatch.setenv(name, value)
    assert main(["to-ebs", "-i", str(image), "-q", "--arch", "x86_64"]) == 0
    first, second = capsys.readouterr().out.splitlines()
    match = re.fullmatch(
        r"Snapshot (snap-[0-9a-f]+) \(1 GiB, partitionless image, pending\): 1 block written "
        r"\(512\.0 KiB\) in .*",
        first,
    )
    assert match, first
    words = shlex.split(second.removeprefix("To register an AMI of it: "))
    assert words[:3] == ["aws", "ec2", "register-image"]
    assert words[words.index("--virtualization-type") + 1] == "paravirtual"
    assert match.group(1) in words[words.index("--block-device-mappings") + 1]
