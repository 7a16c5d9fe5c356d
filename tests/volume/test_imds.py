"""The instance metadata client against a small IMDS on 127.0.0.1."""

from __future__ import annotations

import time

import pytest

from amibundle.cli._errors import exit_code_for
from amibundle.cli._options import Style
from amibundle.errors import MetadataUnavailable
from amibundle.volume.imds import (
    DEFAULT_ENDPOINT,
    MetadataClient,
    endpoint_from_environment,
)
from tests.support.imdsserver import DEFAULT_DATA, TOKEN, closed_port_endpoint, imds


def test_imdsv2_token_sent_with_every_request() -> None:
    with imds() as server:
        data = MetadataClient(server.endpoint).inherited()
    puts = [r for r in server.requests if r[0] == "PUT"]
    gets = [r for r in server.requests if r[0] == "GET"]
    assert len(puts) == 1 and puts[0][1] == "/latest/api/token"
    assert gets and all(token == TOKEN for _m, _p, token in gets)
    assert data.kernel_id == "aki-11111111" and data.ramdisk_id == "ari-22222222"
    assert data.product_codes == ("PC11111", "PC22222")
    assert dict(data.block_device_mapping) == {
        "ami": "sda1",
        "root": "/dev/sda1",
        "ephemeral0": "sdb",
        "swap": "sda3",
    }
    assert data.ancestry == ("ami-00000001", "ami-00000002", "ami-12345678")
    assert data.missing == ()


def test_imdsv1_fallback() -> None:
    with imds(v1_only=True) as server:
        data = MetadataClient(server.endpoint).inherited()
    assert data.kernel_id == "aki-11111111"
    assert all(token is None for method, _p, token in server.requests if method == "GET")


def test_missing_keys_are_noted_not_fatal() -> None:
    data_without = {k: v for k, v in DEFAULT_DATA.items() if k not in ("kernel-id", "ramdisk-id")}
    data_without["ancestor-ami-ids"] = "ami-12345678"
    with imds(data_without) as server:
        data = MetadataClient(server.endpoint).inherited()
    assert data.kernel_id is None and data.ramdisk_id is None
    assert set(data.missing) == {"kernel-id", "ramdisk-id"}
    assert data.ancestry == ("ami-12345678",)  # own AMI not repeated


def test_unreachable_is_quick_and_specific() -> None:
    client = MetadataClient(closed_port_endpoint())
    started = time.monotonic()
    with pytest.raises(MetadataUnavailable) as caught:
        client.check()
    assert time.monotonic() - started < 3
    assert "cannot be reached" in str(caught.value) and "\n" not in str(caught.value)
    assert exit_code_for(caught.value, Style.CLASSIC) == 12


def test_endpoint_and_disable_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", raising=False)
    assert endpoint_from_environment() == DEFAULT_ENDPOINT
    with imds() as server:
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", server.endpoint + "/")
        assert MetadataClient().get("ami-id") == "ami-12345678"
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        with pytest.raises(MetadataUnavailable, match="disabled"):
            MetadataClient().check()


def test_proxy_settings_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", closed_port_endpoint())
    monkeypatch.setenv("HTTP_PROXY", closed_port_endpoint())
    with imds() as server:
        assert MetadataClient(server.endpoint).get("kernel-id") == "aki-11111111"


def test_expired_token_is_renewed() -> None:
    with imds() as server:
        client = MetadataClient(server.endpoint)
        client.get("ami-id")
        client._token = "stale"  # as after the token's TTL
        assert client.get("ami-id") == "ami-12345678"
    assert [r[0] for r in server.requests].count("PUT") == 2
