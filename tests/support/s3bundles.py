"""Helpers of the S3 tests: small bundles, settings for a test server, what
the bucket holds, what the proxy saw, and progress listeners that record or
interrupt."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amibundle import s3
from amibundle.progress import Stage
from tests.support.bundling import bundle_for
from tests.support.common import Identity
from tests.support.s3proxy import Proxy
from tests.support.s3servers import S3Server

__all__ = [
    "PART_SIZE",
    "Bundle",
    "MakeProxy",
    "RaiseAfter",
    "Recording",
    "key_of",
    "make_bundle",
    "object_bytes",
    "object_puts",
    "settings_for",
]

MakeProxy = Callable[..., Proxy]
PART_SIZE = 64 * 1024




@dataclass(frozen=True)
class Bundle:
    image: Path
    manifest: Path
    parts: tuple[Path, ...]

    @property
    def names(self) -> list[str]:
        return [self.manifest.name, *(p.name for p in self.parts)]


def make_bundle(
    folder: Path,
    identity: Identity,
    *,
    name: str = "img",
    size: int = 300_000,
    seed: int = 0,
    part_size: int = PART_SIZE,
) -> Bundle:
    """A bundle of an incompressible image of ``size`` bytes, cut into ``part_size`` parts."""
    (folder / "src").mkdir(parents=True, exist_ok=True)
    (folder / "bundle").mkdir(exist_ok=True)
    image = folder / "src" / name
    image.write_bytes(random.Random(seed).randbytes(size))
    result = bundle_for(image, identity, destination=folder / "bundle", part_size=part_size)
    return Bundle(image, result.manifest_path, result.part_paths)


def settings_for(
    server: S3Server, endpoint_url: str | None = None, **options: Any
) -> s3.S3Settings:
    """Settings reaching ``server`` (or a proxy in front of it)."""
    return s3.S3Settings(
        access_key=server.access_key,
        secret_key=server.secret_key,
        region=options.pop("region", server.region),
        endpoint_url=endpoint_url or server.endpoint_url,
        **options,
    )


def object_bytes(server: S3Server, bucket: str, prefix: str = "") -> dict[str, bytes]:
    """Every object under ``prefix``: key -> content."""
    client = server.client()
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            found[item["Key"]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return found


def object_puts(proxy: Proxy, bucket: str) -> list[Any]:
    """The PUT requests for objects (not the bucket itself) the proxy saw."""
    return [r for r in proxy.requests if r.method == "PUT" and r.path.startswith(f"/{bucket}/")]


def key_of(path: str, bucket: str) -> str:
    return path[len(f"/{bucket}/") :]


class RaiseAfter:
    """Progress that raises once ``limit`` bytes of ``stage`` were reported."""

    class Interrupt(Exception):
        pass

    def __init__(self, stage: Stage, limit: int, action: Callable[[], None] | None = None):
        self.stage, self.limit, self.done, self.action = stage, limit, 0, action

    def start(self, stage: Stage, total: int | None) -> None:
        pass

    def advance(self, stage: Stage, nbytes: int) -> None:
        self.done += nbytes
        if stage is self.stage and self.done >= self.limit:
            if self.action is None:
                raise RaiseAfter.Interrupt(f"interrupted after {self.done} bytes")
            self.action()

    def finish(self, stage: Stage, error: BaseException | None = None) -> None:
        pass


class Recording:
    """Progress that records every call (thread-safe enough for += on ints under the GIL)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Stage, Any]] = []

    def start(self, stage: Stage, total: int | None) -> None:
        self.calls.append(("start", stage, total))

    def advance(self, stage: Stage, nbytes: int) -> None:
        self.calls.append(("advance", stage, nbytes))

    def finish(self, stage: Stage, error: BaseException | None = None) -> None:
        self.calls.append(("finish", stage, error))

    def total(self, stage: Stage) -> int:
        return sum(n for kind, s, n in self.calls if kind == "advance" and s is stage)
