"""A zstd bundle is refused for AWS (EC2 reads gzip only) before anything is
sent, unless allowed; other S3 endpoints take it. The manifest's bundler
element says zstd (upload has no key to look inside)."""

from __future__ import annotations

from pathlib import Path

import pytest

from amibundle import s3
from amibundle.cli import main
from amibundle.compression import Compression
from amibundle.errors import UsageError
from amibundle.pipeline import Codec
from amibundle.s3.upload import refuse_zstd_for_aws
from tests.support.bundling import bundle_for
from tests.support.common import Identity, sample_image
from tests.support.s3bundles import settings_for
from tests.support.s3servers import MotoServer


@pytest.fixture
def no_way_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """If a refusal failed, the request would go nowhere (a closed local port)."""
    for variable in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def zstd_bundle(tmp_path: Path, identity: Identity) -> Path:
    image = sample_image(tmp_path / "disk.img", 1)
    result = bundle_for(image, identity, destination=tmp_path, codec=Codec(Compression.ZSTD))
    return result.manifest_path


@pytest.mark.parametrize("url", [None, "https://s3.eu-west-1.amazonaws.com"])
def test_a_zstd_bundle_is_refused_for_aws(
    url: str | None, tmp_path: Path, user_id: Identity, no_way_out: None
) -> None:
    manifest = zstd_bundle(tmp_path, user_id)
    with pytest.raises(UsageError, match="compressed with zstd, which EC2 cannot read") as err:
        s3.upload_bundle(manifest, "bkt/p", settings=s3.S3Settings(endpoint_url=url))
    assert err.value.param == "allow_zstd" and "allow_zstd=True" in str(err.value.hint)
    refuse_zstd_for_aws(s3.S3Settings(), allow_zstd=True, what="x")  # allowed: no error


def test_the_command_names_its_flag(
    tmp_path: Path, user_id: Identity, no_way_out: None, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = zstd_bundle(tmp_path, user_id)
    assert main(["upload", "-b", "bkt/p", "-m", str(manifest), "--region", "eu-west-1"]) == 2
    err = capsys.readouterr().err
    assert "--allow-zstd uploads it all the same" in err


def test_other_endpoints_take_a_zstd_bundle(
    moto_s3: MotoServer, tmp_path: Path, user_id: Identity
) -> None:
    manifest = zstd_bundle(tmp_path, user_id)
    result = s3.upload_bundle(manifest, "zbucket/p", settings=settings_for(moto_s3))
    assert result.manifest_uploaded and result.parts_uploaded == 1
