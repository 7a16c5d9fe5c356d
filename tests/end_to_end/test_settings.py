"""Every pipeline setting gives a correct bundle, checked with independent
tools: openssl (decrypt), gunzip or zstd (decompress), GNU tar (extract)."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

import pytest

import amibundle
from amibundle import Codec, Compression
from tests.support.bundling import bundle_for
from tests.support.common import Identity, write_image
from tests.support.errors import cli_text
from tests.support.openssl import decrypt_parts, run

MiB = 1 << 20


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 MiB of text, random data and zeros, with holes: several 1 MiB
    compression blocks, so threads really split the work."""
    folder = tmp_path_factory.mktemp("settings")
    text = b"".join(b"line %d of a log file with some words\n" % i for i in range(40000))
    return write_image(
        folder / "disk.img",
        5 * MiB,
        [
            (0, text),
            (2 * MiB, os.urandom(600_000)),
            (3 * MiB, text[: MiB // 2]),
            (4 * MiB + 4096, bytes(200_000) + b"end"),
        ],
    )


def bundle(
    image: Path, dest: Path, user: Identity, codec: Codec, part_size: int
) -> amibundle.BundleResult:
    dest.mkdir()
    return bundle_for(image, user, destination=dest, codec=codec, part_size=part_size)


def decompress(kind: Compression, data: bytes) -> bytes:
    command = ["gunzip", "-c"] if kind is Compression.GZIP else ["zstd", "-d", "-c", "-q"]
    return run(command, data)


def check_with_gnu_tools(
    result: amibundle.BundleResult, image: Path, user: Identity, kind: Compression, tmp: Path
) -> bytes:
    compressed = decrypt_parts(result.manifest_path, user.key)
    tar = decompress(kind, compressed)
    assert hashlib.sha1(tar).hexdigest() == result.digest
    (tmp / "t.tar").write_bytes(tar)
    (tmp / "x").mkdir()
    run(["tar", "-xSf", str(tmp / "t.tar"), "-C", str(tmp / "x")])
    assert (tmp / "x" / image.name).read_bytes() == image.read_bytes()
    return compressed


SETTINGS = [
    *[(Compression.GZIP, level, threads) for level in range(1, 10) for threads in (1, 3)],
    *[(Compression.ZSTD, level, threads) for level in (1, 3, 19) for threads in (1, 3)],
]


@pytest.mark.parametrize(
    ("kind", "level", "threads"), SETTINGS, ids=[f"{k.value}-{lv}-t{t}" for k, lv, t in SETTINGS]
)
def test_every_setting_gives_a_correct_bundle(
    kind: Compression,
    level: int,
    threads: int,
    image: Path,
    user_id: Identity,
    tmp_path: Path,
) -> None:
    if kind is Compression.ZSTD and not _have("zstd"):
        pytest.skip("the zstd command is not installed")
    result = bundle(image, tmp_path / "out", user_id, Codec(kind, level, threads), 777_777)
    compressed = check_with_gnu_tools(result, image, user_id, kind, tmp_path)
    magic = b"\x1f\x8b" if kind is Compression.GZIP else b"\x28\xb5\x2f\xfd"
    assert compressed.startswith(magic)
    back = tmp_path / "back"
    back.mkdir()
    restored = amibundle.unbundle(
        result.manifest_path, private_key=user_id.key, destination=back, cert=user_id.cert
    )
    assert restored.compression == kind.value
    assert restored.image_path.read_bytes() == image.read_bytes()
    assert amibundle.verify_bundle(result.manifest_path, private_key=user_id.key).ok


def test_gzip_levels_trade_size_for_speed(image: Path, user_id: Identity, tmp_path: Path) -> None:
    sizes = {}
    for level in (1, 9):
        sizes[level] = bundle(
            image, tmp_path / f"l{level}", user_id, Codec(Compression.GZIP, level, 2), 10 * MiB
        ).bundled_size
    assert sizes[9] < sizes[1]


@pytest.mark.parametrize("kind", list(Compression))
def test_one_thread_and_many_give_the_same_stream(
    kind: Compression, image: Path, user_id: Identity, tmp_path: Path
) -> None:
    """Same tar digest, same image, and the same compressed bytes: block
    boundaries do not depend on the thread count."""
    if kind is Compression.ZSTD and not _have("zstd"):
        pytest.skip("the zstd command is not installed")
    streams = []
    for threads in (1, 4):
        result = bundle(
            image, tmp_path / f"t{threads}", user_id, Codec(kind, None, threads), 10 * MiB
        )
        streams.append(
            (result.digest, decompress(kind, decrypt_parts(result.manifest_path, user_id.key)))
        )
    (digest1, tar1), (digest4, tar4) = streams
    assert digest1 == digest4 == hashlib.sha1(tar1).hexdigest()
    assert tar1 == tar4


@pytest.mark.parametrize("part_size", [1, 15, 16, 17, 4095, 65537, 3 * MiB + 1])
def test_tiny_and_odd_part_sizes(
    part_size: int, image: Path, user_id: Identity, tmp_path: Path
) -> None:
    small = (
        write_image(tmp_path / "small.img", 9000, [(100, os.urandom(3000))])
        if part_size < 64
        else image
    )
    result = bundle(small, tmp_path / "out", user_id, Codec(), part_size)
    sizes = [p.stat().st_size for p in result.part_paths]
    assert all(s == part_size for s in sizes[:-1]) and 0 < sizes[-1] <= part_size
    check_with_gnu_tools(result, small, user_id, Compression.GZIP, tmp_path)


def test_bad_settings_are_usage_errors(image: Path, user_id: Identity, tmp_path: Path) -> None:
    # A Codec checks itself when made: a bad one never reaches the image.
    for compression, level, threads in (
        (Compression.GZIP, 10, 1),
        (Compression.GZIP, 0, 1),
        (Compression.ZSTD, 23, 1),
        (Compression.GZIP, 2, 0),
    ):
        with pytest.raises(amibundle.UsageError, match=r"level=|threads=") as err:
            bundle(
                image,
                tmp_path / f"bad{level}{threads}{compression.value}",
                user_id,
                Codec(compression, level, threads),
                MiB,
            )
        assert re.match(r"--(compress-level|threads) ", cli_text(err))
        assert not (tmp_path / f"bad{level}{threads}{compression.value}").exists()


def _have(tool: str) -> bool:
    return subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode == 0
