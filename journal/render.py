"""Turning decoded values into plain JSON for people and tools (export, CLI, diffs)."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import enum
import math
import uuid
from typing import Any

from .codecs import Undecoded

__all__ = ["to_jsonable"]


def to_jsonable(value: Any) -> Any:  # noqa: PLR0911 - one return per kind of value
    """A JSON-ready view of a decoded value: models and dataclasses become dicts,
    datetimes ISO strings, bytes base64, sets sorted lists; anything else its repr.

    An :class:`~journal.Undecoded` placeholder becomes ``{"$undecoded": label, "kind":
    ..., "type": ..., "value": stored fields, "reason": ...}`` (``size`` for a pickle).
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, Undecoded):
        doc: dict[str, Any] = {"$undecoded": value.label, "kind": value.kind}
        if value.kind == "pickle":
            doc["size"] = value.size
        else:
            doc["type"] = value.type_name
            doc["value"] = to_jsonable(value.value)
        doc["reason"] = value.reason
        return doc
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, set | frozenset):
        items = [to_jsonable(v) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID | decimal.Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return to_jsonable(dump(mode="json"))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return repr(value)
