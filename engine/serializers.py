"""Serializers of a workflow Context's snapshot (``ctx.to_dict(serializer=...)``).

LlamaIndex's serializer interface is ``serialize(value) -> str`` and
``deserialize(str) -> value``. :class:`JsonSerializer` and :class:`PickleSerializer`
here are the journal's codecs with that interface added: either can also be given as a
workflow's or engine's ``codec``.
"""

from __future__ import annotations

import base64
from abc import ABC, abstractmethod
from typing import Any

import journal
from journal import DecodeError, SerializationError

from .errors import ContextSerdeError

__all__ = ["BaseSerializer", "JsonPickleSerializer", "JsonSerializer", "PickleSerializer"]


class BaseSerializer(ABC):
    """Turns a value into a string and back (a Context snapshot holds these strings)."""

    @abstractmethod
    def serialize(self, value: Any) -> str:
        """``value`` as a string; :class:`ContextSerdeError` if it cannot be."""

    @abstractmethod
    def deserialize(self, value: str) -> Any:
        """The value ``serialize`` turned into ``value``."""


class JsonSerializer(journal.JsonSerializer, BaseSerializer):
    """Readable JSON: pydantic models (events), dataclasses, datetimes, bytes, sets
    and nested containers round-trip with their types. The default."""

    def serialize(self, value: Any) -> str:
        """JSON text; :class:`ContextSerdeError` (a ValueError) naming what cannot be encoded."""
        try:
            data = journal.JsonSerializer(compress_above=None).encode(value)
        except SerializationError as exc:
            raise ContextSerdeError(str(exc), path=getattr(exc, "path", None)) from exc
        return data.decode("utf-8")

    def deserialize(self, value: str) -> Any:
        """The value in JSON text ``value``."""
        try:
            return self.decode(value.encode("utf-8"), where="serialized value")
        except DecodeError as exc:
            raise ContextSerdeError(str(exc)) from exc


class PickleSerializer(journal.PickleSerializer, BaseSerializer):
    """Pickles anything cloudpickle can, as base64 text. Unpickling runs code: restore
    only snapshots you trust (``hmac_key`` signs them and refuses altered ones)."""

    def serialize(self, value: Any) -> str:
        """Base64 of the pickle frame; :class:`ContextSerdeError` if it cannot pickle."""
        try:
            data = self.encode(value)
        except SerializationError as exc:
            raise ContextSerdeError(str(exc), path=getattr(exc, "path", None)) from exc
        return base64.b64encode(data).decode("ascii")

    def deserialize(self, value: str) -> Any:
        """The unpickled value (verified first when an ``hmac_key`` is set)."""
        try:
            return self.decode(base64.b64decode(value), where="serialized value")
        except (DecodeError, ValueError) as exc:
            raise ContextSerdeError(f"cannot deserialize: {exc}") from exc


class JsonPickleSerializer(PickleSerializer):
    """LlamaIndex's backward-compatible name for the pickle serializer."""
