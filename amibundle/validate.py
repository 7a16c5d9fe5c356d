"""Checks of what callers hand the library: paths, names, account ids,
mappings, product codes, sizes.

Each check raises :class:`~amibundle.errors.UsageError` naming the
parameter it is about (``param``), so a Python caller reads ``user=`` and
the command line reads ``--user``. :func:`collect` runs several checks and
reports every problem at once.
"""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar, cast

from amibundle.errors import AmibundleError, ImageSizeError, UsageError
from amibundle.format.manifest import DeviceMapping
from amibundle.format.names import plain_name_problem
from amibundle.progress import Progress

__all__ = [
    "MAX_IMAGE_SIZE",
    "Problems",
    "as_enum",
    "as_optional_path",
    "as_path",
    "check_image_size",
    "check_plain_name",
    "check_positive",
    "check_progress",
    "check_optional_record",
    "check_record",
    "check_text",
    "detect_architecture",
    "image_too_large",
    "normalize_account_id",
    "parse_block_device_mapping",
    "split_product_codes",
]

MAX_IMAGE_SIZE = 10 * 1024**3  # EC2's limit for instance-store images
# What an AWS access key id looks like (long-term AKIA..., temporary ASIA...):
# only such text gets the "not an account number" hint.
_ACCESS_KEY_ID = re.compile(r"(?:AKIA|ASIA)[A-Z0-9]{0,124}", re.IGNORECASE)
_T = TypeVar("_T")


def as_path(value: object, param: str) -> Path:
    """``value`` (a ``str`` or ``os.PathLike``) as a Path; anything else is a UsageError."""
    if isinstance(value, (str, os.PathLike)) and not isinstance(value, bytes):
        path = Path(value)
        if str(path) == "" or value == "":
            raise UsageError("{param} is an empty path", param=param)
        return path
    raise UsageError(
        f"{{param}} must be a path (str or os.PathLike), not {type(value).__name__}", param=param
    )


def as_optional_path(value: object, param: str) -> Path | None:
    return None if value is None else as_path(value, param)


class Problems:
    """Collects the UsageErrors of several checks and raises them together.

    ``with Problems() as problems: x = problems.check(f, ...)`` runs each check;
    one that fails is recorded and yields None, and leaving the block raises
    one error listing every problem (in the order found)."""

    def __init__(self) -> None:
        self.errors: list[AmibundleError] = []

    def check(self, func: Callable[..., _T], *args: object, **kwargs: object) -> _T | None:
        try:
            return func(*args, **kwargs)
        except UsageError as err:
            self.errors.extend(err.problems or (err,))
            return None

    def add(self, error: AmibundleError) -> None:
        self.errors.append(error)

    def raise_if_any(self) -> None:
        if self.errors:
            raise UsageError.combine(self.errors)

    def __enter__(self) -> Problems:
        return self

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        if kind is None:
            self.raise_if_any()


def normalize_account_id(user: object) -> str:
    """The 12-digit account number with dashes removed. Unlike the classic
    tool, which accepted any text containing 12 digits, it must be exactly that."""
    digits = user.replace("-", "") if isinstance(user, str) else None
    if digits is None or not re.fullmatch(r"[0-9]{12}", digits):
        hint = None
        if isinstance(user, str) and _ACCESS_KEY_ID.fullmatch(user.strip()):
            hint = "an access key id (AKIA...) is not an account number"
        raise UsageError(
            f"{{param}} {user!r} is not a 12-digit AWS account number "
            "(dashes allowed, e.g. 1234-5678-9012)",
            hint=hint,
            param="user",
        )
    return digits


def split_product_codes(values: Iterable[str]) -> tuple[str, ...]:
    """``["a,b", "c"]`` -> ``("a", "b", "c")``: one code per comma-separated item
    (the classic wrote ``a,b`` as one code)."""
    if isinstance(values, str):
        values = [values]
    codes: list[str] = []
    for value in _texts(values, "product_codes"):
        for code in value.split(","):
            code = code.strip()
            if not code:
                raise UsageError(
                    f"{{param}} {value!r} has an empty product code", param="product_codes"
                )
            if code not in codes:
                codes.append(code)
    return tuple(codes)


def parse_block_device_mapping(
    values: Iterable[str] | Mapping[str, str],
) -> tuple[DeviceMapping, ...]:
    """Parses ``-B`` values (``"ami=sda1,root=/dev/sda1"``, repeatable; later
    pairs override earlier ones of the same virtual name) into sorted mappings.
    As the classic does, a second ``=`` and what follows it is dropped."""
    if isinstance(values, str):
        values = [values]
    pairs: dict[str, str] = {}
    if isinstance(values, Mapping):
        items: Iterable[str] = (
            f"{k}={v}" for k, v in _texts_of_mapping(values, "block_device_mapping").items()
        )
    else:
        items = (
            item for value in _texts(values, "block_device_mapping") for item in _items_of(value)
        )
    for item in items:
        virtual, sep, rest = item.partition("=")
        device = rest.split("=", 1)[0].strip()
        if not sep or not virtual.strip() or not device:
            raise UsageError(
                f"{{param}} item {item!r} is not of the form virtual=device",
                param="block_device_mapping",
            )
        pairs[virtual.strip()] = device
    return tuple(DeviceMapping(v, d) for v, d in sorted(pairs.items()))


def _texts(values: object, param: str) -> list[str]:
    """``values`` as a list of strings, or a UsageError naming ``param``."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise UsageError(
            f"{{param}} must be a list of strings, not {type(values).__name__}", param=param
        )
    texts = list(values)
    for value in texts:
        if not isinstance(value, str):
            raise UsageError(
                f"{{param}} items must be strings, not {type(value).__name__}", param=param
            )
    return texts


def _texts_of_mapping(values: Mapping[Any, Any], param: str) -> dict[str, str]:
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in values.items()):
        raise UsageError("{param} must map strings to strings", param=param)
    return {str(k): str(v) for k, v in values.items()}


def check_text(value: object, param: str, *, optional: bool = False) -> str | None:
    """A string (or None when ``optional``), or a UsageError naming ``param``."""
    if isinstance(value, str) or (optional and value is None):
        return value
    raise UsageError(f"{{param}} must be a string, not {type(value).__name__}", param=param)


def _items_of(value: str) -> list[str]:
    if not value.strip():
        raise UsageError(
            "{param} needs at least one virtual=device pair", param="block_device_mapping"
        )
    return value.split(",")


def check_plain_name(value: object, param: str) -> str:
    """A file name with no directory part: prefixes become file names and
    manifest text (the rule is :func:`amibundle.format.names.plain_name_problem`)."""
    problem = plain_name_problem("{param}", value)
    if problem:
        raise UsageError(problem, param=param)
    assert isinstance(value, str)
    return value


def check_positive(value: object, param: str) -> int:
    """A whole number of at least 1 (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(
            f"{{param}} must be a whole number of at least 1, not {value!r}", param=param
        )
    return value


def check_image_size(size: int, *, size_checks: bool) -> None:
    if not size_checks:
        return
    if size == 0:
        raise ImageSizeError("the image is empty (zero bytes)")
    if size > MAX_IMAGE_SIZE:
        raise image_too_large(size)


def image_too_large(size: int, *, at_least: bool = False) -> ImageSizeError:
    """The error for an image over EC2's limit (``at_least``: a first pass
    stopped after ``size`` bytes, so the image is larger still)."""
    amount = f"at least {size}" if at_least else str(size)
    return ImageSizeError(
        f"the image is {amount} bytes, larger than EC2's 10 GiB limit for instance-store images",
        hint="{off} lifts the limit, for other clouds",
        param="size_checks",
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


_E = TypeVar("_E", bound=Enum)


def as_enum(kind: type[_E], value: object, param: str) -> _E:
    """``value`` (a member or its value) as a member of ``kind``."""
    if isinstance(value, kind):
        return value
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(str(member.value) for member in kind)
        raise UsageError(
            f"{{param}} must be one of {choices}, not {value!r}", param=param
        ) from None


_R = TypeVar("_R")


def check_record(value: object, kind: type[_R], param: str) -> _R:
    """``value`` if it is a ``kind``; a UsageError naming ``param`` otherwise,
    rather than an AttributeError later on."""
    if isinstance(value, kind):
        return value
    raise UsageError(
        f"{{param}} must be a {kind.__name__}, not {type(value).__name__}", param=param
    )


def check_progress(value: object) -> Progress | None:
    """A progress listener (an object with start, advance and finish), or None."""
    if value is None or all(
        callable(getattr(value, m, None)) for m in ("start", "advance", "finish")
    ):
        return cast(Progress | None, value)
    raise UsageError(
        f"{{param}} must have start(), advance() and finish() methods, not be a "
        f"{type(value).__name__}",
        param="progress",
    )


def check_optional_record(value: object, kind: type[_R], param: str) -> _R | None:
    """:func:`check_record`, None allowed."""
    return None if value is None else check_record(value, kind, param)
