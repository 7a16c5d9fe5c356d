"""Every bundle the classic tools made must unbundle and verify.

Expected image digests are read from the fixtures' own README, so the test
follows the fixtures if they are regenerated.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

import amibundle
from amibundle.crypto import load_private_key, unwrap_secret


def expected_images(classic: Path) -> dict[str, tuple[str, int]]:
    """folder -> (sha256, size) from the README table."""
    rows = re.findall(
        r"^\| `(\w+)/` \| `[^`]+`[^|]*\| ([\d,]+) \| `([0-9a-f]{64})` \|",
        (classic / "README.md").read_text(),
        flags=re.MULTILINE,
    )
    return {folder: (sha, int(size.replace(",", ""))) for folder, size, sha in rows}


FOLDERS = ["sparse", "dense", "awscert"]


def manifest_in(classic: Path, folder: str) -> Path:
    (path,) = (classic / folder).glob("*.manifest.xml")
    return path


def test_readme_lists_every_fixture(classic: Path) -> None:
    assert sorted(expected_images(classic)) == sorted(FOLDERS)


@pytest.mark.parametrize("folder", FOLDERS)
def test_classic_bundle_unbundles_to_the_documented_image(
    classic: Path, folder: str, tmp_path: Path
) -> None:
    sha256, size = expected_images(classic)[folder]
    result = amibundle.unbundle(
        manifest_in(classic, folder),
        private_key=classic / "keys" / "user-pk.pem",
        cert=classic / "keys" / "user-cert.pem",
        destination=tmp_path,
    )
    data = result.image_path.read_bytes()
    assert len(data) == size == result.size
    assert hashlib.sha256(data).hexdigest() == sha256
    assert [p.name for p in tmp_path.iterdir()] == [result.image_path.name]


@pytest.mark.parametrize("folder", FOLDERS)
def test_classic_bundle_verifies(classic: Path, folder: str) -> None:
    report = amibundle.verify_bundle(
        manifest_in(classic, folder),
        cert=classic / "keys" / "user-cert.pem",
        private_key=classic / "keys" / "user-pk.pem",
    )
    assert report.ok, report.problems
    assert "image digest" in report.checks and "signature" in report.checks


@pytest.mark.parametrize("folder", ["sparse", "dense"])
def test_ec2_copy_of_the_key_unwraps_with_the_ec2_key(classic: Path, folder: str) -> None:
    parsed = amibundle.read_manifest(manifest_in(classic, folder))
    m = parsed.manifest
    user_key = load_private_key(classic / "keys" / "user-pk.pem")
    ec2_key = load_private_key(classic / "keys" / "ec2-pk.pem")
    for ec2_field, user_field in (
        ("ec2_encrypted_key", "user_encrypted_key"),
        ("ec2_encrypted_iv", "user_encrypted_iv"),
    ):
        assert unwrap_secret(ec2_key, getattr(m, ec2_field), ec2_field) == unwrap_secret(
            user_key, getattr(m, user_field), user_field
        )


def test_classic_sparse_member_unbundles_sparse(classic: Path, tmp_path: Path) -> None:
    """Holes and the allocated zero MiB of the classic image do not take disk space."""
    result = amibundle.unbundle(
        manifest_in(classic, "sparse"),
        private_key=classic / "keys" / "user-pk.pem",
        destination=tmp_path,
    )
    st = result.image_path.stat()
    assert st.st_blocks * 512 <= 20 * 1024 * 1024 + 64 * 1024
    # and GNU tar agrees on the content of the classic tar stream (independent path)
    sha256, _ = expected_images(classic)["sparse"]
    assert hashlib.sha256(result.image_path.read_bytes()).hexdigest() == sha256


def test_inspect_reads_the_classic_dense_manifest(classic: Path) -> None:
    report = amibundle.inspect_manifest(
        manifest_in(classic, "dense"), cert=classic / "keys" / "user-cert.pem"
    )
    m = report.manifest
    assert report.signature_valid is True
    assert (m.name, m.user, m.architecture) == ("dense-prefixed", "123456789012", "i386")
    assert m.product_codes == ("ABCD1234,EFGH5678",)  # the classic's one-code defect, read as is
    assert [b.virtual for b in m.block_device_mapping] == ["ami", "ephemeral0", "root", "swap"]
    assert (m.kernel_id, m.ramdisk_id) == ("aki-12345678", "ari-87654321")


def test_wrong_certificate_fails_the_classic_signature(classic: Path, tmp_path: Path) -> None:
    report = amibundle.verify_bundle(
        manifest_in(classic, "dense"), cert=classic / "keys" / "ec2-cert.pem"
    )
    assert not report.ok
    assert any("signature" in p for p in report.problems)
