"""amibundle.tarstream against real GNU tar and the classic tools' own output.

* Our archive of a plain or sparse file is byte-identical to what
  ``tar -c -S -h --owner 0 --group 0 -b 20`` writes (the classic invocation).
* GNU tar lists and extracts our archives.
* Our reader reads every format GNU tar writes for one file.
* Our reader reads the classic fixture's tar, and our writer rebuilds it exactly.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from amibundle.errors import TarFormatError
from amibundle.format.tar import Extent, Member, MemberInfo, padding, stored_size
from amibundle.format.tar_reader import SingleMemberReader
from amibundle.format.tar_writer import encode_header, end_of_archive
from tests.support import tars as tf
from tests.support.common import CLASSIC, SHARED_ABSENT

MIB = 1 << 20
GIB = 1 << 30
CLASSIC_INVOCATION = ["-c", "-S", "-h", "--owner", "0", "--group", "0", "-b", "20"]


def _gnu_tar() -> str | None:
    tar = shutil.which("tar")
    if tar is None:
        return None
    result = subprocess.run([tar, "--version"], capture_output=True, text=True, check=False)
    return tar if "GNU tar" in result.stdout else None


TAR = _gnu_tar()
pytestmark = pytest.mark.skipif(TAR is None, reason="GNU tar is not installed")


def run_tar(*args: str, cwd: Path) -> str:
    assert TAR is not None
    result = subprocess.run(
        [TAR, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "LC_ALL": "C", "TZ": "UTC"},
    )
    assert result.returncode == 0, f"tar {args} failed: {result.stderr}"
    return result.stdout


# ---------------------------------------------------------------- files on disk


def data_extents(path: Path) -> list[tuple[int, int]]:
    """Data regions as SEEK_DATA/SEEK_HOLE report them (what GNU tar -S uses)."""
    extents = []
    with open(path, "rb") as handle:
        fd, offset = handle.fileno(), 0
        while True:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after offset
                return extents
            offset = os.lseek(fd, start, os.SEEK_HOLE)
            extents.append((start, offset - start))


def make_file(
    folder: Path,
    name: str,
    size: int,
    regions: list[tuple[int, int]],
    *,
    mode: int = 0o644,
    mtime: int = 1_700_000_000,
    seed: int = 1,
) -> Path:
    """A file of apparent ``size`` with pattern data written in ``regions``
    (the rest left as holes)."""
    path = folder / name
    with open(path, "wb") as handle:
        handle.truncate(size)
        for offset, length in regions:
            handle.seek(offset)
            handle.write(tf.pattern(offset, length, seed))
        handle.flush()
        os.fsync(handle.fileno())
    path.chmod(mode)
    try:
        os.utime(path, (mtime, mtime))
    except OSError:
        pytest.skip(f"this file system cannot store mtime {mtime}")
    return path


def read_regions(path: Path, extents: list[tuple[int, int]]) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        for offset, length in extents:
            handle.seek(offset)
            yield handle.read(length)


def our_archive(path: Path, *, sparse: bool, name: str | None = None) -> bytes:
    """What amibundle writes for ``path``: extents from SEEK_DATA when sparse."""
    stat = path.stat()
    extents = data_extents(path) if sparse else [(0, stat.st_size)]
    info = MemberInfo(
        name=name or path.name,
        size=stat.st_size,
        mode=stat.st_mode,
        mtime=int(stat.st_mtime),
        extents=tuple(Extent(o, n) for o, n in extents) if sparse else None,
    )
    data = b"".join(read_regions(path, extents if sparse else [(0, stat.st_size)]))
    assert len(data) == stored_size(info)
    body = encode_header(info) + data + padding(len(data))
    return body + end_of_archive(len(body))


def gnu_archive(path: Path, *extra: str) -> bytes:
    out = path.parent / f"{path.name[:50]}.gnu.tar"
    run_tar(*CLASSIC_INVOCATION, *extra, "-f", str(out), path.name, cwd=path.parent)
    data = out.read_bytes()
    out.unlink()
    return data


def gnu_writes_sparse(path: Path) -> bool:
    """GNU tar -S writes 'S' only for files with fewer blocks than their size needs."""
    stat = path.stat()
    return stat.st_size > 0 and stat.st_blocks * 512 < stat.st_size


def same_content(a: Path, b: Path) -> bool:
    """Equal size and bytes, comparing only data regions (holes read as zeros)."""
    if a.stat().st_size != b.stat().st_size:
        return False
    regions = sorted(set(data_extents(a)) | set(data_extents(b)))
    return list(read_regions(a, regions)) == list(read_regions(b, regions))


def read_member(
    data_or_path: bytes | Path, chunk_size: int = 256 * 1024
) -> tuple[Member, list[tuple[int, bytes]]]:
    """The member and its data chunks, read with our reader up to the very end."""
    with (
        open(data_or_path, "rb") if isinstance(data_or_path, Path) else io.BytesIO(data_or_path)
    ) as stream:
        reader = SingleMemberReader(stream, chunk_size=chunk_size)
        member = reader.read_header()
        chunks = [(offset, bytes(chunk)) for offset, chunk in reader.iter_data()]
        reader.finish()
    return member, chunks


def image_sha256(member: Member, chunks: list[tuple[int, bytes]]) -> str:
    """sha256 of the apparent file: the chunks, zeros in between."""
    digest, position = hashlib.sha256(), 0

    def zeros(count: int) -> None:
        while count:
            step = min(count, MIB)
            digest.update(bytes(step))
            count -= step

    for offset, chunk in chunks:
        zeros(offset - position)
        digest.update(chunk)
        position = offset + len(chunk)
    zeros(member.size - position)
    return digest.hexdigest()


def chunks_match_file(chunks: list[tuple[int, bytes]], path: Path) -> bool:
    """The data chunks equal the file's bytes at the same offsets."""
    return all(
        data == expected
        for (_, data), expected in zip(
            chunks, read_regions(path, [(o, len(d)) for o, d in chunks]), strict=True
        )
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- byte identity

PLAIN_CASES = [
    ("image.img", 0, 0o644, 1_700_000_000),
    ("one", 1, 0o600, 1_700_000_000),
    ("block", 511, 0o640, 1_600_000_000),
    ("exact-block", 512, 0o755, 1_700_000_000),
    ("fills-record", 10240 - 3 * 512, 0o644, 1_700_000_000),  # header+data+2 zero blocks = 10240
    ("over-record", 10240 - 3 * 512 + 1, 0o2750, 1_700_000_000),
    ("medium.img", 300_001, 0o4755, 1_700_000_000),
    ("x" * 100, 1000, 0o644, 1_700_000_000),
    ("y" * 101, 1000, 0o644, 1_700_000_000),
    ("ünïcödé-" + "é" * 100, 1000, 0o644, 1_700_000_000),
    ("old", 10, 0o644, -100),
    ("far-future", 10, 0o644, 8**11 + 12345),  # mtime needs base-256
]


@pytest.mark.parametrize(
    "name, size, mode, mtime", PLAIN_CASES, ids=[f"{c[0][:12]}-{c[1]}" for c in PLAIN_CASES]
)
def test_plain_file_is_byte_identical(
    tmp_path: Path, name: str, size: int, mode: int, mtime: int
) -> None:
    path = make_file(tmp_path, name, size, [(0, size)], mode=mode, mtime=mtime)
    if gnu_writes_sparse(path):
        pytest.skip("this file system stores tiny files inline (no blocks), GNU tar sees holes")
    ours = our_archive(path, sparse=False)
    assert ours == gnu_archive(path)
    member, chunks = read_member(ours)
    assert (member.name, member.size, member.mtime) == (name, size, mtime)
    assert image_sha256(member, chunks) == sha256_of(path)


SPARSE_CASES = {
    "ends-in-hole": (MIB, [(64 * 1024, 4096)]),
    "ends-in-data": (MIB, [(64 * 1024, 4096), (MIB - 8192, 8192)]),
    "starts-with-data": (MIB, [(0, 8192), (512 * 1024, 100)]),
    "all-hole": (MIB, []),
    "three-extensions": (8 * MIB, [(i * 128 * 1024, 4096) for i in range(60)]),
    "beyond-8GiB": (9 * GIB + 12345, [(4096, 100), (8 * GIB + 4096, 5000), (9 * GIB, 4096)]),
    "long-name-" + "z" * 120: (2 * MIB, [(MIB, 4096)]),
}


@pytest.fixture(params=list(SPARSE_CASES), ids=[k[:20] for k in SPARSE_CASES])
def sparse_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    size, regions = SPARSE_CASES[request.param]
    path = make_file(tmp_path, request.param, size, regions, mode=0o640)
    if not gnu_writes_sparse(path) or (regions and data_extents(path) == [(0, size)]):
        pytest.skip("this file system does not keep holes or report them via SEEK_DATA")
    return path


def test_sparse_file_is_byte_identical(sparse_file: Path) -> None:
    ours = our_archive(sparse_file, sparse=True)
    assert ours == gnu_archive(sparse_file)


def test_gnu_tar_lists_and_extracts_our_archive(sparse_file: Path, tmp_path: Path) -> None:
    archive = tmp_path / "ours.tar"
    archive.write_bytes(our_archive(sparse_file, sparse=True))
    listing = run_tar("-tvf", str(archive), cwd=tmp_path).splitlines()
    assert len(listing) == 1
    fields = listing[0].split(None, 5)
    assert fields[:3] == ["-rw-r-----", "root/root", str(sparse_file.stat().st_size)]
    assert fields[5] == sparse_file.name
    out = tmp_path / "out"
    out.mkdir()
    run_tar("-xSf", str(archive), cwd=out)
    assert same_content(out / sparse_file.name, sparse_file)


def test_gnu_tar_extracts_our_plain_archive(tmp_path: Path) -> None:
    path = make_file(tmp_path, "plain.img", 123_457, [(0, 123_457)], mode=0o600)
    archive = tmp_path / "ours.tar"
    archive.write_bytes(our_archive(path, sparse=False))
    assert len(run_tar("-tf", str(archive), cwd=tmp_path).splitlines()) == 1
    out = tmp_path / "out"
    out.mkdir()
    run_tar("-xf", str(archive), cwd=out)
    assert (out / "plain.img").read_bytes() == path.read_bytes()
    assert (out / "plain.img").stat().st_mode & 0o7777 == 0o600


# ---------------------------------------------------------------- reading GNU's formats

FORMATS = {
    "gnu": ["--format=gnu"],
    "oldgnu": ["--format=oldgnu"],
    "pax-0.0": ["--format=pax", "--sparse-version=0.0"],
    "pax-0.1": ["--format=pax", "--sparse-version=0.1"],
    "pax-1.0": ["--format=pax", "--sparse-version=1.0"],
}


@pytest.mark.parametrize("options", list(FORMATS.values()), ids=list(FORMATS))
def test_reader_reads_gnu_sparse_formats(
    options: list[str], tmp_path: Path, sparse_file: Path
) -> None:
    archive = tmp_path / "gnu.tar"
    run_tar("-cSf", str(archive), *options, sparse_file.name, cwd=sparse_file.parent)
    member, chunks = read_member(archive)
    stat = sparse_file.stat()
    expected_map = tuple(Extent(o, n) for o, n in data_extents(sparse_file))
    assert member == Member(sparse_file.name, stat.st_size, 0o640, int(stat.st_mtime), expected_map)
    # The map equals the file's data regions, so matching chunks mean matching files.
    assert chunks_match_file(chunks, sparse_file)
    assert sum(len(data) for _, data in chunks) == sum(e.length for e in expected_map)


PLAIN_FORMATS = ["gnu", "oldgnu", "ustar", "posix", "v7"]


@pytest.mark.parametrize("fmt", PLAIN_FORMATS)
@pytest.mark.parametrize("name", ["disk.img", "n" * 99, "long-" + "é" * 120])
def test_reader_reads_gnu_plain_formats(fmt: str, name: str, tmp_path: Path) -> None:
    path = make_file(tmp_path, name, 200_000, [(0, 200_000)], mode=0o604, mtime=1_234_567_890)
    if fmt in ("ustar", "v7") and len(name.encode()) > 99:
        pytest.skip(f"{fmt} cannot store a {len(name.encode())}-byte name without a '/'")
    archive = tmp_path / "gnu.tar"
    run_tar("-cf", str(archive), f"--format={fmt}", name, cwd=tmp_path)
    member, chunks = read_member(archive, chunk_size=4096)
    assert member == Member(name, 200_000, 0o604, 1_234_567_890, (Extent(0, 200_000),))
    assert image_sha256(member, chunks) == sha256_of(path)


def test_reader_refuses_gnu_ustar_path_with_prefix(tmp_path: Path) -> None:
    """ustar splits a long path into prefix and name; the joined name is refused."""
    folder = tmp_path / ("d" * 80)
    folder.mkdir()
    make_file(folder, "f" * 80, 10, [(0, 10)])
    archive = tmp_path / "ustar.tar"
    run_tar("-cf", str(archive), "--format=ustar", f"{folder.name}/{'f' * 80}", cwd=tmp_path)
    with open(archive, "rb") as stream:
        reader = SingleMemberReader(stream)
        with pytest.raises(
            TarFormatError, match=re.escape(f"'{folder.name}/{'f' * 80}' contains '/'")
        ):
            reader.read_header()


def test_reader_refuses_gnu_tar_symlink_and_two_files(tmp_path: Path) -> None:
    make_file(tmp_path, "a", 10, [(0, 10)])
    make_file(tmp_path, "b", 10, [(0, 10)])
    (tmp_path / "link").symlink_to("a")
    run_tar("-cf", "link.tar", "link", cwd=tmp_path)
    run_tar("-cf", "two.tar", "a", "b", cwd=tmp_path)
    with pytest.raises(TarFormatError, match="'link' is a symbolic link"):
        read_member(tmp_path / "link.tar")
    with pytest.raises(TarFormatError, match="second member"):
        read_member(tmp_path / "two.tar")


# ---------------------------------------------------------------- the classic fixture


def _manifest_field(manifest: str, element: str) -> str:
    match = re.search(rf"<{element}[^>]*>([0-9a-f]+)</{element}>", manifest)
    assert match, element
    return match.group(1)


@pytest.fixture(scope="module")
def classic_tar(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The decrypted, decompressed tar of the classic ``sparse`` bundle, and the
    image digest its manifest promises."""
    if not CLASSIC.is_dir():
        pytest.skip(f"{SHARED_ABSENT}: no classic fixtures at {CLASSIC}")
    if shutil.which("openssl") is None or shutil.which("gunzip") is None:
        pytest.skip("openssl and gunzip are needed to decrypt the classic fixture")
    folder = tmp_path_factory.mktemp("classic")
    bundle = CLASSIC / "sparse"
    manifest = (bundle / "sparse.img.manifest.xml").read_text()

    def unwrap(element: str) -> str:
        wrapped = folder / f"{element}.bin"
        wrapped.write_bytes(bytes.fromhex(_manifest_field(manifest, element)))
        result = subprocess.run(
            [
                "openssl",
                "pkeyutl",
                "-decrypt",
                "-inkey",
                str(CLASSIC / "keys" / "user-pk.pem"),
                "-in",
                str(wrapped),
            ],
            capture_output=True,
            check=True,
        )
        return result.stdout.decode("ascii")

    key, iv = unwrap("user_encrypted_key"), unwrap("user_encrypted_iv")
    parts = sorted(bundle.glob("sparse.img.part.*"), key=lambda p: int(p.suffix[1:]))
    tar_path = folder / "sparse.tar"
    with open(tar_path, "wb") as out:
        decrypt = subprocess.Popen(
            ["openssl", "enc", "-d", "-aes-128-cbc", "-K", key, "-iv", iv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        gunzip = subprocess.Popen(["gunzip", "-c"], stdin=decrypt.stdout, stdout=out)
        assert decrypt.stdin is not None and decrypt.stdout is not None
        decrypt.stdout.close()
        for part in parts:
            decrypt.stdin.write(part.read_bytes())
        decrypt.stdin.close()
        assert decrypt.wait() == 0 and gunzip.wait() == 0
    return tar_path, _manifest_field(manifest, "digest")


@pytest.fixture(scope="module")
def classic_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sparse.img regenerated by the fixture's make_images.py."""
    if not CLASSIC.is_dir():
        pytest.skip(f"{SHARED_ABSENT}: no classic fixtures at {CLASSIC}")
    folder = tmp_path_factory.mktemp("images")
    subprocess.run([sys.executable, str(CLASSIC / "make_images.py"), str(folder)], check=True)
    return folder / "sparse.img"


def test_classic_fixture_decrypts_to_the_promised_tar(classic_tar: tuple[Path, str]) -> None:
    path, digest = classic_tar
    assert hashlib.sha1(path.read_bytes()).hexdigest() == digest


def test_reader_reads_the_classic_tar(classic_tar: tuple[Path, str], classic_image: Path) -> None:
    readme = (CLASSIC / "README.md").read_text()
    promised = re.search(r"`sparse\.img` \| [\d,]+ \| `([0-9a-f]{64})`", readme)
    assert promised, "README no longer lists the sha256 of sparse.img"
    member, chunks = read_member(classic_tar[0])
    assert member.name == "sparse.img"
    assert member.size == classic_image.stat().st_size == 25_165_824
    assert image_sha256(member, chunks) == promised.group(1) == sha256_of(classic_image)
    # The classic tar came from SEEK_DATA: the 1 MiB of written zeros is data, not a hole.
    assert Extent(9 * MIB, 6 * MIB) in member.sparse_map


def test_writer_rebuilds_the_classic_tar_exactly(classic_tar: tuple[Path, str]) -> None:
    """Same name, size, mode, mtime and map in, the very bytes the classic tools hashed out."""
    path, digest = classic_tar
    with open(path, "rb") as stream:
        reader = SingleMemberReader(stream)
        member = reader.read_header()
        info = MemberInfo(member.name, member.size, member.mode, member.mtime, member.sparse_map)
        sha1 = hashlib.sha1(encode_header(info))
        for _, chunk in reader.iter_data():
            sha1.update(chunk)
        reader.finish()
    written = len(encode_header(info)) + stored_size(info)
    sha1.update(padding(stored_size(info)))
    sha1.update(end_of_archive(written + len(padding(stored_size(info)))))
    assert sha1.hexdigest() == digest
