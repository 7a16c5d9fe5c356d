"""Ctrl-C and SIGTERM during to-ebs: the command ends within 2 s with the interrupt status,
and the snapshot is never completed (it is deleted); or, when the work was done before the
signal, status 0 and a completed snapshot. The command runs as a process, through the
recording proxy to the stand-in (no CompleteSnapshot may reach it after a signal)."""

from __future__ import annotations

import os
import random
import signal
import sys
from pathlib import Path

import pytest

from tests.support.aws import AwsStandIn
from tests.support.bundling import bundle_for
from tests.support.common import Identity, write_image
from tests.support.interrupts import Ending, signalled
from tests.support.s3proxy import Faults, Proxy

AMIBUNDLE = Path(sys.executable).parent / "amibundle"
GRACE = 2.0
MIB = 1 << 20

pytestmark = pytest.mark.skipif(not AMIBUNDLE.exists(), reason=f"{AMIBUNDLE} is not installed")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, user_id: Identity) -> Path:
    """16 MiB of incompressible data: 32 blocks, a second or so of work."""
    folder = tmp_path_factory.mktemp("interrupt")
    image = write_image(folder / "disk.img", 16 * MIB, [(0, random.Random(1).randbytes(16 * MIB))])
    out = folder / "bundle"
    out.mkdir()
    os.environ.setdefault("AMIBUNDLE_EC2_CERT", str(user_id.cert))
    return bundle_for(image, user_id, destination=out).manifest_path


def to_ebs(
    bundle: Path,
    user: Identity,
    aws: AwsStandIn,
    proxy: Proxy,
    delay: float,
    signals: tuple[signal.Signals, ...],
    *,
    writing: bool = False,
) -> Ending:
    """The command, signalled ``delay`` s after it handles signals (``writing``: after it
    sent its first block)."""
    argv = [str(AMIBUNDLE), "to-ebs", "-m", str(bundle), "-k", str(user.key), "-q", "--jobs", "2"]
    env = {**os.environ, **aws.environment(proxy.endpoint_url)}

    def sent_a_block() -> bool:
        return any(r.method == "PUT" for r in proxy.requests)

    return signalled(argv, delay, signals, env=env, ready=sent_a_block if writing else None)


def check_not_completed(ending: Ending, aws: AwsStandIn, *, started: bool = True) -> None:
    assert "Traceback" not in ending.stderr and "internal error" not in ending.stderr, ending.stderr
    assert ending.status == 130, ending.stderr
    assert ending.seconds <= GRACE, f"ended {ending.seconds:.2f} s after the signal"
    assert bool(aws.ebs.calls_to("StartSnapshot")) or not started
    assert not aws.ebs.calls_to("CompleteSnapshot")
    assert aws.client("ec2").describe_snapshots(OwnerIds=["self"])["Snapshots"] == []


@pytest.mark.parametrize(
    "signals",
    [(signal.SIGINT,), (signal.SIGTERM, signal.SIGTERM)],
    ids=["SIGINT", "SIGTERM-twice"],
)
def test_an_interrupted_stream_is_never_completed(
    signals: tuple[signal.Signals, ...],
    bundle: Path,
    user_id: Identity,
    aws: AwsStandIn,
    aws_proxy: Proxy,
) -> None:
    """Every block write fails (a 5xx, retried with backoff), so the signal is sure to land
    while blocks are being written, some of the writers asleep in a backoff."""
    aws_proxy.set_faults(Faults(error_rate=1.0, methods=frozenset({"PUT"})))
    ending = to_ebs(bundle, user_id, aws, aws_proxy, 0.3, signals, writing=True)
    check_not_completed(ending, aws)
    assert aws_proxy.faults_injected > 0


@pytest.mark.parametrize("delay", [0.2, 0.6])
def test_a_signal_at_any_moment_completes_nothing_or_everything(
    delay: float, bundle: Path, user_id: Identity, aws: AwsStandIn, aws_proxy: Proxy
) -> None:
    ending = to_ebs(bundle, user_id, aws, aws_proxy, delay, (signal.SIGINT,))
    if ending.status == 0:  # done before the signal: the snapshot is complete
        assert len(aws.ebs.calls_to("CompleteSnapshot")) == 1
        return
    # Interrupted wherever it was, even inside StartSnapshot: no snapshot is left.
    check_not_completed(ending, aws, started=False)


def test_an_interrupted_stream_from_a_bucket_is_never_completed(
    bundle: Path, user_id: Identity, aws: AwsStandIn, aws_proxy: Proxy
) -> None:
    """The same bundle read from the stand-in's bucket (-b): Ctrl-C while blocks are being
    written stops the fetches too, and leaves no snapshot."""
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="bundles")
    for path in bundle.parent.iterdir():
        s3.put_object(Bucket="bundles", Key=f"in/{path.name}", Body=path.read_bytes())
    aws_proxy.set_faults(Faults(error_rate=1.0, methods=frozenset({"PUT"})))
    argv = [str(AMIBUNDLE), "to-ebs", "-b", "bundles/in", "-p", "disk.img",
            "-k", str(user_id.key), "-q", "--jobs", "2"]  # fmt: skip
    env = {**os.environ, **aws.environment(aws_proxy.endpoint_url)}
    ending = signalled(
        argv, 0.3, (signal.SIGINT,), env=env,
        ready=lambda: any(r.method == "PUT" for r in aws_proxy.requests),
    )  # fmt: skip
    check_not_completed(ending, aws)
    assert any(r.method == "GET" and "/bundles/in/" in r.path for r in aws_proxy.requests)
