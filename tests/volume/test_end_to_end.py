"""bundle-vol -> unbundle -> e2fsck -> tree compare, with metadata inherited
from a local IMDSv2 server, and the inheritance rules."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import amibundle
from amibundle.errors import MetadataUnavailable
from amibundle.volume.bundle import bundle_volume
from amibundle.volume.imds import MetadataClient
from tests.support.bundling import keys_for, metadata_for
from tests.support.common import Identity
from tests.support.ext2read import read_tree
from tests.support.imdsserver import closed_port_endpoint, imds
from tests.support.volumes import (
    EXCLUDES,
    INCLUDES,
    SyntheticVolume,
    check_specials,
    cli,
    compare_tree,
)

pytestmark = pytest.mark.slow


def test_library_end_to_end_with_inheritance(
    synthetic: SyntheticVolume, out_dir: Path, user_id: Identity, tmp_path: Path
) -> None:
    lines: list[str] = []
    with imds() as server:
        result = bundle_volume(
            synthetic.root,
            metadata=metadata_for(user="1234-5678-9012", kernel_id="aki-fromcli"),
            keys=keys_for(user_id),
            destination=out_dir,
            prefix="root.img",
            size_mib=None,
            exclude=EXCLUDES,
            include=INCLUDES,
            builder="rootless",
            fs_type="ext4",
            # kernel_id (given) wins over the metadata service's
            inherit=True,
            metadata_service=MetadataClient(server.endpoint),
            notify=lines.append,
        )
    assert result.bundle is not None and result.builder == "rootless"
    assert set(result.inherited) == {"ramdisk", "product codes", "block device mapping", "ancestry"}
    m = amibundle.read_manifest(result.bundle.manifest_path).manifest
    assert m.kernel_id == "aki-fromcli" and m.ramdisk_id == "ari-22222222"
    assert m.product_codes == ("PC11111", "PC22222")
    assert {d.virtual: d.device for d in m.block_device_mapping}["root"] == "/dev/sda1"
    assert m.ancestry == ("ami-00000001", "ami-00000002", "ami-12345678")
    assert any("image size" in line for line in lines)

    restored = amibundle.unbundle(
        result.bundle.manifest_path,
        private_key=user_id.key,
        destination=tmp_path,
        cert=user_id.cert,
    )
    assert restored.image_path.read_bytes() == result.image_path.read_bytes()
    done = subprocess.run(
        ["e2fsck", "-fn", str(restored.image_path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout
    tree = read_tree(str(restored.image_path))
    compare_tree(synthetic, tree)
    check_specials(tree)


def test_cli_end_to_end_classic(
    synthetic: SyntheticVolume, out_dir: Path, user_id: Identity, tmp_path: Path
) -> None:
    """ec2-bundle-vol with classic flags, off EC2: a note, no inheritance, a bundle."""
    done = cli(
        [
            "--classic",
            "-v",
            str(synthetic.root),
            "-d",
            str(out_dir),
            "-k",
            str(user_id.key),
            "-c",
            str(user_id.cert),
            "-u",
            "123456789012",
            "-r",
            "x86_64",
            "-s",
            "40",
            "--fs-type",
            "ext4",
            "-B",
            "ami=sda1,root=/dev/sda1",
            "--productcodes",
            "A1,B2",
            "-e",
            ",".join(EXCLUDES),
            "-i",
            ",".join(INCLUDES),
            "--batch",
            "--progress=none",  # not -q: it would silence the note checked below
        ],
        env={"AWS_EC2_METADATA_SERVICE_ENDPOINT": closed_port_endpoint()},
    )
    assert done.returncode == 0, done.stderr
    assert "note: not on EC2" in done.stdout
    manifest = out_dir / "image.manifest.xml"
    m = amibundle.read_manifest(manifest).manifest
    assert m.product_codes == ("A1", "B2") and m.kernel_id is None and m.ancestry == ()
    assert m.size == 40 << 20
    report = amibundle.verify_bundle(manifest, cert=user_id.cert, private_key=user_id.key)
    assert report.ok, report.problems
    restored = amibundle.unbundle(manifest, private_key=user_id.key, destination=tmp_path)
    compare_tree(synthetic, read_tree(str(restored.image_path)))


@pytest.mark.parametrize(("classic", "status"), [(True, 12), (False, 1)])
def test_explicit_inherit_off_ec2_fails_early(
    synthetic: SyntheticVolume, out_dir: Path, user_id: Identity, classic: bool, status: int
) -> None:
    done = cli(
        [
            *(["--classic"] if classic else []),
            "-v",
            str(synthetic.root),
            "-d",
            str(out_dir),
            "-k",
            str(user_id.key),
            "-c",
            str(user_id.cert),
            "-u",
            "123456789012",
            "-r",
            "x86_64",
            "--inherit",
            "--builder",
            "rootless",
            "--fs-type",
            "ext4",
            "-s",
            "40",
        ],
        env={"AWS_EC2_METADATA_SERVICE_ENDPOINT": closed_port_endpoint()},
    )
    assert done.returncode == status, done.stderr
    assert "cannot be reached" in done.stderr and "--no-inherit" in done.stderr
    assert not list(out_dir.iterdir())  # before anything was created


def test_clone_only_never_asks_the_metadata_service(
    synthetic: SyntheticVolume, out_dir: Path
) -> None:
    class Refusing(MetadataClient):
        def check(self) -> None:
            raise AssertionError("the metadata service was asked")

    result = bundle_volume(
        synthetic.root,
        destination=out_dir,
        metadata=None,
            keys=None,
        inherit=True,
        size_mib=40,
        builder="rootless",
        fs_type="ext4",
        metadata_service=Refusing("http://127.0.0.1:9"),
    )
    assert result.bundle is None and result.image_path.exists()


def test_metadata_unavailable_is_its_own_error() -> None:
    with pytest.raises(MetadataUnavailable):
        MetadataClient(closed_port_endpoint()).check()
