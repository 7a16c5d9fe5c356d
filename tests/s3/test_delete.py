"""delete_bundle against real S3 servers: exactly the bundle's keys, the manifest
first, neighbours untouched, a "no" that deletes nothing, and --clear."""

from __future__ import annotations

from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from amibundle import s3
from amibundle.errors import UsageError
from tests.support.common import Identity
from tests.support.s3bundles import Bundle, MakeProxy, make_bundle, object_bytes, settings_for
from tests.support.s3servers import S3Server


def _keys(server: S3Server, bucket: str) -> set[str]:
    return set(object_bytes(server, bucket))


def _neighbourhood(server: S3Server, tmp_path: Path, user_id: Identity) -> dict[str, Bundle]:
    """Four bundles in bucket "shared": img and img2 (names sharing a prefix) under
    a/, img under b/ and under a/x/."""
    settings = settings_for(server)
    bundles = {}
    for where, name, seed in (
        ("a/", "img", 1),
        ("a/", "img2", 2),
        ("b/", "img", 3),
        ("a/x/", "img", 4),
    ):
        bundle = make_bundle(
            tmp_path / f"{where}{name}", user_id, name=name, size=150_000, seed=seed
        )
        s3.upload_bundle(bundle.manifest, s3.BucketRef("shared", where), settings=settings)
        bundles[f"{where}{name}"] = bundle
    return bundles


def _bundle_keys(where: str, bundle: Bundle) -> set[str]:
    return {f"{where}{name}" for name in bundle.names}


@pytest.mark.parametrize("by", ["manifest", "prefix"])
def test_delete_removes_exactly_the_bundle_and_leaves_neighbours(
    s3_server: S3Server, tmp_path: Path, user_id: Identity, by: str
) -> None:
    bundles = _neighbourhood(s3_server, tmp_path, user_id)
    before = object_bytes(s3_server, "shared")
    target = bundles["a/img"]
    asked: list[list[str]] = []

    def confirm(keys: list[str]) -> bool:
        asked.append(keys)
        return True

    result = s3.delete_bundle(
        s3.BucketRef("shared", "a/"),
        settings=settings_for(s3_server),
        manifest=target.manifest if by == "manifest" else None,
        prefix="img" if by == "prefix" else None,
        confirm=confirm,
    )

    expected = ["a/img.manifest.xml", *(f"a/{p.name}" for p in target.parts)]
    assert asked == [expected]  # manifest first, then the parts in manifest order
    assert list(result.deleted) == expected and list(result.keys) == expected
    assert not result.declined and not result.bucket_removed
    after = object_bytes(s3_server, "shared")
    assert after == {k: v for k, v in before.items() if k not in set(expected)}
    for other in ("a/img2", "b/img", "a/x/img"):
        where = other.rsplit("/", 1)[0] + "/"
        assert _bundle_keys(where, bundles[other]) <= set(after)


def test_manifest_is_deleted_before_any_part(
    moto_s3: S3Server, make_proxy: MakeProxy, tmp_path: Path, user_id: Identity
) -> None:
    bundle = make_bundle(tmp_path, user_id, size=300_000)
    s3.upload_bundle(bundle.manifest, s3.BucketRef("ordered", "p/"), settings=settings_for(moto_s3))
    proxy = make_proxy(moto_s3.endpoint_url)
    s3.delete_bundle(
        s3.BucketRef("ordered", "p/"),
        settings=settings_for(moto_s3, proxy.endpoint_url, jobs=4),
        manifest=bundle.manifest,
    )
    deletes = [r.path for r in proxy.requests if r.method == "DELETE"]
    assert deletes[0] == "/ordered/p/img.manifest.xml"
    assert sorted(deletes[1:]) == sorted(f"/ordered/p/{p.name}" for p in bundle.parts)
    assert _keys(moto_s3, "ordered") == set()


def test_no_deletes_nothing_not_even_with_clear(
    s3_server: S3Server, make_proxy: MakeProxy, tmp_path: Path, user_id: Identity
) -> None:
    bundle = make_bundle(tmp_path, user_id, size=150_000)
    s3.upload_bundle(bundle.manifest, s3.BucketRef("keep-me"), settings=settings_for(s3_server))
    proxy = make_proxy(s3_server.endpoint_url)
    result = s3.delete_bundle(
        s3.BucketRef("keep-me"),
        settings=settings_for(s3_server, proxy.endpoint_url),
        prefix="img",
        clear=True,
        confirm=lambda keys: False,
    )
    assert result.declined and result.deleted == () and not result.bucket_removed
    assert [r.method for r in proxy.requests] == ["GET"]  # the manifest, nothing else
    assert _keys(s3_server, "keep-me") == set(bundle.names)


def test_an_exception_from_confirm_propagates_and_deletes_nothing(
    moto_s3: S3Server, tmp_path: Path, user_id: Identity
) -> None:
    bundle = make_bundle(tmp_path, user_id, size=70_000)
    s3.upload_bundle(bundle.manifest, s3.BucketRef("asked"), settings=settings_for(moto_s3))

    class Declined(Exception):
        pass

    def refuse(keys: list[str]) -> bool:
        raise Declined

    with pytest.raises(Declined):
        s3.delete_bundle(
            s3.BucketRef("asked"),
            settings=settings_for(moto_s3),
            manifest=bundle.manifest,
            confirm=refuse,
        )
    assert _keys(moto_s3, "asked") == set(bundle.names)


def test_clear_removes_the_bucket_only_when_empty(
    s3_server: S3Server, tmp_path: Path, user_id: Identity
) -> None:
    settings = settings_for(s3_server)
    one = make_bundle(tmp_path / "one", user_id, name="one", size=70_000, seed=1)
    two = make_bundle(tmp_path / "two", user_id, name="two", size=70_000, seed=2)
    s3.upload_bundle(one.manifest, s3.BucketRef("clearable"), settings=settings)
    s3.upload_bundle(two.manifest, s3.BucketRef("clearable"), settings=settings)

    with pytest.raises(s3.S3Error) as caught:
        s3.delete_bundle(
            s3.BucketRef("clearable"), settings=settings, manifest=one.manifest, clear=True
        )
    message = str(caught.value)
    assert "clearable" in message and "not empty" in message and "two." in message
    assert isinstance(caught.value, s3.BucketNotEmptyError)
    assert message.startswith(f"deleted the bundle ({len(one.names)} objects from s3://clearable/)")
    assert set(caught.value.deleted) == set(one.names)
    assert caught.value.hint == "delete what else it holds first, or leave out clear=True"
    assert _keys(s3_server, "clearable") == set(two.names)  # one's bundle went, two's stayed

    result = s3.delete_bundle(
        s3.BucketRef("clearable"), settings=settings, prefix="two", clear=True
    )
    assert result.bucket_removed
    names = [b["Name"] for b in s3_server.client().list_buckets().get("Buckets", [])]
    assert "clearable" not in names


def test_missing_manifest_in_the_bucket_deletes_nothing(
    moto_s3: S3Server, tmp_path: Path, user_id: Identity
) -> None:
    bundle = make_bundle(tmp_path, user_id, size=70_000)
    s3.upload_bundle(bundle.manifest, s3.BucketRef("partly"), settings=settings_for(moto_s3))
    with pytest.raises(s3.S3Error, match=r"no bundle manifest at s3://partly/other\.manifest\.xml"):
        s3.delete_bundle(s3.BucketRef("partly"), settings=settings_for(moto_s3), prefix="other")
    assert _keys(moto_s3, "partly") == set(bundle.names)


@pytest.mark.parametrize("prefix", ["../img", "a/img", "", ".."])
def test_bundle_prefix_must_be_a_plain_name(moto_s3: S3Server, prefix: str) -> None:
    with pytest.raises(UsageError):
        s3.delete_bundle(s3.BucketRef("any-bucket"), settings=settings_for(moto_s3), prefix=prefix)


def test_exactly_one_of_manifest_and_prefix(moto_s3: S3Server, tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        s3.delete_bundle(s3.BucketRef("any-bucket"), settings=settings_for(moto_s3))
    with pytest.raises(UsageError):
        s3.delete_bundle(
            s3.BucketRef("any-bucket"),
            settings=settings_for(moto_s3),
            manifest=tmp_path / "m",
            prefix="img",
        )


def test_unknown_bucket_is_one_clear_error(
    s3_server: S3Server, tmp_path: Path, user_id: Identity
) -> None:
    bundle = make_bundle(tmp_path, user_id, size=70_000)
    for request in ({"manifest": bundle.manifest}, {"prefix": "img"}):
        with pytest.raises(s3.NoSuchBucketError) as caught:
            s3.delete_bundle(
                s3.BucketRef("no-such-bucket"), settings=settings_for(s3_server), **request
            )
        assert "\n" not in str(caught.value) and "no-such-bucket" in str(caught.value)
    with pytest.raises(ClientError):
        s3_server.client().head_bucket(Bucket="no-such-bucket")  # and none was made
