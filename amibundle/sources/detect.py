"""Recognising an image's format by its magic bytes, and refusing what is no image.

File names say nothing reliable (``root.img`` may well be gzip data), so
only content counts: the first bytes for the compressors and most disk
formats, the last 512 for a fixed-size VHD, whose footer is its only mark.
A tar archive (or a compressed one) is a tree, not a disk: it is refused
with a pointer at bundle-vol, as is a folder.
"""

from __future__ import annotations

from amibundle.errors import UsageError
from amibundle.sources.base import ImageFormat

__all__ = ["HEAD_BYTES", "TAIL_BYTES", "format_of", "is_tar", "refuse_tree"]

HEAD_BYTES = 512  # enough for every magic below and for a tar header
TAIL_BYTES = 512  # a VHD footer

_BZIP2_BLOCK = b"\x31\x41\x59\x26\x53\x59"  # the first block's magic (pi)
_BZIP2_EMPTY = b"\x17\x72\x45\x38\x50\x90"  # end of stream right away (sqrt pi)
_MAGICS: tuple[tuple[bytes, ImageFormat], ...] = (
    (b"\xfd7zXZ\x00", ImageFormat.XZ),
    (b"\x28\xb5\x2f\xfd", ImageFormat.ZSTD),
    (b"QFI\xfb", ImageFormat.QCOW2),
    (b"KDMV", ImageFormat.VMDK),  # hosted sparse extent
    (b"COWD", ImageFormat.VMDK),  # ESX sparse extent
    (b"# Disk DescriptorFile", ImageFormat.VMDK),  # descriptor of a split or flat disk
    (b"vhdxfile", ImageFormat.VHDX),
    (b"conectix", ImageFormat.VHD),  # the footer copy that starts a dynamic VHD
)
_VHD_FOOTER = b"conectix"


def format_of(head: bytes, tail: bytes = b"") -> ImageFormat:
    """The format of an image that starts with ``head`` and ends with
    ``tail`` (empty for a stream); raw when nothing matches."""
    if head[:3] == b"\x1f\x8b\x08":  # gzip with deflate, the only method there is
        return ImageFormat.GZIP
    if head[:3] == b"BZh" and head[3:4].isdigit() and head[4:10] in (_BZIP2_BLOCK, _BZIP2_EMPTY):
        return ImageFormat.BZIP2
    for magic, kind in _MAGICS:
        if head.startswith(magic):
            return kind
    # A fixed VHD is the raw disk plus a 512-byte footer (511 bytes in old ones).
    if _VHD_FOOTER in tail[-TAIL_BYTES:][:9]:
        return ImageFormat.VHD
    return ImageFormat.RAW


def is_tar(head: bytes) -> bool:
    """Whether ``head`` is the first header of a POSIX or GNU tar archive."""
    return len(head) >= 263 and head[257:262] == b"ustar"


def refuse_tree(label: str, what: str) -> UsageError:
    """The error for a tree given where an image is expected."""
    return UsageError(
        f"{{param}} {label} is {what}, not a disk image",
        hint="to bundle a tree of files, make an image of it with bundle-vol "
        "(amibundle bundle-vol -v FOLDER; bundle_volume() in Python)"
        + (", after unpacking the archive" if "archive" in what else ""),
        param="image",
    )
