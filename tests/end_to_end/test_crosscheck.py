"""Bundles we make, checked with independent tools: openssl, gunzip, GNU tar."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import amibundle
from tests.support.bundling import bundle_for
from tests.support.common import Identity, sample_image, write_image
from tests.support.openssl import decrypt_parts, field, openssl_unwrap, run

KIB = 1024


def bundle(image: Path, dest: Path, user: Identity, **kwargs: object) -> amibundle.BundleResult:
    dest.mkdir(exist_ok=True)
    return bundle_for(image, user, user="1234-5678-9012", destination=dest, **kwargs)


def test_signature_verifies_with_openssl(tmp_path: Path, user_id: Identity) -> None:
    result = bundle(sample_image(tmp_path / "disk.img"), tmp_path / "out", user_id)
    raw = result.manifest_path.read_bytes()
    signed = raw[
        raw.index(b"<machine_configuration>") : raw.index(b"</machine_configuration>") + 24
    ]
    signed += raw[raw.index(b"<image>") : raw.index(b"</image>") + 8]
    (tmp_path / "signed").write_bytes(signed)
    (tmp_path / "sig").write_bytes(bytes.fromhex(field(raw, "signature")))
    pub = run(["openssl", "x509", "-in", str(user_id.cert), "-pubkey", "-noout"])
    (tmp_path / "pub.pem").write_bytes(pub)
    out = run(
        [
            "openssl",
            "dgst",
            "-sha1",
            "-verify",
            str(tmp_path / "pub.pem"),
            "-signature",
            str(tmp_path / "sig"),
            str(tmp_path / "signed"),
        ]
    )
    assert out.strip() == b"Verified OK"
    # and a changed byte in the signed text fails
    (tmp_path / "signed").write_bytes(signed.replace(b"<size>", b"<size>1", 1))
    bad = subprocess.run(
        [
            "openssl",
            "dgst",
            "-sha1",
            "-verify",
            str(tmp_path / "pub.pem"),
            "-signature",
            str(tmp_path / "sig"),
            str(tmp_path / "signed"),
        ],
        capture_output=True,
    )
    assert bad.returncode != 0


def test_stream_decodes_with_openssl_gunzip_and_gnu_tar(
    tmp_path: Path, user_id: Identity, ec2_id: Identity
) -> None:
    image = sample_image(tmp_path / "disk.img")
    result = bundle(image, tmp_path / "out", user_id)
    manifest = result.manifest_path.read_bytes()
    # the EC2 copy of the key unwraps with the EC2 private key to the same secret
    assert openssl_unwrap(field(manifest, "ec2_encrypted_key"), ec2_id.key) == openssl_unwrap(
        field(manifest, "user_encrypted_key"), user_id.key
    )
    compressed = decrypt_parts(result.manifest_path, user_id.key)
    assert compressed[:3] == b"\x1f\x8b\x08"
    tar = run(["gunzip", "-c"], compressed)
    assert hashlib.sha1(tar).hexdigest() == field(manifest, "digest") == result.digest
    assert len(tar) % 10240 == 0
    (tmp_path / "t.tar").write_bytes(tar)
    listing = run(["tar", "-tvf", str(tmp_path / "t.tar")]).decode().splitlines()
    assert len(listing) == 1
    assert f" {image.stat().st_size} " in listing[0] and listing[0].endswith(" disk.img")
    assert listing[0].startswith("-rw") and " root/root " in listing[0]
    extract = tmp_path / "x"
    extract.mkdir()
    run(["tar", "-xSf", str(tmp_path / "t.tar"), "-C", str(extract)])
    assert (extract / "disk.img").read_bytes() == image.read_bytes()
    assert int(field(manifest, "bundled_size")) == sum(p.stat().st_size for p in result.part_paths)


def test_ec2_certificate_of_the_classic_tools_works(
    tmp_path: Path, user_id: Identity, shared: Path
) -> None:
    """The classic cert-ec2.pem (RSA-1024, SHA-1, expired 2006) as --ec2cert."""
    cert = shared / "ec2-certs" / "cert-ec2.pem"
    result = bundle(
        sample_image(tmp_path / "disk.img", 2), tmp_path / "out", user_id, ec2_cert=cert
    )
    wrapped = field(result.manifest_path.read_bytes(), "ec2_encrypted_key")
    assert len(wrapped) == 256  # 1024-bit RSA output, hex
    assert result.ec2_certificate == cert


# --- property test over image layouts ---------------------------------------------

_piece = st.tuples(
    st.integers(0, 96 * KIB),
    st.one_of(
        st.binary(min_size=1, max_size=3000),
        st.integers(1, 70 * KIB).map(bytes),  # zero runs inside data
        st.integers(1, 20 * KIB).map(lambda n: b"\xa5" * n),
    ),
)


@st.composite
def layouts(draw: st.DrawFn) -> tuple[int, list[tuple[int, bytes]]]:
    size = draw(
        st.one_of(
            st.sampled_from([0, 1, 511, 512, 513, 10239, 10240, 10241]),
            st.integers(0, 160 * KIB),
        )
    )
    writes = [(o, d[: max(0, size - o)]) for o, d in draw(st.lists(_piece, max_size=5)) if o < size]
    return size, writes


_names = st.one_of(
    st.just("disk.img"),
    st.text(
        st.characters(blacklist_characters="/\\\x7f", blacklist_categories=("Cs", "Cc")),
        min_size=1,
        max_size=120,
    ).filter(lambda s: s not in (".", "..") and len(s.encode()) < 200),
    st.integers(101, 180).map(lambda n: "n" * n),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(layout=layouts(), name=_names, part_size=st.sampled_from([16, 61, 4096, 10 * KIB * KIB]))
def test_any_layout_round_trips_through_gnu_tools(
    tmp_path_factory: pytest.TempPathFactory,
    user_id: Identity,
    layout: tuple[int, list[tuple[int, bytes]]],
    name: str,
    part_size: int,
) -> None:
    tmp = tmp_path_factory.mktemp("layout")
    size, writes = layout
    image = write_image(tmp / "image", size, writes)
    result = bundle(
        image, tmp / "out", user_id, prefix=name, part_size=part_size, size_checks=False
    )
    count = len(result.part_paths)
    digits = len(str(count))
    assert [p.name for p in result.part_paths] == [
        f"{name}.part.{i:0{digits}d}" for i in range(count)
    ]
    assert all(p.stat().st_size == part_size for p in result.part_paths[:-1])
    assert 0 < result.part_paths[-1].stat().st_size <= part_size
    tar = run(["gunzip", "-c"], decrypt_parts(result.manifest_path, user_id.key))
    assert hashlib.sha1(tar).hexdigest() == result.digest
    (tmp / "t.tar").write_bytes(tar)
    extract = tmp / "x"
    extract.mkdir()
    run(["tar", "-xSf", str(tmp / "t.tar"), "-C", str(extract)])
    assert (extract / name).read_bytes() == image.read_bytes()
    back = tmp / "back"
    back.mkdir()
    unbundled = amibundle.unbundle(
        result.manifest_path, private_key=user_id.key, destination=back, cert=user_id.cert
    )
    assert unbundled.image_path.read_bytes() == image.read_bytes()


@pytest.mark.parametrize(("part_size", "digits"), [(10_000, 1), (100, 2), (40, 3)])
def test_part_names_follow_the_digit_rule(
    tmp_path: Path, user_id: Identity, part_size: int, digits: int
) -> None:
    image = write_image(tmp_path / "disk.img", 5000, [(0, os.urandom(4864))])  # incompressible
    result = bundle(image, tmp_path / "out", user_id, part_size=part_size)
    names = [p.name for p in result.part_paths]
    assert len(str(len(names))) == digits
    assert names == [f"disk.img.part.{i:0{digits}d}" for i in range(len(names))]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [*names, "disk.img.manifest.xml"]
    )
