"""Codecs: how inputs, step results and state become bytes, and back.

A codec's ``name`` is stored in the ``codec`` column next to every payload it
wrote; :func:`codec_for_name` picks the decoder when reading. The column alone never
makes a reader unpickle: a pickle codec decodes only when the reader configured it,
holds the journal's HMAC key, or passed ``trust_pickle=True``.

Readers (:func:`decode_for_reading`) never need the user's code either: a typed value
whose class cannot be used here, or a pickle that may not be unpickled, comes back
as an :class:`Undecoded` placeholder holding what was stored.

Framing
=======

The first byte of a payload says how to read the rest.

``json`` (:class:`JsonSerializer`)
    * ``0x00`` + a zlib stream (RFC 1950, ``zlib.decompress``) of UTF-8 JSON text.
    * any other first byte: the whole payload is UTF-8 JSON text, compact
      (``,`` and ``:`` separators, no leading whitespace), so ``json.loads(payload)``
      and SQLite's ``json(payload)`` read it directly. Non-ASCII text is written
      raw, except in a value holding lone surrogates, which is written all-ASCII.

``pickle`` and ``pickle-hmac`` (:class:`PickleSerializer`)
    * ``0x80``: the whole payload is a pickle stream (protocol 2+ streams start
      with 0x80), so ``pickle.loads(payload)`` reads it.
    * ``0x01`` + zlib(pickle stream).
    * ``0x02`` + SIG + pickle stream.
    * ``0x03`` + SIG + zlib(pickle stream).

    SIG is 32 bytes: ``HMAC-SHA256(key, flag_byte + body)``, where ``body`` is
    everything after SIG. With a key configured only ``0x02``/``0x03`` frames are
    accepted, and SIG is checked before anything is decompressed or unpickled.

JSON value model
================

``None``, ``bool``, ``int``, finite ``float``, ``str``, ``list``, and ``dict``
with ``str`` keys none of which is ``"__t"`` are written as themselves. Every
other value is a tagged object; *every* JSON object with a ``"__t"`` key is one:

==============  ==================================================================
``"__t"``       other keys
==============  ==================================================================
``float``       ``v``: ``"nan"``, ``"inf"`` or ``"-inf"``
``tuple``       ``v``: [items]
``set``         ``v``: [items]
``frozenset``   ``v``: [items]
``dict``        ``v``: [[key, value], ...]  (a dict with a non-str key or a "__t" key)
``bytes``       ``v``: standard padded base64
``bytearray``   ``v``: standard padded base64
``datetime``    ``v``: isoformat(); ``tz``: IANA zone key (zoneinfo only); ``fold``: 1
``date``        ``v``: isoformat()
``time``        ``v``: isoformat(); ``fold``: 1
``timedelta``   ``v``: [days, seconds, microseconds]
``uuid``        ``v``: the 36-character hex form
``decimal``     ``v``: str(d) (exact, keeps the exponent)
``enum``        ``c``: class name; ``v``: the member's value
``model``       ``c``: class name; ``v``: ``model_dump(by_alias=True, round_trip=True)``
``dataclass``   ``c``: class name; ``v``: {field: value}
``namedtuple``  ``c``: class name; ``v``: [items]
==============  ==================================================================

``tz`` and ``fold`` are present only when needed. Values nested in ``v`` follow
the same model. A class name is :func:`registered_name`: the name given to
:func:`register_type`, else ``"module:qualname"``.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import enum
import hashlib
import hmac
import json
import math
import pickle
import sys
import threading
import types
import uuid
import zlib
import zoneinfo
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar, overload, runtime_checkable

import cloudpickle
from pydantic import VERSION as _PYDANTIC_VERSION
from pydantic import BaseModel
from pydantic_core import PydanticSerializationError, to_json, to_jsonable_python

from .encryption import PREFIX, EncryptedCodec, Place, keys_from_env
from .errors import (
    DecodeError,
    EncryptedPayload,
    SerializationError,
    SignatureError,
    UntrustedPayload,
)
from .naming import MAIN, main_module_for, recorded_module, search_user_modules

__all__ = [
    "Codec",
    "JsonPickleSerializer",
    "JsonSerializer",
    "PickleSerializer",
    "Undecoded",
    "codec_for_name",
    "decode_for_reading",
    "register_type",
    "registered_name",
]

_T = TypeVar("_T", bound=type[Any])

_TAG = "__t"
# Ints with fewer digits than the decoder's limit (sys.get_int_max_str_digits()).
_INT_BOUND = 10 ** (4300 - 1)
_TAG_MARK = b'"__t"'
_ZLIB_JSON = 0x00
_PICKLE_RAW = 0x80
_PICKLE_Z = 0x01
_PICKLE_SIGNED = 0x02
_PICKLE_SIGNED_Z = 0x03
_SIG_LEN = 32
# model_validate(by_alias=...) appeared in pydantic 2.11; older versions validate by alias anyway.
_VALIDATE_KWARGS: dict[str, Any] = (
    {"by_alias": True} if tuple(map(int, _PYDANTIC_VERSION.split(".")[:2])) >= (2, 11) else {}
)


@runtime_checkable
class Codec(Protocol):
    """Turns values into payload bytes and back; ``name`` goes in the codec column."""

    name: str

    def encode(self, value: Any, *, path: str = "value") -> bytes:
        """Encode ``value``; raise SerializationError naming the key path below ``path``."""
        ...

    def decode(self, data: bytes, *, where: str = "payload") -> Any:
        """Decode ``data``; raise DecodeError whose message names ``where``."""
        ...


# -- the type registry -----------------------------------------------------------------

_registry_lock = threading.Lock()
_BY_NAME: dict[str, type[Any]] = {}  # registered name -> class (several names may share a class)
_NAME_OF: dict[type[Any], str] = {}  # class -> the name it is written under
_RESOLVED: dict[str, type[Any]] = {}  # "module:qualname" -> class, found by import


def _default_name(cls: type[Any]) -> str:
    # A script's classes are recorded under its import name, not "__main__" (naming.py).
    return f"{recorded_module(cls.__module__)}:{cls.__qualname__}"


def _registrable(cls: type[Any]) -> bool:
    return (
        issubclass(cls, BaseModel | enum.Enum)
        or dataclasses.is_dataclass(cls)
        or (issubclass(cls, tuple) and hasattr(cls, "_fields"))
    )


@overload
def register_type(cls: _T, name: str | None = None) -> _T: ...
@overload
def register_type(cls: str, name: None = None) -> Callable[[_T], _T]: ...
@overload
def register_type(cls: None = None, name: str | None = None) -> Callable[[_T], _T]: ...
def register_type(cls: Any = None, name: str | None = None) -> Any:
    """Give a model, dataclass, enum or named tuple a stable name for the JSON codec.

    ``register_type(Order, "Order.v1")``, ``@register_type``, ``@register_type("Order.v1")``
    and ``@register_type(name="Order.v1")`` all work. Payloads then store the name
    instead of ``module:qualname``, so the class can move or be renamed; register
    the new class under the old name to keep reading old payloads. Classes defined
    inside functions must be registered to be encoded.
    """
    if isinstance(cls, str):
        cls, name = None, cls
    if cls is None:
        return lambda c: register_type(c, name)
    if not isinstance(cls, type) or not _registrable(cls):
        raise TypeError(
            f"register_type() takes a pydantic model, dataclass, enum or named tuple class, "
            f"got {cls!r}; use PickleSerializer to store other objects"
        )
    key = _default_name(cls) if name is None else name
    if not isinstance(key, str) or not key:
        raise ValueError(f"register_type(): name must be a non-empty string, got {name!r}")
    with _registry_lock:
        other = _BY_NAME.get(key)
        # A class re-created under the same module:qualname (a module reload, a factory
        # called twice) may take the name over; any other class may not.
        if other is not None and other is not cls and _default_name(other) != _default_name(cls):
            raise ValueError(
                f"register_type(): name {key!r} is already registered for "
                f"{_default_name(other)}; choose another name for {_default_name(cls)}"
            )
        _BY_NAME[key] = cls
        _NAME_OF[cls] = key
    return cls


def registered_name(cls: type[Any]) -> str:
    """The name ``cls`` is stored under: its registered name, else ``"module:qualname"``."""
    return _NAME_OF.get(cls) or _default_name(cls)


def _resolve(name: str, kind: str, check: Callable[[type[Any]], bool]) -> type[Any]:
    cls = _BY_NAME.get(name) or _RESOLVED.get(name)
    if cls is None:
        cls = _import_class(name, kind)
        _RESOLVED[name] = cls
    if not check(cls):
        raise _Undecodable(
            f"type name {name!r} resolves to {_default_name(cls)}, which is not a {kind}", name
        )
    return cls


def _import_class(name: str, kind: str) -> type[Any]:
    hint = (
        f"if the class was moved or renamed, call register_type(NewClass, name={name!r}) "
        f"before reading"
    )
    module_name, sep, qualname = name.partition(":")
    if not sep or not module_name or not qualname or "<locals>" in qualname:
        raise _Undecodable(f"{kind} type {name!r} is not registered; {hint}", name)
    # Decoding is data only: it never imports a module (importing runs its top-level
    # code). The module must already be imported: the engine imports the code of a run
    # before reading it, and tools take --import.
    obj: Any = main_module_for(module_name) or sys.modules.get(module_name)
    if module_name == MAIN and not hasattr(obj, qualname.split(".")[0]):
        # Recorded by a script before scripts were recorded under their import name:
        # the class is looked up in the modules the user asked to import.
        found = search_user_modules(qualname)
        if isinstance(found, type):
            return found
    if obj is None:
        raise _Undecodable(
            f"{kind} type {name!r} cannot be resolved: module {module_name!r} is not "
            f"imported (decoding never imports code); import it first, or {hint}",
            name,
        )
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise _Undecodable(
                f"{kind} type {name!r} cannot be resolved: {obj!r} has no attribute {part!r}; "
                f"{hint}",
                name,
            ) from None
    if not isinstance(obj, type):
        raise _Undecodable(f"{kind} type {name!r} resolves to {obj!r}, not a class; {hint}", name)
    return obj


# -- shared helpers ----------------------------------------------------------------------


class _Unencodable(Exception):
    """Raised inside the encoder; each container on the way up prepends its path segment."""

    def __init__(self, value: Any, reason: str, cause: BaseException | None = None) -> None:
        super().__init__(reason)
        self.type_name = type(value).__qualname__
        self.reason = reason
        self.cause = cause
        self.segments: list[str] = []

    def error(self, root: str) -> SerializationError:
        path = root + "".join(reversed(self.segments))
        return SerializationError(
            f"cannot encode value at {path}: {self.reason}", path=path, type_name=self.type_name
        )


class _Undecodable(Exception):
    """Raised inside the decoder, which has no ``where``; decode() adds it."""

    def __init__(self, message: str, type_name: str | None = None) -> None:
        super().__init__(message)
        self.type_name = type_name


def _label(t: type[Any]) -> str:
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _key_segment(key: Any) -> str:
    return f"[{key!r}]"


def _children(value: Any) -> Iterator[tuple[str, Any]]:
    """(path segment, child) pairs, for locating a bad value after an opaque failure."""
    if isinstance(value, dict):
        for k, x in value.items():
            yield _key_segment(k), x
    elif isinstance(value, list | tuple):
        for i, x in enumerate(value):
            yield f"[{i}]", x
    elif isinstance(value, set | frozenset):
        for i, x in enumerate(value):
            yield f"{{{i}}}", x
    elif isinstance(value, type | types.ModuleType | types.FunctionType):
        return
    elif dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            yield f".{f.name}", getattr(value, f.name, None)
    else:
        attrs = getattr(value, "__dict__", None)
        if isinstance(attrs, dict):
            for k, x in attrs.items():
                yield f".{k}", x


def _find_cycle(value: Any, path: str, active: set[int], depth: int = 0) -> str | None:
    """The path at which ``value`` refers back to a container that holds it, if any."""
    if depth > 200:
        return None
    if id(value) in active:
        return path
    active.add(id(value))
    try:
        for seg, child in _children(value):
            if not isinstance(child, str | bytes | int | float | bool | type(None)):
                found = _find_cycle(child, path + seg, active, depth + 1)
                if found is not None:
                    return found
    finally:
        active.discard(id(value))
    return None


def _too_deep(value: Any, root: str) -> SerializationError:
    cycle = _find_cycle(value, root, set())
    if cycle is not None:
        return SerializationError(
            f"cannot encode value at {cycle}: it refers back to a container that holds it "
            f"(a reference cycle); break the cycle, or use PickleSerializer",
            path=cycle,
            type_name=type(value).__qualname__,
        )
    return SerializationError(
        f"cannot encode value at {root}: it is nested too deeply to encode; flatten it",
        path=root,
        type_name=type(value).__qualname__,
    )


def _key_bytes(key: bytes | str | None) -> bytes | None:
    if key is None:
        return None
    raw = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    if not raw:
        raise ValueError("hmac_key must not be empty")
    return raw


def _check_compression(compress_above: int | None, compress_level: int) -> None:
    if compress_above is not None and compress_above < 0:
        raise ValueError(f"compress_above must be >= 0 or None, got {compress_above}")
    if not -1 <= compress_level <= 9:
        raise ValueError(f"compress_level must be -1..9, got {compress_level}")


def _inflate(body: bytes | memoryview, where: str, what: str) -> bytes:
    try:
        return zlib.decompress(body)
    except zlib.error as exc:
        raise DecodeError(
            f"cannot decode {where}: its compressed {what} data is corrupt or truncated ({exc})",
            where=where,
        ) from None


# -- JSON: encoding ----------------------------------------------------------------------


def _is_plain(v: Any) -> bool:  # noqa: PLR0911 - flat type dispatch on the hot path
    """True when ``v`` is JSON as it stands: the hot path skips the tagging walk.

    Ints must also read back: one of more digits than ``sys.get_int_max_str_digits()``
    allows is left to the general path, which refuses it with the key path.
    """
    t = type(v)
    if t is dict:
        if _TAG in v:
            return False
        for k in v:
            if type(k) is not str:
                return False
        items = v.values()
    elif t is list:
        items = v
    elif t is str or t is bool or v is None:
        return True
    elif t is int:
        return bool(-_INT_BOUND < v < _INT_BOUND)
    elif t is float:
        return math.isfinite(v)
    else:
        return False
    for x in items:
        tx = type(x)
        if (
            tx is str
            or tx is bool
            or x is None
            or (tx is int and -_INT_BOUND < x < _INT_BOUND)
            or (tx is float and x - x == 0.0)  # finite: inf - inf and nan - nan are nan
        ):
            continue
        if not _is_plain(x):
            return False
    return True


def _enc(v: Any, lenient: bool) -> Any:  # noqa: PLR0911 - flat type dispatch
    """The JSON tree for ``v``; ``lenient`` (inside model dumps) lets pydantic convert leaves."""
    t = type(v)
    if t is str or t is int or t is bool or v is None:
        return v
    if t is float:
        if math.isfinite(v):
            return v
        return {_TAG: "float", "v": "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")}
    if t is dict:
        return _enc_dict(v, lenient, attrs=False)
    if t is list:
        return _enc_items(v, lenient, "[{}]")
    handler = _TYPED.get(t)
    if handler is not None:
        return handler(v, lenient)
    return _enc_other(v, lenient)


def _enc_items(items: Any, lenient: bool, segment: str) -> list[Any]:
    out = []
    i = 0
    try:
        for i, x in enumerate(items):  # noqa: B007 - i is read in the handler
            out.append(_enc(x, lenient))
    except _Unencodable as exc:
        exc.segments.append(segment.format(i))
        raise
    return out


def _enc_dict(d: dict[Any, Any], lenient: bool, *, attrs: bool) -> Any:
    k: Any = None
    if _TAG not in d and all(type(k) is str for k in d):
        out = {}
        try:
            for k, x in d.items():
                out[k] = _enc(x, lenient)
        except _Unencodable as exc:
            exc.segments.append(f".{k}" if attrs else _key_segment(k))
            raise
        return out
    pairs = []
    for k, x in d.items():
        try:
            ek = _enc(k, lenient)
        except _Unencodable as exc:
            exc.reason = f"(a dict key) {exc.reason}"
            exc.segments.append(_key_segment(k))
            raise
        try:
            pairs.append([ek, _enc(x, lenient)])
        except _Unencodable as exc:
            exc.segments.append(f".{k}" if attrs and isinstance(k, str) else _key_segment(k))
            raise
    return {_TAG: "dict", "v": pairs}


def _class_name(cls: type[Any], value: Any) -> str:
    name = _NAME_OF.get(cls)
    if name is not None:
        return name
    if "<locals>" in cls.__qualname__:
        raise _Unencodable(
            value,
            f"class {_label(cls)} is defined inside a function, so it cannot be found again "
            f"when decoding; define it at module level, or call "
            f"register_type({cls.__name__}, name='...') before encoding and decoding",
        )
    return _default_name(cls)


def _enc_model(v: BaseModel, lenient: bool) -> Any:
    name = _class_name(type(v), v)
    try:
        # Python mode (not JSON mode) keeps bytes, NaN, Decimal and values in Any-typed
        # fields exact; round_trip leaves out computed fields, which would not validate.
        data = v.model_dump(by_alias=True, round_trip=True)
    except Exception as exc:
        raise _Unencodable(v, f"{_label(type(v))}.model_dump() failed: {exc}", exc) from exc
    return {_TAG: "model", "c": name, "v": _enc_dict(data, True, attrs=True)}


def _enc_other(v: Any, lenient: bool) -> Any:
    t = type(v)
    if isinstance(v, BaseModel):
        return _enc_model(v, lenient)
    if isinstance(v, enum.Enum):
        name = _class_name(t, v)
        try:
            value = _enc(v.value, lenient)
        except _Unencodable as exc:
            exc.segments.append(".value")
            raise
        return {_TAG: "enum", "c": name, "v": value}
    if hasattr(t, "__dataclass_fields__") and not isinstance(v, type):
        name = _class_name(t, v)
        fields = {f.name: getattr(v, f.name) for f in dataclasses.fields(v)}
        return {_TAG: "dataclass", "c": name, "v": _enc_dict(fields, lenient, attrs=True)}
    if isinstance(v, tuple) and hasattr(t, "_fields"):
        name = _class_name(t, v)
        return {_TAG: "namedtuple", "c": name, "v": _enc_items(v, lenient, "[{}]")}
    if lenient:
        # Inside a model dump: let pydantic turn types it knows (Path, Url, IP addresses)
        # into JSON; the model's validation turns them back.
        try:
            converted = to_jsonable_python(v)
        except Exception as exc:
            raise _Unencodable(v, _refusal(v), exc) from exc
        return _enc(converted, False)
    raise _Unencodable(v, _refusal(v))


def _refusal(v: Any) -> str:
    t = type(v)
    if isinstance(v, type | types.FunctionType | types.BuiltinFunctionType | types.MethodType):
        return (
            f"{_label(t)} {getattr(v, '__qualname__', v)!r} is code, which JSON cannot store; "
            f"store plain data, or use PickleSerializer to pickle code"
        )
    for base in (dict, list, tuple, set, frozenset, str, int, float, bytes, dt.datetime):
        if isinstance(v, base):
            return (
                f"type {_label(t)} is a subclass of {base.__name__}, which JSON cannot restore; "
                f"convert it to a plain {base.__name__}, or use PickleSerializer"
            )
    return (
        f"type {_label(t)} is not JSON-encodable; use a pydantic model or a dataclass "
        f"(register_type(...) gives it a stable name), convert it to plain data, or use "
        f"PickleSerializer for arbitrary objects"
    )


def _enc_datetime(v: dt.datetime, lenient: bool) -> Any:
    out: dict[str, Any] = {_TAG: "datetime", "v": v.isoformat()}
    tz = v.tzinfo
    if isinstance(tz, zoneinfo.ZoneInfo) and tz.key is not None:
        out["tz"] = tz.key
    if v.fold:
        out["fold"] = 1
    return out


def _enc_time(v: dt.time, lenient: bool) -> Any:
    out: dict[str, Any] = {_TAG: "time", "v": v.isoformat()}
    if v.fold:
        out["fold"] = 1
    return out


def _b64(v: bytes | bytearray) -> str:
    return base64.b64encode(v).decode("ascii")


_TYPED: dict[type[Any], Callable[[Any, bool], Any]] = {
    tuple: lambda v, lenient: {_TAG: "tuple", "v": _enc_items(v, lenient, "[{}]")},
    set: lambda v, lenient: {_TAG: "set", "v": _enc_items(v, lenient, "{{{}}}")},
    frozenset: lambda v, lenient: {_TAG: "frozenset", "v": _enc_items(v, lenient, "{{{}}}")},
    bytes: lambda v, lenient: {_TAG: "bytes", "v": _b64(v)},
    bytearray: lambda v, lenient: {_TAG: "bytearray", "v": _b64(v)},
    dt.datetime: _enc_datetime,
    dt.date: lambda v, lenient: {_TAG: "date", "v": v.isoformat()},
    dt.time: _enc_time,
    dt.timedelta: lambda v, lenient: {_TAG: "timedelta", "v": [v.days, v.seconds, v.microseconds]},
    uuid.UUID: lambda v, lenient: {_TAG: "uuid", "v": str(v)},
    decimal.Decimal: lambda v, lenient: {_TAG: "decimal", "v": str(v)},
}


# -- JSON: decoding ----------------------------------------------------------------------

_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _dec_dict(o: dict[str, Any]) -> Any:
    return dict(o["v"])


def _dec_datetime(o: dict[str, Any]) -> Any:
    value = dt.datetime.fromisoformat(o["v"])
    tz = o.get("tz")
    if tz is not None:
        # Wall time + zone + fold restore the original exactly, without UTC arithmetic.
        value = value.replace(tzinfo=zoneinfo.ZoneInfo(tz))
    return value.replace(fold=1) if o.get("fold") else value


def _dec_time(o: dict[str, Any]) -> Any:
    value = dt.time.fromisoformat(o["v"])
    return value.replace(fold=1) if o.get("fold") else value


def _dec_bytes(o: dict[str, Any]) -> bytes:
    return base64.b64decode(o["v"], validate=True)


def _dec_enum(o: dict[str, Any]) -> Any:
    cls = _resolve(o["c"], "enum", lambda c: issubclass(c, enum.Enum))
    return cls(o["v"])


def _dec_model(o: dict[str, Any]) -> Any:
    cls = _resolve(o["c"], "pydantic model", lambda c: issubclass(c, BaseModel))
    return cls.model_validate(o["v"], **_VALIDATE_KWARGS)


def _dec_dataclass(o: dict[str, Any]) -> Any:
    cls = _resolve(o["c"], "dataclass", dataclasses.is_dataclass)
    stored = dict(o["v"])
    init: dict[str, Any] = {}
    later: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in stored:
            (init if f.init else later)[f.name] = stored.pop(f.name)
    if stored:
        raise _Undecodable(
            f"stored fields {sorted(stored)} are not fields of dataclass {o['c']!r}", o["c"]
        )
    obj = cls(**init)
    for name, value in later.items():
        object.__setattr__(obj, name, value)  # init=False fields, on frozen classes too
    return obj


def _dec_namedtuple(o: dict[str, Any]) -> Any:
    cls = _resolve(o["c"], "named tuple", lambda c: issubclass(c, tuple) and hasattr(c, "_fields"))
    return cls(*o["v"])


_DECODERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "float": lambda o: _FLOATS[o["v"]],
    "tuple": lambda o: tuple(o["v"]),
    "set": lambda o: set(o["v"]),
    "frozenset": lambda o: frozenset(o["v"]),
    "dict": _dec_dict,
    "bytes": _dec_bytes,
    "bytearray": lambda o: bytearray(_dec_bytes(o)),
    "datetime": _dec_datetime,
    "date": lambda o: dt.date.fromisoformat(o["v"]),
    "time": _dec_time,
    "timedelta": lambda o: dt.timedelta(*o["v"]),
    "uuid": lambda o: uuid.UUID(o["v"]),
    "decimal": lambda o: decimal.Decimal(o["v"]),
    "enum": _dec_enum,
    "model": _dec_model,
    "dataclass": _dec_dataclass,
    "namedtuple": _dec_namedtuple,
}


def _hook(o: dict[str, Any]) -> Any:
    if _TAG not in o:
        return o
    tag = o[_TAG]
    handler = _DECODERS.get(tag) if isinstance(tag, str) else None
    if handler is None:
        raise _Undecodable(f"unknown value tag {tag!r} (written by a newer version?)")
    try:
        return handler(o)
    except _Undecodable:
        raise
    except Exception as exc:
        type_name = o.get("c")
        what = f"{tag} {type_name!r}" if type_name else repr(tag)
        raise _Undecodable(
            f"malformed {what} value ({type(exc).__name__}: {exc})",
            type_name if isinstance(type_name, str) else None,
        ) from exc


class Undecoded:
    """A stored value shown as it was stored, not rebuilt: what read tools return for
    a value they cannot or may not decode, instead of failing.

    ``kind`` is ``"pickle"`` for a pickled payload that was not unpickled (``size``
    its length in bytes), ``"encrypted"`` for one sealed with a key not held here, or
    the tag of a typed JSON value whose class is not available here (``"model"``,
    ``"dataclass"``, ``"enum"``, ``"namedtuple"``; ``type_name`` the stored class name,
    ``value`` the stored fields). ``reason`` says why it was not rebuilt.
    """

    __slots__ = ("kind", "reason", "size", "type_name", "value")

    def __init__(
        self,
        kind: str,
        *,
        type_name: str | None = None,
        value: Any = None,
        size: int | None = None,
        reason: str = "",
    ) -> None:
        self.kind = kind
        self.type_name = type_name
        self.value = value
        self.size = size
        self.reason = reason

    @property
    def label(self) -> str:
        """One line for people: ``ReviewEvent(__main__) model, not rebuilt``."""
        if self.kind == "encrypted":
            return f"encrypted value, {self.size} bytes, not decrypted"
        if self.kind == "pickle" or self.type_name is None:
            return f"pickled value, {self.size} bytes, not decoded"
        module, sep, qualname = self.type_name.partition(":")
        shown = f"{qualname}({module})" if sep else self.type_name
        return f"{shown} {self.kind}, not rebuilt"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Undecoded):
            return NotImplemented
        return (self.kind, self.type_name, self.value, self.size) == (
            other.kind,
            other.type_name,
            other.value,
            other.size,
        )

    def __hash__(self) -> int:  # enum members are dict keys and set items: stay hashable
        return hash((self.kind, self.type_name, self.size))

    def __repr__(self) -> str:
        if self.kind in ("pickle", "encrypted") or self.type_name is None:
            return f"<{self.label}>"
        return f"<{self.label}: {self.value!r}>"


_REBUILT = frozenset({"enum", "model", "dataclass", "namedtuple"})


def _reading_hook(o: dict[str, Any]) -> Any:
    """:func:`_hook` for readers: a class that cannot be used here leaves a placeholder."""
    if _TAG not in o:
        return o
    try:
        return _hook(o)
    except _Undecodable as exc:
        tag = o[_TAG]
        if tag not in _REBUILT:
            raise
        name = o.get("c")
        return Undecoded(
            tag,
            type_name=name if isinstance(name, str) else repr(name),
            value=o.get("v"),
            reason=str(exc),
        )


_PLAIN_DECODER = json.JSONDecoder()
_TAGGED_DECODER = json.JSONDecoder(object_hook=_hook)
_READING_DECODER = json.JSONDecoder(object_hook=_reading_hook)


class JsonSerializer:
    """The default codec: readable JSON; typed values are tagged objects that round-trip.

    Handles plain JSON, pydantic models, dataclasses, enums, named tuples,
    datetime/date/time/timedelta, UUID, Decimal, bytes, sets, tuples, dicts with
    any hashable keys, and NaN/infinity. Anything else raises SerializationError.
    Payloads over ``compress_above`` bytes are zlib-compressed (None: never).
    """

    name = "json"

    def __init__(self, *, compress_above: int | None = 4096, compress_level: int = 6) -> None:
        _check_compression(compress_above, compress_level)
        self.compress_above = compress_above
        self.compress_level = compress_level
        self._encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        self._ascii_encoder = json.JSONEncoder(separators=(",", ":"), allow_nan=False)

    def __repr__(self) -> str:
        return f"JsonSerializer(compress_above={self.compress_above!r})"

    def encode(self, value: Any, *, path: str = "value") -> bytes:
        """UTF-8 JSON bytes (see the module docstring for framing)."""
        try:
            plain = _is_plain(value)
        except RecursionError:
            raise _too_deep(value, path) from None
        if plain:
            try:
                # pydantic-core's serializer writes a plain tree ~8x faster than
                # json's; what it refuses (lone surrogates, deep nesting) goes below.
                return self._maybe_compress(to_json(value))
            except PydanticSerializationError:
                pass
        try:
            tree = value if plain else _enc(value, False)
            text = self._encoder.encode(tree)
        except _Unencodable as exc:
            raise exc.error(path) from exc.cause
        except RecursionError:
            raise _too_deep(value, path) from None
        except ValueError as exc:  # e.g. an int beyond sys.get_int_max_str_digits()
            raise SerializationError(
                f"cannot encode value at {path}: {exc}", path=path, type_name=type(value).__name__
            ) from exc
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: \u escapes keep the JSON valid
            data = self._ascii_encoder.encode(tree).encode("ascii")
        return self._maybe_compress(data)

    def _maybe_compress(self, data: bytes) -> bytes:
        limit = self.compress_above
        if limit is not None and len(data) > limit:
            packed = zlib.compress(data, self.compress_level)
            if len(packed) + 1 < len(data):
                return b"\x00" + packed
        return data

    def decode(self, data: bytes, *, where: str = "payload", rebuild: bool = True) -> Any:
        """The value encoded in ``data``; DecodeError naming ``where`` if it does not decode.

        ``rebuild=False`` (readers): a typed value whose class cannot be resolved or
        does not accept the stored fields becomes an :class:`Undecoded` placeholder.
        """
        if not isinstance(data, bytes):
            data = bytes(data)
        if not data:
            raise DecodeError(f"cannot decode {where}: the JSON payload is empty", where=where)
        if data[0] == _ZLIB_JSON:
            data = _inflate(memoryview(data)[1:], where, "JSON")
        try:
            text = data.decode("utf-8")
            if _TAG_MARK not in data:
                return _PLAIN_DECODER.decode(text)
            return (_TAGGED_DECODER if rebuild else _READING_DECODER).decode(text)
        except _Undecodable as exc:
            raise DecodeError(
                f"cannot decode {where}: {exc}", where=where, type_name=exc.type_name
            ) from exc.__cause__
        except (ValueError, RecursionError) as exc:
            raise DecodeError(
                f"cannot decode {where}: not a valid JSON payload ({type(exc).__name__}: {exc})",
                where=where,
            ) from None


# -- pickle ------------------------------------------------------------------------------


def _locate_unpicklable(value: Any, path: str, depth: int = 0) -> tuple[str, Any]:
    """The innermost part of ``value`` that fails to pickle, with its path."""
    if depth < 64:
        try:
            for seg, child in _children(value):
                try:
                    cloudpickle.dumps(child)
                except Exception:
                    return _locate_unpicklable(child, path + seg, depth + 1)
        except Exception:  # a container that fails while being walked: report it
            pass
    return path, value


class PickleSerializer:
    """Pickles anything cloudpickle can (lambdas, local classes); optionally HMAC-signed.

    Unpickling runs code, so only read journals you trust. With ``hmac_key`` every
    payload is signed (codec name ``"pickle-hmac"``) and payloads that are unsigned
    or do not verify are refused before unpickling.
    """

    def __init__(
        self,
        *,
        hmac_key: bytes | str | None = None,
        compress_above: int | None = 4096,
        compress_level: int = 6,
    ) -> None:
        _check_compression(compress_above, compress_level)
        self._key = _key_bytes(hmac_key)
        self._unverified = False  # set by codec_for_name(trust_pickle=True) alone
        self.name = "pickle" if self._key is None else "pickle-hmac"
        self.compress_above = compress_above
        self.compress_level = compress_level

    def __repr__(self) -> str:
        signed = self._key is not None
        return f"PickleSerializer(signed={signed}, compress_above={self.compress_above!r})"

    def _sign(self, flag: int, body: bytes | memoryview) -> bytes:
        assert self._key is not None
        mac = hmac.new(self._key, bytes((flag,)), hashlib.sha256)
        mac.update(body)
        return mac.digest()

    def encode(self, value: Any, *, path: str = "value") -> bytes:
        """A pickle frame (see the module docstring); SerializationError if it cannot pickle."""
        try:
            body: bytes = cloudpickle.dumps(value)
        except Exception as exc:
            where, culprit = _locate_unpicklable(value, path)
            type_name = type(culprit).__qualname__
            raise SerializationError(
                f"cannot pickle value at {where}: type {_label(type(culprit))} cannot be pickled "
                f"({type(exc).__name__}: {exc}); store data rather than live resources "
                f"(sockets, locks, open files, generators), or convert it first",
                path=where,
                type_name=type_name,
            ) from exc
        compressed = False
        limit = self.compress_above
        if limit is not None and len(body) > limit:
            packed = zlib.compress(body, self.compress_level)
            if len(packed) < len(body):
                body, compressed = packed, True
        if self._key is None:
            return b"\x01" + body if compressed else body
        flag = _PICKLE_SIGNED_Z if compressed else _PICKLE_SIGNED
        return bytes((flag,)) + self._sign(flag, body) + body

    def decode(self, data: bytes, *, where: str = "payload") -> Any:
        """Verify (when keyed), then unpickle; errors name ``where``."""
        if not isinstance(data, bytes):
            data = bytes(data)
        if not data:
            raise DecodeError(f"cannot decode {where}: the pickle payload is empty", where=where)
        flag = data[0]
        view = memoryview(data)
        if self._key is not None:
            if flag not in (_PICKLE_SIGNED, _PICKLE_SIGNED_Z):
                raise UntrustedPayload(
                    f"refused {where}: it is not signed, but an HMAC key is configured; it was "
                    f"written without a key (or altered) and was not unpickled",
                    where=where,
                )
            if len(data) < 1 + _SIG_LEN:
                raise SignatureError(
                    f"refused {where}: its HMAC signature is missing or truncated; it was not "
                    f"unpickled",
                    where=where,
                )
            body = view[1 + _SIG_LEN :]
            if not hmac.compare_digest(view[1 : 1 + _SIG_LEN], self._sign(flag, body)):
                raise SignatureError(
                    f"refused {where}: its HMAC signature does not verify; it was altered, or "
                    f"written with a different key; it was not unpickled",
                    where=where,
                )
            compressed = flag == _PICKLE_SIGNED_Z
        elif flag in (_PICKLE_SIGNED, _PICKLE_SIGNED_Z):
            if not self._unverified:
                raise UntrustedPayload(
                    f"cannot decode {where}: the journal was written with an HMAC key; open "
                    f"it with the same key (hmac_key=...)",
                    where=where,
                )
            body, compressed = view[1 + _SIG_LEN :], flag == _PICKLE_SIGNED_Z
        elif flag == _PICKLE_RAW:
            body, compressed = view, False
        elif flag == _PICKLE_Z:
            body, compressed = view[1:], True
        else:
            raise DecodeError(
                f"cannot decode {where}: not a pickle payload (first byte 0x{flag:02x})",
                where=where,
            )
        raw = _inflate(body, where, "pickle") if compressed else body
        try:
            return pickle.loads(raw)
        except Exception as exc:
            raise DecodeError(
                f"cannot unpickle {where} ({type(exc).__name__}: {exc}); if it names a class or "
                f"function, that may have been moved or renamed since it was written",
                where=where,
            ) from exc


JsonPickleSerializer = PickleSerializer
"""Backward-compatible alias of :class:`PickleSerializer`."""


class _UntrustedPickle:
    """Stands for a pickle codec the reader does not trust: refuses, never unpickles."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<untrusted {self.name!r} codec>"

    def encode(self, value: Any, *, path: str = "value") -> bytes:
        """Refused: the reader never configured this codec."""
        raise SerializationError(
            f"cannot encode value at {path}: codec {self.name!r} is not trusted here; pass "
            f"trust_pickle=True (CLI: --trust-pickle) if you trust whoever wrote the journal",
            path=path,
            type_name=type(value).__qualname__,
        )

    def decode(self, data: bytes, *, where: str = "payload") -> Any:
        """Always UntrustedPayload: pickle payloads run code when loaded."""
        raise UntrustedPayload(
            f"refused {where}: it is a pickled value ({len(data)} bytes) and this reader does "
            f"not trust pickle payloads (unpickling runs code); if you trust whoever wrote "
            f"the journal, pass trust_pickle=True (CLI: --trust-pickle), or open it with "
            f"its HMAC key",
            where=where,
            codec=self.name,
            size=len(data),
        )


def codec_for_name(
    name: str, *, hmac_key: bytes | str | None = None, trust_pickle: bool = False
) -> Codec:
    """The codec that reads payloads whose codec column is ``name``.

    A ``"pickle"`` name alone never unpickles: without ``trust_pickle`` and without
    a key the codec returned refuses every payload (:class:`UntrustedPayload`). With
    ``hmac_key``, pickle codecs accept only payloads whose signature verifies.
    ``"pickle-hmac"`` without a key raises UntrustedPayload, unless ``trust_pickle``
    (then signatures are not checked); an unknown name raises DecodeError.
    """
    if name.startswith(PREFIX):  # an encrypted stage over the codec named after it
        if name[len(PREFIX) :].startswith(PREFIX):
            raise DecodeError(
                f"codec {name[:40]!r}...: encrypted twice, never written so", codec=name
            )
        inner = codec_for_name(name[len(PREFIX) :], hmac_key=hmac_key, trust_pickle=trust_pickle)
        try:
            keys = keys_from_env()
        except ValueError as exc:
            raise DecodeError(f"cannot read the encryption keys: {exc}", codec=name) from None
        return EncryptedCodec(inner, keys)
    if name == "json":
        return JsonSerializer()
    if name == "pickle":
        if hmac_key is None and not trust_pickle:
            return _UntrustedPickle(name)
        return PickleSerializer(hmac_key=hmac_key)
    if name == "pickle-hmac":
        if hmac_key is None:
            if not trust_pickle:
                raise UntrustedPayload(
                    "payloads with codec 'pickle-hmac' were written with an HMAC key; open "
                    "the journal with the same key (hmac_key=...)",
                    codec=name,
                )
            codec = PickleSerializer()
            codec._unverified = True
            return codec
        return PickleSerializer(hmac_key=hmac_key)
    raise DecodeError(
        f"unknown codec {name!r}: this version reads 'json', 'pickle' and 'pickle-hmac', "
        f"each optionally encrypted ('aesgcm:json'); "
        f"the journal may have been written by a newer version",
        codec=name,
    )


def decode_for_reading(
    codec: Codec,
    data: bytes,
    *,
    where: str = "payload",
    place: Place | None = None,
    run_id: str | None = None,
) -> Any:
    """Decode ``data`` for a reader: never runs code the reader did not trust, never
    needs the writer's classes. A pickle the codec may not unpickle, or whose classes
    are not importable here, and a typed JSON value whose class cannot be resolved,
    become :class:`Undecoded`; corrupt data still raises DecodeError, and an encrypted
    value bound to another ``place`` (or run) :class:`~journal.MisplacedPayload`, with or
    without its key."""
    if isinstance(codec, EncryptedCodec):
        try:
            plain = codec.decrypt(data, where=where, place=place, run_id=run_id)
        except EncryptedPayload as exc:
            return Undecoded("encrypted", size=len(data), reason=str(exc))
        return decode_for_reading(codec.inner, plain, where=where)
    if isinstance(codec, JsonSerializer):
        return codec.decode(data, where=where, rebuild=False)
    try:
        return codec.decode(data, where=where)
    except UntrustedPayload as exc:
        return Undecoded("pickle", size=len(data), reason=str(exc))
    except DecodeError as exc:
        if isinstance(codec, PickleSerializer) and isinstance(
            exc.__cause__, ImportError | AttributeError
        ):
            return Undecoded("pickle", size=len(data), reason=str(exc))
        raise
