"""Bundles made by the other tools EC2 registers from (euca2ools, go_ami_tools, the Ruby
tools before 1.5: built by tests.support.peers) are read by unbundle, verify and inspect,
through the library and the commands."""

from __future__ import annotations

from pathlib import Path

import pytest

import amibundle
from amibundle.cli import classic_main, main
from amibundle.crypto import load_private_key, unwrap_secret
from tests.support.common import Identity
from tests.support.peers import PEERS, Peer, PeerBundle, make_peer_bundle

# Part sizes that give each shape its part naming: euca2ools pads 3 parts to two digits,
# the Go tools write 12 parts without padding.
PART_SIZES = {Peer.EUCA2OOLS: 30_000, Peer.GO: 6_500, Peer.GO_EMPTY_BUNDLER: 6_500}


def peer_bundle(peer: Peer, folder: Path, user: Identity, ec2: Identity) -> PeerBundle:
    return make_peer_bundle(
        peer, folder, user, ec2, part_size=PART_SIZES.get(peer, 8192), kernel_id="aki-12345678"
    )


def test_the_shapes_are_what_the_peers_write(
    tmp_path: Path, user_id: Identity, ec2_id: Identity
) -> None:
    euca = peer_bundle(Peer.EUCA2OOLS, tmp_path / "e", user_id, ec2_id)
    assert [p.name for p in euca.parts] == [f"peer.img.part.0{i}" for i in range(3)]
    go = peer_bundle(Peer.GO, tmp_path / "g", user_id, ec2_id)
    assert [p.name for p in go.parts][9:] == [
        "peer.img.part.9",
        "peer.img.part.10",
        "peer.img.part.11",
    ]
    assert not euca.manifest.read_bytes().startswith(b"<?xml")
    assert b'count="12"' in go.manifest.read_bytes()


@pytest.mark.parametrize("peer", PEERS, ids=lambda p: p.value)
def test_library_reads_every_peer(
    peer: Peer, tmp_path: Path, user_id: Identity, ec2_id: Identity
) -> None:
    bundle = peer_bundle(peer, tmp_path / "bundle", user_id, ec2_id)
    info = amibundle.inspect_manifest(bundle.manifest, cert=user_id.cert)
    assert info.signature_valid
    assert [p.filename for p in info.manifest.parts] == [p.name for p in bundle.parts]
    assert info.manifest.kernel_id == bundle.kernel_id
    report = amibundle.verify_bundle(bundle.manifest, cert=user_id.cert, private_key=user_id.key)
    assert report.ok, report.problems
    out = tmp_path / "out"
    out.mkdir()
    result = amibundle.unbundle(
        bundle.manifest, private_key=user_id.key, destination=out, cert=user_id.cert
    )
    assert result.image_path.read_bytes() == bundle.image
    # EC2's copy of the key is there too, for EC2's key.
    manifest = info.manifest
    ec2_key = load_private_key(ec2_id.key)
    user_key = load_private_key(user_id.key)
    for ec2_field, user_field in (
        (manifest.ec2_encrypted_key, manifest.user_encrypted_key),
        (manifest.ec2_encrypted_iv, manifest.user_encrypted_iv),
    ):
        assert unwrap_secret(ec2_key, ec2_field, "ec2") == unwrap_secret(
            user_key, user_field, "user"
        )


@pytest.mark.parametrize("peer", [Peer.EUCA2OOLS, Peer.GO_EMPTY_BUNDLER, Peer.RUBY_V3])
def test_commands_read_every_peer(
    peer: Peer,
    tmp_path: Path,
    user_id: Identity,
    ec2_id: Identity,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bundle = peer_bundle(peer, tmp_path / "bundle", user_id, ec2_id)
    out = tmp_path / "out"
    out.mkdir()
    argv = ["-m", str(bundle.manifest), "-k", str(user_id.key), "-s", str(bundle.manifest.parent)]
    assert classic_main("ec2-unbundle", [*argv, "-d", str(out), "-q"]) == 0
    assert (out / "peer.img").read_bytes() == bundle.image
    assert main(["verify", "-m", str(bundle.manifest), "-c", str(user_id.cert)]) == 0
    assert main(["inspect", "-m", str(bundle.manifest), "-c", str(user_id.cert)]) == 0
    text = capsys.readouterr().out
    assert "peer.img" in text


def test_a_tampered_peer_part_is_still_refused(
    tmp_path: Path, user_id: Identity, ec2_id: Identity
) -> None:
    bundle = peer_bundle(Peer.GO, tmp_path / "bundle", user_id, ec2_id)
    data = bytearray(bundle.parts[5].read_bytes())
    data[100] ^= 1
    bundle.parts[5].write_bytes(bytes(data))
    report = amibundle.verify_bundle(bundle.manifest, cert=user_id.cert)
    assert not report.ok
    assert any("peer.img.part.5 is damaged" in p for p in report.problems)
    with pytest.raises(amibundle.AmibundleError, match=r"peer\.img\.part\.5"):
        amibundle.unbundle(bundle.manifest, private_key=user_id.key, destination=tmp_path)
    assert not (tmp_path / "peer.img").exists()
