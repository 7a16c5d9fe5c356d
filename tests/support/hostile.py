"""Forged bundles for the hostile-input tests and the fuzzers: decompression
bombs built in milliseconds, bundles around any compressed stream, parts held
in memory, and old-GNU sparse members with millions of extents.

Written from the formats (RFC 1952 gzip, RFC 8878 zstd frames, GNU tar's
old-GNU sparse headers, AES-128-CBC with PKCS#7), independently of the
product's writers, so that the product reads what a stranger made.
"""

from __future__ import annotations

import hashlib
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import zstandard
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.padding import PKCS7
from isal import isal_zlib

from amibundle.crypto import load_certificate, load_private_key, public_key_of, sign, wrap_secret
from amibundle.format import manifest as mf
from amibundle.format.manifest_writer import render, signed_sections
from tests.support.common import Identity
from tests.support.tars import BLOCK, end, header, pad

__all__ = [
    "MIB",
    "Measured",
    "MemoryParts",
    "bundle_from_stream",
    "clean_parent",
    "encrypt",
    "gzip_stream",
    "many_extents_member",
    "run_measured",
    "zstd_stream",
]

MIB = 1 << 20


# --------------------------------------------------------------------------- streams


@cache
def _deflated_mib(fill: int) -> tuple[bytes, int]:
    """One MiB of ``fill`` bytes as raw deflate ending in a full flush, and
    its CRC-32. After a full flush deflate refers to nothing before it, so
    these bytes can follow any full-flushed deflate data any number of times:
    a gigabyte costs a megabyte and no compression time."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = bytes([fill]) * MIB
    return compressor.compress(data) + compressor.flush(zlib.Z_FULL_FLUSH), zlib.crc32(data)


def gzip_stream(tar: bytes, *, tail_mib: int = 0, fill: int = 0, after: bytes = b"") -> bytes:
    """ONE gzip member (as bundles have) holding ``tar``, then ``tail_mib`` MiB
    of ``fill`` bytes, then ``after``, with a correct CRC and size trailer."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = compressor.compress(tar) + compressor.flush(zlib.Z_FULL_FLUSH)
    unit, unit_crc = _deflated_mib(fill)
    crc = zlib.crc32(tar)
    for _ in range(tail_mib):
        crc = isal_zlib.crc32_combine(crc, unit_crc, MIB)
    crc = zlib.crc32(after, crc)
    last = zlib.compressobj(6, zlib.DEFLATED, -15)
    final = last.compress(after) + last.flush(zlib.Z_FINISH)
    size = (len(tar) + tail_mib * MIB + len(after)) & 0xFFFFFFFF
    head = struct.pack("<BBBBIBB", 0x1F, 0x8B, 8, 0, 0, 0, 255)
    return head + body + unit * tail_mib + final + struct.pack("<II", crc, size)


@cache
def _zstd_mib(fill: int) -> bytes:
    return zstandard.ZstdCompressor(level=3, write_checksum=True).compress(bytes([fill]) * MIB)


def zstd_stream(tar: bytes, *, tail_mib: int = 0, fill: int = 0, after: bytes = b"") -> bytes:
    """zstd frames: ``tar``, ``tail_mib`` frames of one MiB of ``fill`` each, ``after``."""
    compressor = zstandard.ZstdCompressor(level=3, write_checksum=True)
    tail = compressor.compress(after) if after else b""
    return compressor.compress(tar) + _zstd_mib(fill) * tail_mib + tail


def encrypt(plaintext: bytes, key: bytes, iv: bytes) -> bytes:
    """AES-128-CBC with PKCS#7 padding, as ``openssl enc -aes-128-cbc`` writes it."""
    padder = PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return encryptor.update(padded) + encryptor.finalize()


class MemoryParts:
    """A :class:`amibundle.parts.PartSource` over ciphertext held in memory,
    handed out at most ``piece`` bytes a call (part boundaries)."""

    def __init__(self, ciphertext: bytes, piece: int = MIB) -> None:
        self._data = memoryview(ciphertext)
        self._piece = max(1, piece)
        self._offset = 0

    @property
    def consumed(self) -> int:
        return self._offset

    def readinto(self, buffer: memoryview) -> int:
        n = min(len(buffer), self._piece, len(self._data) - self._offset)
        buffer[:n] = self._data[self._offset : self._offset + n]
        self._offset += n
        return n


# --------------------------------------------------------------------------- bundles


def bundle_from_stream(
    compressed: bytes,
    folder: Path,
    identity: Identity,
    *,
    name: str = "disk.img",
    size: int,
    digest: str,
    part_names: Sequence[str] | None = None,
    part_count: int = 1,
    manifest_name: str | None = None,
    write_parts: bool = True,
) -> Path:
    """Writes a signed bundle whose decrypted stream is ``compressed`` (any
    bytes: a bomb, a forged tar), cut into ``part_count`` parts (named
    ``part_names`` when given), with the manifest's ``size`` and ``digest``
    as given; with ``write_parts`` False the parts are listed, not written.
    Returns the manifest path."""
    folder.mkdir(parents=True, exist_ok=True)
    key, iv = bytes(range(16)), bytes(range(16, 32))
    ciphertext = encrypt(compressed, key, iv)
    names = list(part_names or [f"{name}.part.{i}" for i in range(part_count)])
    step = -(-len(ciphertext) // len(names))
    entries = []
    for index, part_name in enumerate(names):
        piece = ciphertext[index * step : (index + 1) * step]
        if write_parts:
            (folder / part_name).write_bytes(piece)
        entries.append(mf.PartEntry(index, part_name, hashlib.sha1(piece).hexdigest()))
    public = public_key_of(load_certificate(identity.cert))
    unsigned = mf.Manifest(
        name=name,
        user="123456789012",
        digest=digest,
        size=size,
        bundled_size=len(ciphertext),
        ec2_encrypted_key=wrap_secret(public, key),
        user_encrypted_key=wrap_secret(public, key),
        ec2_encrypted_iv=wrap_secret(public, iv),
        user_encrypted_iv=wrap_secret(public, iv),
        parts=tuple(entries),
        architecture="x86_64",
    )
    signature = sign(load_private_key(identity.key), signed_sections(unsigned))
    path = folder / (manifest_name or f"{name}.manifest.xml")
    path.write_bytes(render(mf.Manifest(**{**unsigned.__dict__, "signature": signature})))
    return path


# --------------------------------------------------------------------------- sparse extremes


def many_extents_member(name: str, count: int, *, stride: int = 4096) -> tuple[bytes, int]:
    """A whole tar archive: one old-GNU sparse member with ``count`` extents of
    one byte each, ``stride`` bytes apart (4 slots in the header, 21 in each
    extension block), then its stored bytes. Returns (archive, real size).
    Built with one formatting pass, so two million extents take a second."""
    real_size = count * stride
    slot = b"%011o\0%011o\0"
    slots = [slot % (i * stride, 1) for i in range(count)]
    first, rest = slots[:4], slots[4:]
    fields = {386: b"".join(first), 482: bytes([bool(rest)]), 483: b"%011o\0" % real_size}
    head = header(name, typeflag=b"S", size=count, fields=fields)
    blocks = []
    for start in range(0, len(rest), 21):
        chunk = b"".join(rest[start : start + 21]).ljust(504, b"\0")
        more = start + 21 < len(rest)
        blocks.append(chunk + bytes([more]) + bytes(7))
    body = head + b"".join(blocks) + pad(b"\x5a" * count)
    assert len(body) % BLOCK == 0
    return body + end(len(body)), real_size


# --------------------------------------------------------------------------- measuring


# A small parent that starts the command and (when given a report file)
# writes the command's own peak RSS and CPU time there. Linux carries the peak
# RSS of the process that execs into the new program, and subprocess starts
# children from the test process itself (vfork), so a child of a test
# process holding hundreds of MiB "peaks" at that much before it does
# anything; libFuzzer's -rss_limit_mb and any measurement would see it. A
# child forked by this parent starts from the parent's few MiB.
_CLEAN_PARENT = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
if sys.argv[1]:
    with open(sys.argv[1], "w") as report:
        report.write(f"{usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def clean_parent(argv: Sequence[str], report: Path | None = None) -> list[str]:
    """``argv`` run through a small parent (see above); with ``report``, the
    command's peak RSS (KiB) and CPU seconds are written there."""
    return [sys.executable, "-c", _CLEAN_PARENT, str(report or ""), *argv]


@dataclass(frozen=True)
class Measured:
    status: int
    stdout: str
    stderr: str
    seconds: float  # wall-clock
    cpu_seconds: float
    peak_rss_mib: float


def run_measured(argv: Sequence[str], report: Path, *, timeout: float) -> Measured:
    """Runs ``argv`` and measures its wall time, CPU time and peak RSS
    (``report`` is a scratch file for the figures)."""
    started = time.monotonic()
    done = subprocess.run(
        clean_parent(argv, report),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    seconds = time.monotonic() - started
    rss_kib, cpu = report.read_text().split()
    return Measured(
        done.returncode, done.stdout, done.stderr, seconds, float(cpu), int(rss_kib) / 1024
    )
