"""download_bundle against real S3 servers: the round trip back to the original
image, resume, damaged objects, and hostile manifests that try to write
outside the download folder."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

import amibundle
from amibundle import s3
from amibundle.errors import IntegrityError, ManifestError, UsageError
from amibundle.format.manifest import MAX_MANIFEST_SIZE
from amibundle.progress import Stage
from tests.support.common import Identity
from tests.support.s3bundles import MakeProxy, RaiseAfter, Recording, make_bundle, settings_for
from tests.support.s3proxy import Proxy
from tests.support.s3servers import S3Server


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (recursively): relative path -> content."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _gets(proxy: Proxy, bucket: str) -> list[str]:
    return [r.path[len(f"/{bucket}/") :] for r in proxy.requests if r.method == "GET"]


def test_round_trip_gives_back_the_original_image(
    s3_server: S3Server, tmp_path: Path, user_id: Identity
) -> None:
    bundle = make_bundle(tmp_path, user_id, size=500_000)
    settings = settings_for(s3_server, jobs=4)
    bucket = s3.parse_bucket("round-trip/deep/key/prefix")
    uploaded = s3.upload_bundle(bundle.manifest, bucket, settings=settings)
    target = tmp_path / "downloaded"
    target.mkdir()
    progress = Recording()

    result = s3.download_bundle(
        bucket,
        settings=settings,
        manifest_name="img.manifest.xml",
        directory=target,
        progress=progress,
    )

    assert sorted(p.name for p in target.iterdir()) == sorted(bundle.names)
    for original in (*bundle.parts, bundle.manifest):
        assert (target / original.name).read_bytes() == original.read_bytes()
    assert result.manifest_path == target / "img.manifest.xml"
    assert result.part_paths == tuple(target / p.name for p in bundle.parts)
    assert result.parts_downloaded == len(bundle.parts) and result.parts_skipped == 0
    assert result.bytes_downloaded == uploaded.bytes_uploaded
    parts_size = sum(p.stat().st_size for p in bundle.parts)
    assert progress.total(Stage.DOWNLOAD) == parts_size
    assert ("start", Stage.DOWNLOAD, parts_size) in progress.calls

    report = amibundle.verify_bundle(
        result.manifest_path, cert=user_id.cert, private_key=user_id.key
    )
    assert report.ok, report.problems
    restored = tmp_path / "restored"
    restored.mkdir()
    image = amibundle.unbundle(
        result.manifest_path, private_key=user_id.key, destination=restored, cert=user_id.cert
    )
    assert image.image_path.read_bytes() == bundle.image.read_bytes()


def test_download_resumes_keeping_valid_parts_and_replacing_bad_ones(
    moto_s3: S3Server, make_proxy: MakeProxy, tmp_path: Path, user_id: Identity
) -> None:
    bundle = make_bundle(tmp_path, user_id, size=400_000)
    s3.upload_bundle(bundle.manifest, s3.BucketRef("resumable"), settings=settings_for(moto_s3))
    target = tmp_path / "downloaded"
    target.mkdir()
    for part in bundle.parts:
        (target / part.name).write_bytes(part.read_bytes())
    missing, damaged, short = bundle.parts[0], bundle.parts[2], bundle.parts[-1]
    (target / missing.name).unlink()
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF
    (target / damaged.name).write_bytes(bytes(data))
    (target / short.name).write_bytes(short.read_bytes()[:-10])
    proxy = make_proxy(moto_s3.endpoint_url)

    result = s3.download_bundle(
        s3.BucketRef("resumable"),
        settings=settings_for(moto_s3, proxy.endpoint_url),
        manifest_name="img.manifest.xml",
        directory=target,
    )

    assert sorted(_gets(proxy, "resumable")) == sorted(
        [bundle.manifest.name, missing.name, damaged.name, short.name]
    )
    assert result.parts_skipped == len(bundle.parts) - 3 and result.parts_downloaded == 3
    assert _tree(target) == {p.name: p.read_bytes() for p in (*bundle.parts, bundle.manifest)}


def test_part_that_does_not_match_the_manifest_is_not_kept(
    s3_server: S3Server, tmp_path: Path, user_id: Identity
) -> None:
    bundle = make_bundle(tmp_path, user_id, size=300_000)
    s3.upload_bundle(bundle.manifest, s3.BucketRef("tampered"), settings=settings_for(s3_server))
    victim = bundle.parts[1]
    s3_server.client().put_object(
        Bucket="tampered", Key=victim.name, Body=os.urandom(victim.stat().st_size)
    )
    target = tmp_path / "downloaded"
    target.mkdir()

    with pytest.raises(IntegrityError, match=victim.name):
        s3.download_bundle(
            s3.BucketRef("tampered"),
            settings=settings_for(s3_server, jobs=1),
            manifest_name="img.manifest.xml",
            directory=target,
        )
    left = _tree(target)
    assert victim.name not in left and bundle.manifest.name not in left  # manifest comes last
    # Whatever is left is complete and right: no temporary or partial file.
    originals = {p.name: p.read_bytes() for p in bundle.parts}
    assert all(originals.get(name) == data for name, data in left.items())


def test_interrupted_download_leaves_only_complete_parts(
    moto_s3: S3Server, tmp_path: Path, user_id: Identity
) -> None:
    bundle = make_bundle(tmp_path, user_id, size=4 << 20, part_size=256 << 10)
    s3.upload_bundle(bundle.manifest, s3.BucketRef("halfway"), settings=settings_for(moto_s3))
    target = tmp_path / "downloaded"
    target.mkdir()
    total = sum(p.stat().st_size for p in bundle.parts)

    with pytest.raises(RaiseAfter.Interrupt):
        s3.download_bundle(
            s3.BucketRef("halfway"),
            settings=settings_for(moto_s3, jobs=3),
            manifest_name="img.manifest.xml",
            directory=target,
            progress=RaiseAfter(Stage.DOWNLOAD, total // 2),
        )
    left = _tree(target)
    originals = {p.name: p.read_bytes() for p in bundle.parts}
    assert 0 < len(left) < len(bundle.parts)
    assert all(originals.get(name) == data for name, data in left.items())

    result = s3.download_bundle(
        s3.BucketRef("halfway"),
        settings=settings_for(moto_s3),
        manifest_name="img.manifest.xml",
        directory=target,
    )
    assert result.parts_skipped == len(left)
    assert _tree(target) == {**originals, bundle.manifest.name: bundle.manifest.read_bytes()}


@pytest.mark.parametrize(
    "hostile",
    [
        "../escaped.part.0",
        "../../escaped.part.0",
        "/tmp/escaped.part.0",
        "sub/escaped.part.0",
        "..",
    ],
)
def test_hostile_manifest_in_the_bucket_writes_nothing_anywhere(
    s3_server: S3Server, tmp_path: Path, user_id: Identity, hostile: str
) -> None:
    """A manifest in the bucket naming a part ``../x`` (or absolute, or in a
    subfolder) is refused by the manifest parser: nothing is fetched or
    written, inside the download folder or outside it."""
    bundle = make_bundle(tmp_path / "b", user_id, size=70_000)
    first = bundle.parts[0].name
    raw = bundle.manifest.read_bytes()
    assert raw.count(f"<filename>{first}</filename>".encode()) == 1
    evil = raw.replace(
        f"<filename>{first}</filename>".encode(), f"<filename>{hostile}</filename>".encode()
    )
    client = s3_server.client()
    client.create_bucket(Bucket="hostile")
    client.put_object(Bucket="hostile", Key="x/img.manifest.xml", Body=evil)
    # The object the hostile name points at, where the server allows such a key
    # (SeaweedFS refuses keys with ".." components).
    with contextlib.suppress(ClientError):
        client.put_object(Bucket="hostile", Key=f"x/{hostile}", Body=bundle.parts[0].read_bytes())
    area = tmp_path / "area"
    target = area / "one" / "two"
    target.mkdir(parents=True)
    before = _tree(tmp_path)

    with pytest.raises(ManifestError) as caught:
        s3.download_bundle(
            s3.BucketRef("hostile", "x/"),
            settings=settings_for(s3_server),
            manifest_name="img.manifest.xml",
            directory=target,
        )
    assert "plain file name" in str(caught.value) and "\n" not in str(caught.value)
    assert _tree(tmp_path) == before
    assert not Path("/tmp/escaped.part.0").exists()


def test_manifest_listing_itself_as_a_part_is_refused(
    moto_s3: S3Server, tmp_path: Path, user_id: Identity
) -> None:
    bundle = make_bundle(tmp_path / "b", user_id, size=70_000)
    first = bundle.parts[0].name
    evil = bundle.manifest.read_bytes().replace(
        f"<filename>{first}</filename>".encode(), b"<filename>img.manifest.xml</filename>"
    )
    client = moto_s3.client()
    client.create_bucket(Bucket="selfish")
    client.put_object(Bucket="selfish", Key="img.manifest.xml", Body=evil)
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(ManifestError, match="lists itself"):
        s3.download_bundle(
            s3.BucketRef("selfish"),
            settings=settings_for(moto_s3),
            manifest_name="img.manifest.xml",
            directory=target,
        )
    assert list(target.iterdir()) == []


@pytest.mark.parametrize("name", ["../img.manifest.xml", "a/img.manifest.xml", "", ".."])
def test_manifest_name_must_be_a_plain_name(
    moto_s3: S3Server, make_proxy: MakeProxy, tmp_path: Path, name: str
) -> None:
    proxy = make_proxy(moto_s3.endpoint_url)
    with pytest.raises(UsageError):
        s3.download_bundle(
            s3.BucketRef("any-bucket"),
            settings=settings_for(moto_s3, proxy.endpoint_url),
            manifest_name=name,
            directory=tmp_path,
        )
    assert proxy.requests == []


def test_missing_manifest_is_one_clear_error(s3_server: S3Server, tmp_path: Path) -> None:
    s3_server.client().create_bucket(Bucket="empty-bucket")
    with pytest.raises(s3.S3Error) as caught:
        s3.download_bundle(
            s3.BucketRef("empty-bucket", "p/"),
            settings=settings_for(s3_server),
            manifest_name="img.manifest.xml",
            directory=tmp_path,
        )
    assert (
        str(caught.value) == "there is no bundle manifest at s3://empty-bucket/p/img.manifest.xml"
    )
    assert list(tmp_path.iterdir()) == []


def test_oversized_manifest_is_refused(moto_s3: S3Server, tmp_path: Path) -> None:
    client = moto_s3.client()
    client.create_bucket(Bucket="huge")
    client.put_object(Bucket="huge", Key="img.manifest.xml", Body=b"<" * (MAX_MANIFEST_SIZE + 1))
    with pytest.raises(ManifestError, match=f"larger than {MAX_MANIFEST_SIZE >> 20} MiB"):
        s3.download_bundle(
            s3.BucketRef("huge"),
            settings=settings_for(moto_s3),
            manifest_name="img.manifest.xml",
            directory=tmp_path,
        )
    assert list(tmp_path.iterdir()) == []


def test_download_folder_must_exist(moto_s3: S3Server, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not an existing directory"):
        s3.download_bundle(
            s3.BucketRef("any-bucket"),
            settings=settings_for(moto_s3),
            manifest_name="img.manifest.xml",
            directory=tmp_path / "nowhere",
        )


def test_symlink_in_place_of_a_part_is_replaced_not_followed(
    moto_s3: S3Server, tmp_path: Path, user_id: Identity
) -> None:
    bundle = make_bundle(tmp_path / "b", user_id, size=70_000)
    s3.upload_bundle(bundle.manifest, s3.BucketRef("links"), settings=settings_for(moto_s3))
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"do not touch")
    target = tmp_path / "target"
    target.mkdir()
    (target / bundle.parts[0].name).symlink_to(outside)
    s3.download_bundle(
        s3.BucketRef("links"),
        settings=settings_for(moto_s3),
        manifest_name="img.manifest.xml",
        directory=target,
    )
    assert outside.read_bytes() == b"do not touch"
    assert not (target / bundle.parts[0].name).is_symlink()
    assert (
        hashlib.sha1((target / bundle.parts[0].name).read_bytes()).hexdigest()
        == hashlib.sha1(bundle.parts[0].read_bytes()).hexdigest()
    )
