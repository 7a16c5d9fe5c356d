"""download reads bundles that other tools put into S3 (shapes of tests.support.peers),
against moto and SeaweedFS (one peer each is enough: the reading is the same code)."""

from __future__ import annotations

from pathlib import Path

import pytest

import amibundle
from amibundle import s3
from tests.support.common import Identity
from tests.support.peers import Peer, make_peer_bundle
from tests.support.s3bundles import settings_for
from tests.support.s3servers import S3Server


@pytest.mark.parametrize(
    ("peer", "server"),
    [(Peer.EUCA2OOLS, "seaweed_s3"), (Peer.GO, "moto_s3"), (Peer.RUBY_V3, "moto_s3")],
    ids=lambda value: value.value if isinstance(value, Peer) else value,
)
def test_download_reads_a_peer_bundle(
    peer: Peer,
    server: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    user_id: Identity,
    ec2_id: Identity,
) -> None:
    s3_server: S3Server = request.getfixturevalue(server)
    bundle = make_peer_bundle(peer, tmp_path / "made", user_id, ec2_id, part_size=6_500)
    client = s3_server.client()
    client.create_bucket(Bucket="peers")
    # Put there as the peer tool did: plain PUTs, under a prefix.
    for path in (*bundle.parts, bundle.manifest):
        client.put_object(Bucket="peers", Key=f"from/{path.name}", Body=path.read_bytes())
    into = tmp_path / "fetched"
    into.mkdir()
    result = s3.download_bundle(
        "peers/from",
        settings=settings_for(s3_server),
        manifest_name=bundle.manifest.name,
        directory=into,
    )
    assert [p.name for p in result.part_paths] == [p.name for p in bundle.parts]
    report = amibundle.verify_bundle(
        result.manifest_path, cert=user_id.cert, private_key=user_id.key
    )
    assert report.ok, report.problems
