"""Bundles shaped like those of the other tools EC2 registers bundles from.

Each peer's bundle is built here from scratch, byte for byte in the shape that tool writes
(learned by reading their sources; nothing of theirs is copied):

* **euca2ools** (Python, lxml.objectify): no XML declaration, attributes in double quotes,
  ``<type>`` after ``<bundled_size>``, ``<mapping>`` holding ``<device>`` before
  ``<virtual>``, bundler release ``0``, part names always at least two digits
  (``.part.00``), a GNU-format tar from Python's tarfile, ``gzip -c`` (level 6).
* **go_ami_tools** (Go, encoding/xml): ``<?xml version='1.0'?>``, double-quoted attributes,
  ``<type>`` right after ``<user>``, an architecture always, no kernel or ramdisk,
  part names never padded (``.part.0`` … ``.part.11``), a POSIX ustar tar with no record
  padding, one gzip member at level 9; its library writes empty ``<bundler>`` fields
  unless the caller fills them.
* **Ruby ec2-ami-tools before 1.5** (manifest versions ``3`` and ``2007-08-29``): the
  classic layout without ``<machine_configuration>`` (v3) or with only the architecture,
  a GNU tar, ``gzip -9``.

Every bundle is real: the parts decrypt with the user's key, the digests and sizes match,
and the manifest is signed over its own ``<machine_configuration>`` and ``<image>`` bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import random
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from amibundle.crypto import load_certificate, load_private_key, public_key_of, sign, wrap_secret
from amibundle.format.manifest import part_filenames
from tests.support.common import Identity

__all__ = ["PEERS", "Peer", "PeerBundle", "make_peer_bundle"]


class Peer(str, Enum):
    EUCA2OOLS = "euca2ools"
    GO = "go_ami_tools"
    GO_EMPTY_BUNDLER = "go_ami_tools-library"
    RUBY_V3 = "ec2-ami-tools-v3"
    RUBY_20070829 = "ec2-ami-tools-2007-08-29"


PEERS = tuple(Peer)


@dataclass(frozen=True)
class PeerBundle:
    peer: Peer
    name: str
    manifest: Path
    parts: tuple[Path, ...]
    image: bytes = field(repr=False)
    kernel_id: str | None


@dataclass(frozen=True)
class _Stream:
    tar: bytes
    parts: list[bytes]
    key: bytes
    iv: bytes


def _image_bytes(size: int, seed: int) -> bytes:
    rnd = random.Random(seed)
    text = b"the quick brown fox jumps over the lazy dog\n" * (size // 88 + 1)
    data = rnd.randbytes(size // 2) + text[: size - size // 2]
    return data[:size]


def _python_tar(name: str, image: bytes, fmt: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = len(image)
    info.mode = 0o644
    info.mtime = 1_400_000_000
    info.uname = info.gname = "root"
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w|", format=fmt) as archive:
        archive.addfile(info, io.BytesIO(image))
    return out.getvalue()


def _go_tar(name: str, image: bytes) -> bytes:
    """archive/tar: ustar, and the archive ends right after its two zero blocks."""
    data = _python_tar(name, image, tarfile.USTAR_FORMAT)
    end = 512 + -(-len(image) // 512) * 512 + 1024
    assert data[end - 1024 : end] == bytes(1024) and not any(data[end:])
    return data[:end]


def _gnu_tar(name: str, image: bytes, folder: Path) -> bytes:
    source = folder / "src"
    source.mkdir(parents=True, exist_ok=True)
    (source / name).write_bytes(image)
    done = subprocess.run(
        ["tar", "-c", "-h", "-S", "--owner=0", "--group=0", "-b", "20", "-f", "-", name],
        cwd=source,
        capture_output=True,
        check=True,
    )
    return done.stdout


def _gzip_cli(data: bytes, level: int) -> bytes:
    done = subprocess.run(["gzip", "-c", f"-{level}", "-n"], input=data, capture_output=True)
    done.check_returncode()
    return done.stdout


def _encrypt(data: bytes, key: bytes, iv: bytes) -> bytes:
    done = subprocess.run(
        ["openssl", "enc", "-e", "-aes-128-cbc", "-K", key.hex(), "-iv", iv.hex()],
        input=data,
        capture_output=True,
        check=True,
    )
    return done.stdout


def _stream(peer: Peer, name: str, image: bytes, folder: Path, part_size: int) -> _Stream:
    if peer is Peer.EUCA2OOLS:
        tar = _python_tar(name, image, tarfile.GNU_FORMAT)
        compressed = _gzip_cli(tar, 6)
    elif peer in (Peer.GO, Peer.GO_EMPTY_BUNDLER):
        tar = _go_tar(name, image)
        compressed = gzip.compress(tar, 9, mtime=0)
    else:
        tar = _gnu_tar(name, image, folder)
        compressed = _gzip_cli(tar, 9)
    key, iv = os.urandom(16), os.urandom(16)
    encrypted = _encrypt(compressed, key, iv)
    parts = [encrypted[i : i + part_size] for i in range(0, len(encrypted), part_size)]
    return _Stream(tar, parts, key, iv)


def _part_names(peer: Peer, name: str, count: int) -> list[str]:
    if peer is Peer.EUCA2OOLS:
        return [f"{name}.part.{i:02}" for i in range(count)]
    if peer in (Peer.GO, Peer.GO_EMPTY_BUNDLER):
        return [f"{name}.part.{i}" for i in range(count)]
    return part_filenames(name, count)


def make_peer_bundle(
    peer: Peer,
    folder: Path,
    user: Identity,
    ec2: Identity,
    *,
    name: str = "peer.img",
    size: int = 150_000,
    part_size: int = 8192,
    seed: int = 0,
    kernel_id: str | None = None,
) -> PeerBundle:
    """Writes ``peer``'s bundle of a ``size``-byte image into ``folder``: parts of
    ``part_size`` bytes and a manifest signed by ``user``, the key wrapped for ``user``
    and ``ec2``. ``kernel_id`` goes into the manifest where the peer writes one
    (euca2ools; the Go tools never do, and the old versions have no place for it)."""
    folder.mkdir(parents=True, exist_ok=True)
    image = _image_bytes(size, seed)
    stream = _stream(peer, name, image, folder / ".work", part_size)
    names = _part_names(peer, name, len(stream.parts))
    paths = []
    for part_name, data in zip(names, stream.parts, strict=True):
        path = folder / part_name
        path.write_bytes(data)
        paths.append(path)
    user_public = public_key_of(load_certificate(user.cert))
    ec2_public = public_key_of(load_certificate(ec2.cert))
    fields = {
        "name": name,
        "user": "123456789012",
        "digest": hashlib.sha1(stream.tar).hexdigest(),
        "size": str(len(image)),
        "bundled_size": str(sum(len(p) for p in stream.parts)),
        "ec2_key": wrap_secret(ec2_public, stream.key),
        "user_key": wrap_secret(user_public, stream.key),
        "ec2_iv": wrap_secret(ec2_public, stream.iv),
        "user_iv": wrap_secret(user_public, stream.iv),
    }
    parts = [(n, hashlib.sha1(d).hexdigest()) for n, d in zip(names, stream.parts, strict=True)]
    kernel = kernel_id if peer is Peer.EUCA2OOLS else None
    head, machine, image_xml = _MANIFESTS[peer](fields, parts, kernel)
    signature = sign(load_private_key(user.key), (machine + image_xml).encode())
    text = f"{head}{machine}{image_xml}<signature>{signature}</signature></manifest>"
    manifest = folder / f"{name}.manifest.xml"
    manifest.write_bytes(text.encode())
    return PeerBundle(peer, name, manifest, tuple(paths), image, kernel)


Fields = dict[str, str]
Parts = list[tuple[str, str]]
# fields, parts, kernel id -> (everything before <machine_configuration>, it, <image>)
Builder = Callable[[Fields, Parts, "str | None"], tuple[str, str, str]]


def _euca2ools(fields: Fields, parts: Parts, kernel: str | None) -> tuple[str, str, str]:
    head = (
        "<manifest><version>2007-10-10</version><bundler><name>euca2ools</name>"
        "<version>3.4.1</version><release>0</release></bundler>"
    )
    machine = (
        "<machine_configuration><architecture>x86_64</architecture>"
        + (f"<kernel_id>{kernel}</kernel_id>" if kernel else "")
        + "<block_device_mapping>"
        "<mapping><device>sda1</device><virtual>ami</virtual></mapping>"
        "<mapping><device>/dev/sda1</device><virtual>root</virtual></mapping>"
        "</block_device_mapping></machine_configuration>"
    )
    image = (
        f"<image><name>{fields['name']}</name><user>{fields['user']}</user>"
        f'<digest algorithm="SHA1">{fields["digest"]}</digest>'
        f"<size>{fields['size']}</size><bundled_size>{fields['bundled_size']}</bundled_size>"
        "<type>machine</type>"
        f'<ec2_encrypted_key algorithm="AES-128-CBC">{fields["ec2_key"]}</ec2_encrypted_key>'
        f'<user_encrypted_key algorithm="AES-128-CBC">{fields["user_key"]}</user_encrypted_key>'
        f"<ec2_encrypted_iv>{fields['ec2_iv']}</ec2_encrypted_iv>"
        f"<user_encrypted_iv>{fields['user_iv']}</user_encrypted_iv>"
        f'<parts count="{len(parts)}">'
        + "".join(
            f'<part index="{i}"><filename>{n}</filename><digest algorithm="SHA1">{d}</digest>'
            "</part>"
            for i, (n, d) in enumerate(parts)
        )
        + "</parts></image>"
    )
    return head, machine, image


def _go(bundler: tuple[str, str, str]) -> Builder:
    def build(fields: Fields, parts: Parts, kernel: str | None) -> tuple[str, str, str]:
        name, version, release = bundler
        head = (
            "<?xml version='1.0'?><manifest><version>2007-10-10</version>"
            f"<bundler><name>{name}</name><version>{version}</version>"
            f"<release>{release}</release></bundler>"
        )
        machine = (
            "<machine_configuration><architecture>x86_64</architecture></machine_configuration>"
        )
        image = (
            f"<image><name>{fields['name']}</name><user>{fields['user']}</user>"
            "<type>machine</type>"
            f'<digest algorithm="SHA1">{fields["digest"]}</digest>'
            f"<size>{fields['size']}</size><bundled_size>{fields['bundled_size']}</bundled_size>"
            f'<ec2_encrypted_key algorithm="AES-128-CBC">{fields["ec2_key"]}</ec2_encrypted_key>'
            f'<user_encrypted_key algorithm="AES-128-CBC">{fields["user_key"]}'
            "</user_encrypted_key>"
            f"<ec2_encrypted_iv>{fields['ec2_iv']}</ec2_encrypted_iv>"
            f"<user_encrypted_iv>{fields['user_iv']}</user_encrypted_iv>"
            f'<parts count="{len(parts)}">'
            + "".join(
                f'<part index="{i}"><filename>{n}</filename>'
                f'<digest algorithm="SHA1">{d}</digest></part>'
                for i, (n, d) in enumerate(parts)
            )
            + "</parts></image>"
        )
        return head, machine, image

    return build


def _ruby(version: str) -> Builder:
    def build(fields: Fields, parts: Parts, kernel: str | None) -> tuple[str, str, str]:
        head = (
            f"<?xml version='1.0'?><manifest><version>{version}</version>"
            "<bundler><name>ec2-ami-tools</name><version>1.3</version>"
            "<release>20041</release></bundler>"
        )
        machine = (
            ""
            if version == "3"
            else "<machine_configuration><architecture>i386</architecture></machine_configuration>"
        )
        image = (
            f"<image><name>{fields['name']}</name><user>{fields['user']}</user>"
            f"<digest algorithm='SHA1'>{fields['digest']}</digest>"
            f"<size>{fields['size']}</size><bundled_size>{fields['bundled_size']}</bundled_size>"
            f"<ec2_encrypted_key algorithm='AES-128-CBC'>{fields['ec2_key']}</ec2_encrypted_key>"
            f"<user_encrypted_key algorithm='AES-128-CBC'>{fields['user_key']}"
            "</user_encrypted_key>"
            f"<ec2_encrypted_iv>{fields['ec2_iv']}</ec2_encrypted_iv>"
            f"<user_encrypted_iv>{fields['user_iv']}</user_encrypted_iv>"
            f"<parts count='{len(parts)}'>"
            + "".join(
                f"<part index='{i}'><filename>{n}</filename>"
                f"<digest algorithm='SHA1'>{d}</digest></part>"
                for i, (n, d) in enumerate(parts)
            )
            + "</parts></image>"
        )
        return head, machine, image

    return build


_MANIFESTS: dict[Peer, Builder] = {
    Peer.EUCA2OOLS: _euca2ools,
    Peer.GO: _go(("ec2-bundle-and-upload-image", "0.1", "1")),
    Peer.GO_EMPTY_BUNDLER: _go(("", "", "")),
    Peer.RUBY_V3: _ruby("3"),
    Peer.RUBY_20070829: _ruby("2007-08-29"),
}
