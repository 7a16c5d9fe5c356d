"""Checks and normalisation of user-supplied bundle metadata.

Shared by bundle-image and bundle-vol, library and CLI alike. Each function
raises :class:`~amibundle.errors.UsageError` with a message that names the
option, so the CLI can show it as is.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Iterable, Mapping

from amibundle.manifest import DeviceMapping, plain_name_problem

__all__ = [
    "MAX_IMAGE_SIZE",
    "check_image_size",
    "check_plain_name",
    "detect_architecture",
    "normalize_account_id",
    "parse_block_device_mapping",
    "split_product_codes",
]

from amibundle.errors import UsageError

MAX_IMAGE_SIZE = 10 * 1024**3  # EC2's limit for instance-store images


def normalize_account_id(user: str) -> str:
    """The 12-digit account number with dashes removed. Unlike the classic
    tool, which accepted any text containing 12 digits, it must be exactly that."""
    digits = user.replace("-", "")
    if not re.fullmatch(r"[0-9]{12}", digits):
        raise UsageError(
            f"--user {user!r} is not a 12-digit AWS account number "
            "(dashes allowed, e.g. 1234-5678-9012)",
            hint="an access key id (AKIA...) is not an account number",
        )
    return digits


def split_product_codes(values: Iterable[str]) -> tuple[str, ...]:
    """``["a,b", "c"]`` -> ``("a", "b", "c")``: one code per comma-separated item
    (the classic wrote ``a,b`` as one code)."""
    codes: list[str] = []
    for value in values:
        for code in value.split(","):
            code = code.strip()
            if not code:
                raise UsageError(f"--productcodes {value!r} has an empty product code")
            if code not in codes:
                codes.append(code)
    return tuple(codes)


def parse_block_device_mapping(
    values: Iterable[str] | Mapping[str, str],
) -> tuple[DeviceMapping, ...]:
    """Parses ``-B`` values (``"ami=sda1,root=/dev/sda1"``, repeatable; later
    pairs override earlier ones of the same virtual name) into sorted mappings.
    As the classic does, a second ``=`` and what follows it is dropped."""
    pairs: dict[str, str] = {}
    if isinstance(values, Mapping):
        items: Iterable[str] = (f"{k}={v}" for k, v in values.items())
    else:
        items = (item for value in values for item in _items_of(value))
    for item in items:
        virtual, sep, rest = item.partition("=")
        device = rest.split("=", 1)[0].strip()
        if not sep or not virtual.strip() or not device:
            raise UsageError(
                f"--block-device-mapping item {item!r} is not of the form virtual=device"
            )
        pairs[virtual.strip()] = device
    return tuple(DeviceMapping(v, d) for v, d in sorted(pairs.items()))


def _items_of(value: str) -> list[str]:
    if not value.strip():
        raise UsageError("--block-device-mapping needs at least one virtual=device pair")
    return value.split(",")


def check_plain_name(value: str, option: str) -> str:
    """A file name with no directory part: prefixes become file names and
    manifest text (the manifest module owns the rule)."""
    problem = plain_name_problem(option, value)
    if problem:
        raise UsageError(problem)
    return value


def check_image_size(size: int, *, size_checks: bool) -> None:
    if not size_checks:
        return
    if size == 0:
        raise UsageError("the image is empty (zero bytes)")
    if size > MAX_IMAGE_SIZE:
        raise UsageError(
            f"the image is {size} bytes, larger than EC2's 10 GiB limit for instance-store images",
            hint="--no-size-checks lifts the limit, for other clouds",
        )


def detect_architecture() -> str:
    """The manifest architecture of this machine, as the classic derives it
    from ``uname``: ``i386``, ``x86_64``, or ``unknown``."""
    machine = platform.machine()
    if re.fullmatch(r"i[3-6]86", machine):
        return "i386"
    if machine in ("x86_64", "amd64", "AMD64"):
        return "x86_64"
    return "unknown"
