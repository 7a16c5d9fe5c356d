"""Result records and their one conversion to JSON.

Every library function returns a frozen dataclass that derives from
:class:`JsonRecord`; ``to_dict()`` turns it into data ``json.dump`` takes:
paths and enums become strings, tuples lists, nested records dicts. A record
that says more in JSON than its fields (``ok`` of a verify report) adds it
in :meth:`JsonRecord.json_extras`.
"""

from __future__ import annotations

import dataclasses
import os
from enum import Enum
from typing import Any

__all__ = ["JsonRecord", "to_json"]


def to_json(value: Any) -> Any:
    """``value`` as JSON-ready data (records, paths, enums and containers)."""
    if isinstance(value, JsonRecord):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return to_json(value.value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


class JsonRecord:
    """A result record (a dataclass) that turns into JSON-ready data."""

    def to_dict(self) -> dict[str, Any]:
        fields = {
            f.name: to_json(getattr(self, f.name))
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
        }
        return {**fields, **{k: to_json(v) for k, v in self.json_extras().items()}}

    def json_extras(self) -> dict[str, Any]:
        """Values the JSON form has beyond the fields (derived ones); none by default."""
        return {}
