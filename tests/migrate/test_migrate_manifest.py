"""ec2-migrate-manifest / amibundle migrate-manifest (classic-cli.md §8) against the strict
EC2 stand-in: the classic mapping, its checks, questions and exit codes, the upgrade of
older manifests, and the EC2 key wrapped again for the target region's certificate."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest

from amibundle.cli import classic_main, main
from amibundle.crypto import load_private_key, unwrap_secret
from amibundle.format.manifest import Manifest
from amibundle.reading import check_signature, read_manifest
from tests.support.aws import AwsStandIn
from tests.support.bundling import bundle_for
from tests.support.common import Identity, sample_image
from tests.support.kernels import KernelPair, kernels_in_two_regions
from tests.support.peers import Peer, make_peer_bundle
from tests.support.s3proxy import Proxy


@pytest.fixture
def ec2_env(aws: AwsStandIn, aws_proxy: Proxy, monkeypatch: pytest.MonkeyPatch) -> Proxy:
    """boto3 in this process reaches the stand-in through the proxy."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_proxy.endpoint_url)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # Where the bundles come from: asked first, as AWS_REGION says (the others in parallel).
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # no terminal, nothing to read
    return aws_proxy


@pytest.fixture
def kernels(aws: AwsStandIn) -> KernelPair:
    return kernels_in_two_regions(aws)


def make_bundle(
    folder: Path, user: Identity, kernel: str | None = None, ramdisk: str | None = None
) -> Path:
    image = sample_image(folder / "root.img", 1)
    return bundle_for(
        image, user, destination=folder, kernel_id=kernel, ramdisk_id=ramdisk
    ).manifest_path


def argv(manifest: Path, user: Identity, aws: AwsStandIn, *extra: str) -> list[str]:
    return [
        "-m",
        str(manifest),
        "-c",
        str(user.cert),
        "-k",
        str(user.key),
        "-a",
        aws.access_key,
        "-s",
        aws.secret_key,
        *extra,
    ]


def ec2_key_unwraps_with(manifest: Manifest, key: Path, user: Identity) -> bool:
    ec2 = load_private_key(key)
    mine = load_private_key(user.key)
    try:
        return unwrap_secret(ec2, manifest.ec2_encrypted_key, "k") == unwrap_secret(
            mine, manifest.user_encrypted_key, "k"
        ) and unwrap_secret(ec2, manifest.ec2_encrypted_iv, "iv") == unwrap_secret(
            mine, manifest.user_encrypted_iv, "iv"
        )
    except Exception:
        return False


# -- the mapping ---------------------------------------------------------------------------


def test_kernel_and_ramdisk_are_mapped_to_the_target_region(
    tmp_path: Path,
    user_id: Identity,
    other_id: Identity,
    aws: AwsStandIn,
    ec2_env: Proxy,
    kernels: KernelPair,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manifest = make_bundle(tmp_path, user_id, kernels.source_kernel, kernels.source_ramdisk)
    original = manifest.read_bytes()
    aws.ec2.reset()  # forget the registration calls
    extra = ["--region", "eu-west-1", "--ec2cert", str(other_id.cert)]
    assert classic_main("ec2-migrate-manifest", argv(manifest, user_id, aws, *extra)) == 0
    out = capsys.readouterr().out
    migrated = read_manifest(manifest)
    assert (migrated.manifest.kernel_id, migrated.manifest.ramdisk_id) == (
        kernels.target_kernel,
        kernels.target_ramdisk,
    )
    check_signature(migrated, user_id.cert)
    assert (tmp_path / "root.img.manifest.xml.bak").read_bytes() == original
    # EC2's copy of the key is now for the target's certificate (here other_id's).
    assert ec2_key_unwraps_with(migrated.manifest, other_id.key, user_id)
    assert f"re-wrapped for {other_id.cert}" in out
    assert (
        f"to kernel {kernels.target_kernel} and ramdisk {kernels.target_ramdisk} in eu-west-1"
        in out
    )
    assert "(found in us-east-1)" in out
    # Everything else is the original's.
    before = read_manifest(tmp_path / "root.img.manifest.xml.bak").manifest
    assert migrated.manifest.parts == before.parts and migrated.manifest.digest == before.digest
    # The target region was asked only for images of that owner and type.
    searches = [
        c
        for c in aws.ec2.calls_to("DescribeImages")
        if not any(k.startswith("ImageId") for k in c.params)
    ]
    assert len(searches) == 1
    assert searches[0].params["Owner.1"] == aws.account_id
    assert searches[0].params["Filter.1.Name"] == "image-type"


def test_explicit_ids_win_and_unknown_ones_are_confirmed(
    tmp_path: Path,
    user_id: Identity,
    aws: AwsStandIn,
    ec2_env: Proxy,
    kernels: KernelPair,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manifest = make_bundle(tmp_path, user_id, kernels.source_kernel)
    extra = ["--region", "eu-west-1", "--kernel", "aki-0123456789abcdef0"]
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    assert classic_main("ec2-migrate-manifest", argv(manifest, user_id, aws, *extra)) == 8
    err = capsys.readouterr().err
    assert "aki-0123456789abcdef0 not found in eu-west-1" in err
    assert not (tmp_path / "root.img.manifest.xml.bak").exists()
    assert (
        classic_main("ec2-migrate-manifest", argv(manifest, user_id, aws, *extra, "--batch")) == 0
    )
    assert read_manifest(manifest).manifest.kernel_id == "aki-0123456789abcdef0"


def test_no_mapping_asks_before_dropping_the_kernel(
    tmp_path: Path,
    user_id: Identity,
    aws: AwsStandIn,
    ec2_env: Proxy,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manifest = make_bundle(tmp_path, user_id, "aki-11111111", "ari-22222222")
    base = argv(manifest, user_id, aws, "--no-mapping")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # end of input: no
    assert main(["migrate-manifest", *base]) == 8
    assert "will lose its kernel aki-11111111 and ramdisk ari-22222222" in capsys.readouterr().err
    assert read_manifest(manifest).manifest.kernel_id == "aki-11111111"
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    assert main(["migrate-manifest", *base, "--kernel", "aki-33333333"]) == 0
    migrated = read_manifest(manifest).manifest
    assert (migrated.kernel_id, migrated.ramdisk_id) == ("aki-33333333", None)
    assert aws.ec2.calls == []  # --no-mapping: EC2 is never asked


# -- the classic checks and exit codes --------------------------------------------------------


def test_an_existing_backup_stops_with_exit_2(
    tmp_path: Path,
    user_id: Identity,
    aws: AwsStandIn,
    ec2_env: Proxy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manifest = make_bundle(tmp_path, user_id)
    (tmp_path / "root.img.manifest.xml.bak").write_text("earlier")
    before = manifest.read_bytes()
    assert classic_main("ec2-migrate-manifest", argv(manifest, user_id, aws, "--no-mapping")) == 2
    assert "root.img.manifest.xml.bak exists already" in capsys.readouterr().err
    assert manifest.read_bytes() == before


@pytest.mark.parametrize(
    ("case", "status", "message"),
    [
        ("kernel-nowhere", 6, "not found in any region"),
        ("no-match", 6, "has no match in eu-west-1"),
        # Refused as BundleKeys.load reads the keys, before the manifest is read.
        ("wrong-private-key", 254, "is not the key of the certificate"),
        ("access-key-alone", 1, "missing mandatory option --secret-key"),
    ],
)
# More rows (no region, a wrong certificate, an unknown region, a version too new) are in
# tests/cli/test_exit_codes.py with every other command's.
def test_classic_errors_and_their_exit_codes(
    case: str,
    status: int,
    message: str,
    tmp_path: Path,
    user_id: Identity,
    other_id: Identity,
    aws: AwsStandIn,
    ec2_env: Proxy,
    kernels: KernelPair,
    capsys: pytest.CaptureFixture[str],
) -> None:
    kernel = {"kernel-nowhere": "aki-0badbadbadbadbad0"}.get(case, kernels.source_kernel)
    manifest = make_bundle(tmp_path, user_id, kernel)
    if case == "no-match":  # the target region has no kernel with that key
        aws.ec2.reset()
        from tests.support.kernels import register_from_manifest

        kernel = register_from_manifest(
            aws, "us-east-1", "kernels-src/lonely.manifest.xml", "kernel", "lonely"
        )
        (tmp_path / "lonely").mkdir()
        manifest = make_bundle(tmp_path / "lonely", user_id, kernel)
    words = argv(manifest, user_id, aws, "--region", "eu-west-1")
    if case == "wrong-private-key":
        words[words.index(str(user_id.key))] = str(other_id.key)
        words.append("--no-mapping")
        words += ["--kernel", "aki-44444444"]
    if case == "access-key-alone":
        del words[words.index("-s") : words.index("-s") + 2]
    before = manifest.read_bytes()
    assert classic_main("ec2-migrate-manifest", words) == status
    err = capsys.readouterr().err
    assert message in err, err
    assert manifest.read_bytes() == before
    assert not manifest.with_name(manifest.name + ".bak").exists()


# -- upgrades and the EC2 certificate of the target region -----------------------------------------


@pytest.mark.parametrize(
    "peer", [Peer.RUBY_V3, Peer.RUBY_20070829, Peer.EUCA2OOLS, Peer.GO_EMPTY_BUNDLER]
)
def test_older_and_peer_manifests_are_upgraded_to_2007_10_10(
    peer: Peer,
    tmp_path: Path,
    user_id: Identity,
    ec2_id: Identity,
    aws: AwsStandIn,
    ec2_env: Proxy,
) -> None:
    bundle = make_peer_bundle(peer, tmp_path, user_id, ec2_id, part_size=30_000)
    before = read_manifest(bundle.manifest).manifest
    words = argv(bundle.manifest, user_id, aws, "--no-mapping", "--batch")
    assert main(["migrate-manifest", *words]) == 0
    after = read_manifest(bundle.manifest)
    check_signature(after, user_id.cert)
    m = after.manifest
    assert m.version == "2007-10-10" and m.image_type == "machine"
    assert m.architecture == (before.architecture or "i386")
    assert (m.parts, m.digest, m.size, m.bundled_size) == (
        before.parts,
        before.digest,
        before.size,
        before.bundled_size,
    )
    assert m.bundler == before.bundler and m.kernel_id is None
    # The migrated bundle still unbundles to the same image.
    from amibundle import unbundle

    out = tmp_path / "out"
    out.mkdir()
    result = unbundle(bundle.manifest, private_key=user_id.key, destination=out, cert=user_id.cert)
    assert result.image_path.read_bytes() == bundle.image


def test_the_region_picks_the_classic_certificate_file(
    tmp_path: Path,
    user_id: Identity,
    ec2_id: Identity,
    other_id: Identity,
    aws: AwsStandIn,
    ec2_env: Proxy,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--region us-gov-west-1 means cert-ec2-gov.pem of the classic home (test keys stand
    in for AWS's): EC2's copy of the key opens with the GovCloud stand-in key only."""
    home = tmp_path / "home" / "etc" / "ec2" / "amitools"
    home.mkdir(parents=True)
    shutil.copy(ec2_id.cert, home / "cert-ec2.pem")
    shutil.copy(other_id.cert, home / "cert-ec2-gov.pem")
    monkeypatch.delenv("AMIBUNDLE_EC2_CERT")
    monkeypatch.setenv("EC2_AMITOOL_HOME", str(tmp_path / "home"))
    manifest = make_bundle(tmp_path, user_id, "aki-11111111")
    assert ec2_key_unwraps_with(read_manifest(manifest).manifest, ec2_id.key, user_id)
    words = argv(manifest, user_id, aws, "--no-mapping", "--kernel", "aki-55555555")
    assert classic_main("ec2-migrate-manifest", [*words, "--region", "us-gov-west-1"]) == 0
    migrated = read_manifest(manifest).manifest
    assert ec2_key_unwraps_with(migrated, other_id.key, user_id)
    assert not ec2_key_unwraps_with(migrated, ec2_id.key, user_id)
    assert f"re-wrapped for {home / 'cert-ec2-gov.pem'}" in capsys.readouterr().out


def test_a_manifest_without_kernel_asks_ec2_nothing(
    tmp_path: Path, user_id: Identity, aws: AwsStandIn, ec2_env: Proxy
) -> None:
    manifest = make_bundle(tmp_path, user_id)
    assert (
        classic_main("ec2-migrate-manifest", argv(manifest, user_id, aws, "--region", "eu-west-1"))
        == 0
    )
    assert [c.action for c in aws.ec2.calls] == []
    assert read_manifest(manifest).manifest.kernel_id is None
