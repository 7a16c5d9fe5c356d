"""The rules a manifest record must keep to be written, or to be accepted
when read: field formats, part indices and names, mappings, and which
fields each manifest version has a place for.

Every rule reports problems instead of raising, so that the writer and the
reader can name them all at once.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from amibundle.errors import shorten
from amibundle.format.manifest import (
    IMAGE_TYPES,
    SUPPORTED_VERSIONS,
    DeviceMapping,
    Manifest,
    PartEntry,
)
from amibundle.format.names import NOT_XML_SAFE, plain_name_problem, show

__all__ = ["LAYOUTS", "Layout", "Problem", "join_problems", "record_problems"]

_MAX_LISTED_PROBLEMS = 20
_HEX = re.compile(r"[0-9a-f]+")
_DIGEST = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class Layout:
    """Which optional parts a manifest version has."""

    architecture: bool
    machine_extras: bool  # block-device mapping, kernel/ramdisk ids, product codes
    image_extras: bool  # image type, kernel name, ancestry


LAYOUTS = {
    "2007-10-10": Layout(architecture=True, machine_extras=True, image_extras=True),
    "2007-08-29": Layout(architecture=True, machine_extras=False, image_extras=False),
    "3": Layout(architecture=False, machine_extras=False, image_extras=False),
}

# A problem is (label, message); the label lets the reader drop a record-level
# complaint about a field it has already reported as missing or malformed.
Problem = tuple[str, str]


def _text_problem(label: str, value: object) -> str | None:
    """Why ``value`` cannot be written as element text, or None."""
    if not isinstance(value, str):
        return f"{label} must be a string, not {show(value)}"
    if value == "":
        return f"{label} is empty"
    if NOT_XML_SAFE.search(value):
        return f"{label} {show(value)} has a character XML cannot carry"
    return None


def _count_problem(label: str, value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return f"{label} must be a non-negative integer, not {show(value)}"
    return None


def _digest_problem(label: str, value: object) -> str | None:
    if not isinstance(value, str) or not _DIGEST.fullmatch(value):
        return f"{label} {show(value)} is not a SHA-1 digest (40 lower-case hex digits)"
    return None


def _hex_problem(label: str, value: object) -> str | None:
    if not isinstance(value, str) or not _HEX.fullmatch(value) or len(value) % 2:
        return f"{label} {show(value)} is not lower-case hex of whole bytes"
    return None


def _optional_text_problems(fields: Iterable[tuple[str, str | None]]) -> list[Problem]:
    problems: list[Problem] = []
    for label, value in fields:
        problem = None if value is None else _text_problem(label, value)
        if problem is not None:
            problems.append((label, problem))
    return problems


def _layout_problems(manifest: Manifest, layout: Layout) -> list[Problem]:
    """Fields the manifest's version has no place for, and the image type rule."""
    problems: list[Problem] = []
    version = manifest.version
    present: list[tuple[str, bool, bool]] = [
        ("machine_configuration/architecture", manifest.architecture is not None,
         layout.architecture),
        ("machine_configuration/block_device_mapping", bool(manifest.block_device_mapping),
         layout.machine_extras),
        ("machine_configuration/kernel_id", manifest.kernel_id is not None,
         layout.machine_extras),
        ("machine_configuration/ramdisk_id", manifest.ramdisk_id is not None,
         layout.machine_extras),
        ("machine_configuration/product_codes", bool(manifest.product_codes),
         layout.machine_extras),
        ("image/type", manifest.image_type is not None, layout.image_extras),
        ("image/kernel_name", manifest.kernel_name is not None, layout.image_extras),
        ("image/ancestry", bool(manifest.ancestry), layout.image_extras),
    ]  # fmt: skip
    for label, is_present, allowed in present:
        if is_present and not allowed:
            problems.append((label, f"{label} is not part of a version {version} manifest"))
    if layout.image_extras:
        if manifest.image_type is None:
            problems.append(
                ("image/type", f"image/type is required in a version {version} manifest")
            )
        elif manifest.image_type not in IMAGE_TYPES:
            problems.append(
                (
                    "image/type",
                    f"image/type {show(manifest.image_type)} is not "
                    f"one of {', '.join(IMAGE_TYPES)}",
                )
            )
    return problems


def _part_problems(parts: object) -> list[Problem]:
    # Typed loosely on purpose: render() may be handed a hand-built record.
    problems: list[Problem] = []
    if not isinstance(parts, tuple | list):
        return [("image/parts", f"image/parts must be a tuple of PartEntry, not {show(parts)}")]
    for position, part in enumerate(parts):
        where = f"image/parts/part[{position}]"
        if not isinstance(part, PartEntry):
            problems.append((where, f"{where} is not a PartEntry: {show(part)}"))
            continue
        if isinstance(part.index, bool) or part.index != position:
            problems.append(
                (
                    f"{where}/index",
                    f"{where} has index {show(part.index)}; part "
                    "indices must be exactly 0..n-1 in order",
                )
            )
        for label, problem in (
            (f"{where}/filename", plain_name_problem(f"{where}/filename", part.filename)),
            (f"{where}/digest", _digest_problem(f"{where}/digest", part.digest)),
        ):
            if problem is not None:
                problems.append((label, problem))
    # Empty names are reported on their own (as missing or empty), not as duplicates.
    names = Counter(p.filename for p in parts if isinstance(p, PartEntry) and p.filename)
    for filename, times in names.items():
        if times > 1:
            problems.append(
                ("image/parts", f"part file name {show(filename)} is listed {times} times")
            )
    return problems


def _mapping_problems(mappings: object) -> list[Problem]:
    base = "machine_configuration/block_device_mapping"
    if not isinstance(mappings, tuple | list):
        return [(base, f"{base} must be a tuple of DeviceMapping, not {show(mappings)}")]
    problems: list[Problem] = []
    for position, mapping in enumerate(mappings):
        where = f"{base}/mapping[{position}]"
        if not isinstance(mapping, DeviceMapping):
            problems.append((where, f"{where} is not a DeviceMapping: {show(mapping)}"))
            continue
        problems += _optional_text_problems(
            [(f"{where}/virtual", mapping.virtual), (f"{where}/device", mapping.device)]
        )
    virtuals = Counter(m.virtual for m in mappings if isinstance(m, DeviceMapping) and m.virtual)
    for virtual, times in virtuals.items():
        if times > 1:
            problems.append((base, f"{base} maps {show(virtual)} {times} times"))
    return problems


def record_problems(manifest: Manifest, *, need_signature: bool) -> list[Problem]:
    """Everything that keeps ``manifest`` from being written as a classic manifest."""
    layout = LAYOUTS.get(manifest.version)
    if layout is None:
        return [
            (
                "version",
                f"manifest version {show(manifest.version)} is not supported "
                f"(supported: {', '.join(SUPPORTED_VERSIONS)})",
            )
        ]
    problems: list[Problem] = []

    def check(label: str, problem: str | None) -> None:
        if problem is not None:
            problems.append((label, problem))

    check("image/name", plain_name_problem("image/name", manifest.name))
    check("image/user", _text_problem("image/user", manifest.user))
    check("image/digest", _digest_problem("image/digest", manifest.digest))
    for label in ("size", "bundled_size"):
        check(f"image/{label}", _count_problem(f"image/{label}", getattr(manifest, label)))
    for label in (
        "ec2_encrypted_key",
        "user_encrypted_key",
        "ec2_encrypted_iv",
        "user_encrypted_iv",
    ):
        check(f"image/{label}", _hex_problem(f"image/{label}", getattr(manifest, label)))
    if manifest.signature is not None:
        check("signature", _hex_problem("signature", manifest.signature))
    elif need_signature:
        check("signature", "the manifest has no signature (sign signed_sections() first)")
    if manifest.bundler is not None:
        # Other tools leave bundler fields empty ("" is written as an empty element).
        problems += _optional_text_problems(
            (f"bundler/{field}", getattr(manifest.bundler, field) or None)
            for field in ("name", "version", "release")
        )
    problems += _optional_text_problems(
        [
            ("machine_configuration/architecture", manifest.architecture),
            ("machine_configuration/kernel_id", manifest.kernel_id),
            ("machine_configuration/ramdisk_id", manifest.ramdisk_id),
            ("image/kernel_name", manifest.kernel_name),
        ]
    )
    problems += _optional_text_problems(
        (f"machine_configuration/product_codes/product_code[{i}]", code)
        for i, code in enumerate(manifest.product_codes)
    )
    problems += _optional_text_problems(
        (f"image/ancestry/ancestor_ami_id[{i}]", ami) for i, ami in enumerate(manifest.ancestry)
    )
    problems += _mapping_problems(manifest.block_device_mapping)
    problems += _part_problems(manifest.parts)
    problems += _layout_problems(manifest, layout)
    return problems


_JOINED_CHARACTERS = 800


def join_problems(problems: list[str]) -> str:
    """Problems as one line: as many of the first twenty as fit in about 800
    characters, then how many more there are."""
    shown: list[str] = []
    length = 0
    for problem in problems[:_MAX_LISTED_PROBLEMS]:
        if shown and length + len(problem) > _JOINED_CHARACTERS:
            break
        shown.append(shorten(problem))
        length += len(shown[-1]) + 2
    more = len(problems) - len(shown)
    return "; ".join(shown) + (
        f"; and {more} more problem{'s' if more > 1 else ''}" if more > 0 else ""
    )
