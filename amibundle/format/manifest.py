"""The bundle manifest (``<prefix>.manifest.xml``): its records and constants.

The writer is :mod:`~amibundle.format.manifest_writer`, the hardened reader
:mod:`~amibundle.format.manifest_reader`, and the rules a record must keep to
be written :mod:`~amibundle.format.manifest_checks`. All are pure: bytes in,
bytes or records out. Signing and verifying happen elsewhere, over the bytes
``signed_sections()`` (writing) or :attr:`ParsedManifest.signed_data`
(reading) give.

Writer decisions, taken from the classic Ruby tools (``ManifestV20071010`` and
its ``XMLBuilder``), so that :func:`render` reproduces classic manifests byte
for byte:

* The classic builder skips a field whose value is nil and creates parent
  elements lazily, so ``<machine_configuration>`` is written whenever it has at
  least one child: a kernel id without an architecture still gives one. With no
  child at all it is omitted, and the signed data is then ``<image>`` alone.
* Text is escaped as REXML does it: ``& < > " '`` become ``&amp; &lt; &gt;
  &quot; &apos;``. (The fixtures hold none of these characters; this follows
  ``REXML::Text.normalize``.) Characters XML cannot carry faithfully (C0
  controls other than tab and newline, carriage return, U+FFFE/U+FFFF, lone
  surrogates) are refused rather than silently changed.
* A bundle with no parts gets ``<parts count='0'/>``, as REXML writes an
  element without children.

Older versions (from the classic ``ManifestWrapper``): ``3`` has bundler and
image fields only (no ``<machine_configuration>``, no image type);
``2007-08-29`` adds ``<machine_configuration><architecture>``; ``2007-10-10``
adds the image type, kernel name, ancestry, block-device mapping, kernel and
ramdisk ids and product codes. The signed data has the same definition for all
three (the machine configuration part is empty when the element is absent).
The reader keeps what the file says: it does not fill in the defaults the
classic tools assumed for old versions (architecture ``i386``, type
``machine``); ``migrate-manifest`` does that.
"""

from __future__ import annotations

from dataclasses import dataclass

from amibundle.format.names import plain_name_problem

__all__ = [
    "CIPHER_ALGORITHM",
    "CLASSIC_BUNDLER",
    "ZSTD_BUNDLER",
    "DEFAULT_PART_SIZE",
    "DIGEST_ALGORITHM",
    "IMAGE_TYPES",
    "MANIFEST_VERSION",
    "MAX_MANIFEST_SIZE",
    "SUPPORTED_VERSIONS",
    "Bundler",
    "marked_zstd",
    "DeviceMapping",
    "Manifest",
    "ParsedManifest",
    "PartEntry",
    "part_filenames",
]

MANIFEST_VERSION = "2007-10-10"
SUPPORTED_VERSIONS = ("2007-10-10", "2007-08-29", "3")
DEFAULT_PART_SIZE = 10 * 1024 * 1024
IMAGE_TYPES = ("machine", "kernel", "ramdisk")
# Real manifests are a few KiB: about 140 bytes per 10 MiB part, 140 KiB for
# the 10 GiB EC2 allows. 4 MiB holds some 29,000 parts (290 GiB of bundle,
# for other clouds with no_size_checks) and parses in well under 256 MiB of
# memory; at 16 MiB, verify needed more than 400 MiB.
MAX_MANIFEST_SIZE = 4 * 1024 * 1024
DIGEST_ALGORITHM = "SHA1"
CIPHER_ALGORITHM = "AES-128-CBC"


@dataclass(frozen=True)
class Bundler:
    """The tool that made the bundle, as recorded in ``<bundler>``."""

    name: str
    version: str
    release: str


CLASSIC_BUNDLER = Bundler("ec2-ami-tools", "1.5", "3")
# zstd bundles say so here, outside the signed sections, so that an upload to
# AWS can refuse them without the key (EC2 reads gzip only; the manifest of a
# zstd bundle need not look classic, as no classic reader can use it anyway).
ZSTD_BUNDLER = Bundler("amibundle", "1.5", "zstd")


def marked_zstd(manifest: Manifest) -> bool:
    """Whether the manifest says its bundle is zstd-compressed (:data:`ZSTD_BUNDLER`)."""
    bundler = manifest.bundler
    return bundler is not None and (bundler.name, bundler.release) == ("amibundle", "zstd")


@dataclass(frozen=True)
class DeviceMapping:
    """One block-device mapping: a virtual name (``ami``, ``root``, ...) to a device."""

    virtual: str
    device: str


@dataclass(frozen=True)
class PartEntry:
    """One part file: its position, plain file name and SHA-1 (40 lower-case hex)."""

    index: int
    filename: str
    digest: str


@dataclass(frozen=True)
class Manifest:
    """Everything a manifest says. Hex fields are lower case."""

    name: str
    user: str
    digest: str
    size: int
    bundled_size: int
    ec2_encrypted_key: str
    user_encrypted_key: str
    ec2_encrypted_iv: str
    user_encrypted_iv: str
    parts: tuple[PartEntry, ...]
    version: str = MANIFEST_VERSION
    bundler: Bundler | None = CLASSIC_BUNDLER
    architecture: str | None = None
    block_device_mapping: tuple[DeviceMapping, ...] = ()
    kernel_id: str | None = None
    ramdisk_id: str | None = None
    product_codes: tuple[str, ...] = ()
    image_type: str | None = "machine"
    kernel_name: str | None = None
    ancestry: tuple[str, ...] = ()
    signature: str | None = None


@dataclass(frozen=True)
class ParsedManifest:
    """A parsed manifest file.

    ``signed_data`` is cut from the file's own bytes (``raw``), never
    re-serialised: it is what the signature must be checked against.
    """

    manifest: Manifest
    signed_data: bytes
    raw: bytes


# --------------------------------------------------------------------------- part names


def part_filenames(prefix: str, count: int) -> list[str]:
    """The part file names for ``count`` parts: ``<prefix>.part.<i>``, with ``i``
    zero-padded to the number of decimal digits in ``count`` (spec section 1)."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"part count must be a non-negative integer, not {count!r}")
    problem = plain_name_problem("bundle prefix", prefix)
    if problem is not None:
        raise ValueError(problem)
    digits = len(str(count))
    return [f"{prefix}.part.{index:0{digits}d}" for index in range(count)]
