"""The seed inputs of the fuzz targets, and reproductions of bugs found.

    python -m tests.fuzz.seeds   # (re)writes tests/fuzz/corpus/*/seed-*, regression-*

Seeds are small valid and near-valid inputs of every shape the readers
accept (manifest versions, tar sparse formats, compressions, bombs), so the
fuzzers start from the interesting parts of the format instead of from
nothing. ``regression-*`` files reproduce bugs that were found and fixed
(messages that were not one short line). Files the fuzzers find are added
beside them by ``make fuzz`` (libFuzzer names them by their SHA-1).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from pathlib import Path

from amibundle.format.manifest import PartEntry
from amibundle.format.manifest_writer import render
from tests.fuzz.harnesses import BOMBS, UnbundleControl
from tests.support import manifests as mf
from tests.support import tars as tf

CORPUS = Path(__file__).resolve().parent / "corpus"


def manifest_seeds() -> Iterator[tuple[str, bytes]]:
    yield "valid", mf.rendered()
    yield "one-part", mf.rendered(parts=mf.make_manifest().parts[:1])
    yield (
        "full",
        mf.rendered(
            kernel_id="aki-12345678",
            ramdisk_id="ari-12345678",
            product_codes=("ABCD1234",),
            ancestry=("ami-12345678",),
            image_type="machine",
        ),
    )
    for version in ("3", "2007-08-29"):
        yield f"version-{version}", mf.old_manifest(version).data
    yield "no-bundler", mf.old_manifest("3", with_bundler=False).data
    for case in mf.hostile_cases(Path("/nonexistent/secret"), 9):
        yield f"hostile-{case.id}", case.data
    for case in mf.invalid_cases():
        yield f"invalid-{case.id}", case.data


def manifest_bugs() -> Iterator[tuple[str, bytes]]:
    # The root element's name, namespace URI included, goes into the message whole.
    yield "root-namespace", b"<x:manifest xmlns:x='" + b"u" * 5000 + b"'/>"
    # libxml2's message quotes element names whole (up to 50,000 characters).
    yield "syntax-error", b"<manifest><" + b"a" * 5000 + b"></b></manifest>"
    # Twenty problems of up to ~170 characters each, joined on one line.
    parts = tuple(PartEntry(i, f"{'b' * 71}.part.{i}", "0" * 40) for i in range(25))
    valid = render(mf.make_manifest(parts=parts))
    yield "many-problems", valid.replace(b"b" * 71, b"b" * 50 + b"\x7f" + b"c" * 20)


def _tar_shapes() -> Iterator[tuple[str, bytes]]:
    data = tf.pattern(0, 1500)
    entries = [(0, 100), (1000, 200), (3000, 50), (5000, 1), (7000, 300), (9000, 849)]
    stored = b"".join(tf.pattern(o, n) for o, n in entries)
    yield "plain", tf.archive(tf.member("disk.img", data))
    yield "empty-file", tf.archive(tf.member("disk.img"))
    yield "posix", tf.archive(tf.member("disk.img", data, magic=tf.POSIX_MAGIC))
    yield "old-gnu-sparse", tf.archive(tf.old_gnu_sparse("disk.img", 10_000, entries, stored))
    for version in ("0.0", "0.1", "1.0"):
        member = tf.pax_sparse_member("disk.img", 10_000, entries, stored, version=version)
        yield f"pax-sparse-{version}", tf.archive(member)
    yield "long-name", tf.archive(tf.long_name("d" * 300), tf.member("d" * 100, data[:10]))
    yield (
        "ustar-prefix",
        tf.archive(tf.member("disk.img", data[:10], magic=tf.POSIX_MAGIC, prefix="")),
    )
    yield (
        "pax-path-mtime",
        tf.archive(
            tf.pax_header([("path", "disk.img"), ("mtime", "1700000000.5"), ("size", "10")]),
            tf.member("x", data[:10], magic=tf.POSIX_MAGIC),
        ),
    )
    yield (
        "pax-global",
        tf.archive(
            tf.pax_header([("comment", "hi")], typeflag=b"g"), tf.member("disk.img", data[:10])
        ),
    )
    yield (
        "base256-size",
        tf.archive(tf.header("disk.img", size=tf.base256(10, 12)) + tf.pad(data[:10])),
    )
    yield (
        "signed-checksum",
        tf.archive(tf.member("disk.img\xe9", data[:10], checksum="signed", uname=b"\xff")),
    )
    yield "symlink", tf.archive(tf.member("disk.img", typeflag=b"2", linkname="/etc/passwd"))
    yield "two-members", tf.archive(tf.member("disk.img", data[:10]), tf.member("b", data[:10]))


# Control bytes of the tar target: chunk size, short reads, batch size.
_TAR_CONTROLS = {"": 0x0A, "-trickle": 0xA4, "-batch1": 0x49}


def tar_seeds() -> Iterator[tuple[str, bytes]]:
    for (name, tar), (suffix, control) in itertools.product(_tar_shapes(), _TAR_CONTROLS.items()):
        if suffix and name not in ("old-gnu-sparse", "pax-sparse-1.0", "plain"):
            continue
        yield f"{name}{suffix}", bytes([control]) + tar


def tar_bugs() -> Iterator[tuple[str, bytes]]:
    # The version numbers of an unsupported GNU sparse format are PAX values
    # of up to 1 MiB, put into the message whole.
    pax = tf.pax_header([("GNU.sparse.major", "1" * 3000), ("GNU.sparse.minor", "0")])
    yield "sparse-version", bytes([0x0A]) + tf.archive(pax, tf.member("disk.img", b"x"))


@functools.cache
def _controls() -> list[tuple[bytes, UnbundleControl]]:
    pairs = itertools.product(range(256), repeat=2)
    return [(bytes(pair), UnbundleControl.of(*pair)) for pair in pairs]


def unbundle_control(**wanted: object) -> bytes:
    """The first two control bytes whose :class:`UnbundleControl` has ``wanted``."""
    for raw, control in _controls():
        if all(getattr(control, key) == value for key, value in wanted.items()):
            return raw
    raise ValueError(f"no control bytes give {wanted}")


def unbundle_seeds() -> Iterator[tuple[str, bytes]]:
    shapes = dict(_tar_shapes())
    honest = {"size_mode": "honest", "piece": 4096}
    for compression in ("gzip", "zstd", "gzip-split", "plain"):
        for shape in ("plain", "old-gnu-sparse", "pax-sparse-1.0"):
            control = unbundle_control(compression=compression, bomb_mib=0, **honest)
            yield f"{compression}-{shape}", control + shapes[shape]
    for fill, mib in itertools.product((0, 0x41), (1, 64, max(BOMBS))):
        control = unbundle_control(compression="gzip", fill=fill, bomb_mib=mib, **honest)
        yield f"bomb-{mib}mib-{fill:02x}", control + shapes["plain"]
    control = unbundle_control(compression="zstd", fill=0, bomb_mib=max(BOMBS), **honest)
    yield "bomb-zstd", control + shapes["old-gnu-sparse"]
    for mode, delta in (("off", 1), ("off", -1), ("none", 0), ("small", 0)):
        control = unbundle_control(compression="gzip", size_mode=mode, delta=delta, bomb_mib=0)
        yield f"size-{mode}{delta:+d}", control + shapes["plain"]
    control = unbundle_control(compression="gzip", bomb_mib=0, size_mode="honest", piece=16)
    yield "tiny-parts", control + shapes["pax-sparse-0.1"]


SEEDS = {
    "manifest": (manifest_seeds, manifest_bugs),
    "tar": (tar_seeds, tar_bugs),
    "unbundle": (unbundle_seeds, lambda: iter(())),
}


def write_seeds(corpus: Path = CORPUS) -> None:
    for target, (seeds, bugs) in SEEDS.items():
        folder = corpus / target
        folder.mkdir(parents=True, exist_ok=True)
        for prefix, source in (("seed", seeds), ("regression", bugs)):
            for name, data in source():
                (folder / f"{prefix}-{name}").write_bytes(data)


if __name__ == "__main__":
    write_seeds()
