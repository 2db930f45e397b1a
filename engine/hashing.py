"""A stable hash of a step's arguments, compared on replay to catch changed calls."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from typing import Any


def _feed(h: Any, value: Any, depth: int = 0) -> None:
    if depth > 20:
        h.update(b"<deep>")
        return
    if value is None or isinstance(value, bool | int | float | str | bytes):
        h.update(type(value).__name__.encode())
        h.update(repr(value).encode())
    elif isinstance(value, list | tuple):
        h.update(b"[" if isinstance(value, list) else b"(")
        for item in value:
            _feed(h, item, depth + 1)
        h.update(b"]")
    elif isinstance(value, dict):
        h.update(b"{")
        for k, v in value.items():
            _feed(h, k, depth + 1)
            _feed(h, v, depth + 1)
        h.update(b"}")
    elif isinstance(value, set | frozenset):
        h.update(b"<set>")
        for item in sorted(repr(v) for v in value):
            h.update(item.encode())
    elif isinstance(value, enum.Enum):
        h.update(f"{type(value).__qualname__}.{value.name}".encode())
    elif hasattr(value, "model_dump"):
        h.update(type(value).__qualname__.encode())
        _feed(h, value.model_dump(), depth + 1)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        h.update(type(value).__qualname__.encode())
        _feed(h, dataclasses.asdict(value), depth + 1)
    else:
        # Clients, connections and other live objects: their repr holds an address
        # that differs on every run, so only their type takes part.
        h.update(f"<{type(value).__module__}.{type(value).__qualname__}>".encode())


def args_hash(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """16 hex digits identifying the arguments of a call, stable across processes."""
    h = hashlib.blake2b(digest_size=8)
    _feed(h, args)
    _feed(h, sorted(kwargs.items()))
    return h.hexdigest()
