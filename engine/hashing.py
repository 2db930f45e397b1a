"""A stable hash of a step's arguments, compared on replay to catch changed calls.

The hash is over a text form of the arguments that must never change: runs
recorded by an older version replay against it. The pieces are collected in a
list and hashed once (one ``update`` of the joined text is the same digest as
one ``update`` per piece), and plain scalars, the usual arguments, take the
first test.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from typing import Any

_SCALARS = frozenset({type(None), bool, int, float, str, bytes})
_blake2b = hashlib.blake2b


def _feed(out: list[str], value: Any, depth: int = 0) -> None:
    if depth > 20:
        out.append("<deep>")
        return
    t = type(value)
    if t in _SCALARS or isinstance(value, bool | int | float | str | bytes):
        # Subclasses (IntEnum, str enums...) land here too, named by their own type.
        out.append(t.__name__)
        out.append(repr(value))
    elif t is list or t is tuple or isinstance(value, list | tuple):
        out.append("[" if isinstance(value, list) else "(")
        for item in value:
            _feed(out, item, depth + 1)
        out.append("]")
    elif isinstance(value, dict):
        out.append("{")
        for k, v in value.items():
            _feed(out, k, depth + 1)
            _feed(out, v, depth + 1)
        out.append("}")
    elif isinstance(value, set | frozenset):
        out.append("<set>")
        out.extend(sorted(repr(v) for v in value))
    elif isinstance(value, enum.Enum):
        out.append(f"{type(value).__qualname__}.{value.name}")
    elif hasattr(value, "model_dump"):
        out.append(type(value).__qualname__)
        _feed(out, value.model_dump(), depth + 1)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        out.append(type(value).__qualname__)
        _feed(out, dataclasses.asdict(value), depth + 1)
    else:
        # Clients, connections and other live objects: their repr holds an address
        # that differs on every run, so only their type takes part.
        out.append(f"<{type(value).__module__}.{type(value).__qualname__}>")


def args_hash(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """16 hex digits identifying the arguments of a call, stable across processes."""
    if not kwargs:
        # The usual call, positional scalars only: the text _feed would build, made in
        # one pass ("(" type repr ... "]", then "[]" for no kwargs).
        flat = ["("]
        for value in args:
            t = type(value)
            if t not in _SCALARS:
                break
            flat.append(t.__name__)
            flat.append(repr(value))
        else:
            flat.append("][]")
            return _blake2b("".join(flat).encode(), digest_size=8).hexdigest()
    out: list[str] = []
    _feed(out, args)
    if kwargs:
        _feed(out, sorted(kwargs.items()))
    else:
        out.append("[]")  # what an empty sorted(kwargs.items()) feeds
    return _blake2b("".join(out).encode(), digest_size=8).hexdigest()
