"""Encrypted payloads: a codec stage that seals another codec's bytes with AES-GCM.

``EncryptedCodec(JsonSerializer(), keys={"2026-12": key})`` encodes with the inner
codec, then encrypts with the active key; the codec column reads ``aesgcm:json`` and
every payload names the key id it was sealed with, so keys rotate: add the new key,
make it active, keep the old ones for as long as payloads sealed with them are read.
The run id, seq and entry kind stay in the clear (they index the journal); every value
(inputs, results, state, events) is sealed.

Readers without the key see :class:`~journal.Undecoded` (``encrypted value``), never an
error; ``$DURABLE_ENCRYPTION_KEYS`` (``id=base64key,id=base64key``) gives keys to
readers that build codecs from the codec column, such as the CLI and the web view.

Each value is bound to its place: the journal seals it (format 2) with the place it is
written to (:class:`Place`: the run, the seq, and which field: an entry's payload, a
snapshot, the run's input or output) in the authenticated header,
so a value copied or swapped into another run, seq or field is refused with
:class:`~journal.MisplacedPayload` naming both places. Values written before format 2
(format 1) still read, but are bound to their codec only until they are written again.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import DecodeError, EncryptedPayload, MisplacedPayload, SerializationError

__all__ = ["ENCRYPTION_KEYS_ENV", "EncryptedCodec", "Place", "keys_from_env"]

ENCRYPTION_KEYS_ENV = "DURABLE_ENCRYPTION_KEYS"
"""The environment variable read tools take keys from: ``id=base64key,...``."""

PREFIX = "aesgcm:"
_UNBOUND = 1
"""Format 1: bound to the codec name only (every value before places were bound)."""
_BOUND = 2
"""Format 2: the header also carries the value's :class:`Place`."""
_NONCE = 12
_KEY_SIZES = (16, 24, 32)


@dataclass(frozen=True, slots=True)
class Place:
    """Where a stored value lives: ``field`` (``"entry"``, ``"snapshot"``, ``"input"``,
    ``"output"``), the run and the seq (0 for a run's input and output). A schedule's
    stored input is not bound (format 1): it becomes a run's input only once decoded
    and encoded again, bound to that run."""

    field: str
    run_id: str
    seq: int = 0

    def encoded(self) -> bytes:
        """The stable bytes sealed into the value's authenticated header."""
        return json.dumps([self.field, self.run_id, self.seq], separators=(",", ":")).encode()

    @classmethod
    def parse(cls, raw: bytes, where: str) -> Place:
        """The place ``encoded`` wrote; :class:`DecodeError` if it is not one."""
        try:
            field, run_id, seq = json.loads(raw)
            if not (isinstance(field, str) and isinstance(run_id, str) and type(seq) is int):
                raise TypeError
        except (TypeError, ValueError, RecursionError):  # deep nesting: a crafted header
            raise DecodeError(
                f"{where}: encrypted payload with a malformed place", where=where
            ) from None
        return cls(field, run_id, seq)

    def __str__(self) -> str:
        if self.field == "entry":
            return f"run {self.run_id!r} seq {self.seq}"
        if self.field == "snapshot":
            return f"run {self.run_id!r} snapshot at seq {self.seq}"
        return f"run {self.run_id!r} {self.field}"


class _Sealed(bytes):
    """A format-1 value fresh from :meth:`EncryptedCodec.encode`: it keeps its plain bytes
    and codec, so the journal binds it to its place without decrypting it again."""

    plain: bytes
    codec: EncryptedCodec


def _aesgcm(key: bytes) -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415 - optional extra
    except ImportError:  # the extra is optional: say how to get it
        raise SerializationError(
            "encrypted payloads need the 'cryptography' package: pip install 'durable[encrypt]'"
            " (from a checkout: pip install -e '.[encrypt]')"
        ) from None
    return AESGCM(key)


def _check_keys(keys: Mapping[str, bytes]) -> dict[str, bytes]:
    checked: dict[str, bytes] = {}
    for key_id, key in keys.items():
        raw = key_id.encode()
        if not key_id or len(raw) > 255 or not key_id.isprintable() or "," in key_id:
            raise ValueError(f"encryption key id {key_id!r}: 1 to 255 printable bytes, no comma")
        if not isinstance(key, bytes) or len(key) not in _KEY_SIZES:
            raise ValueError(f"encryption key {key_id!r}: 16, 24 or 32 bytes (AES-128/192/256)")
        checked[key_id] = key
    return checked


class EncryptedCodec:
    """Encrypt ``inner``'s payloads with AES-GCM under the ``active`` key of ``keys``.

    ``keys`` maps key ids to 16-, 24- or 32-byte keys (``os.urandom(32)``); ``active``
    (default: the last id given) seals new payloads, any id decrypts. The codec name
    is bound into each payload's authentication: a payload moved to another codec
    column, or edited, does not decrypt.
    """

    def __init__(self, inner: Any, keys: Mapping[str, bytes], *, active: str | None = None) -> None:
        if not hasattr(inner, "encode") or not hasattr(inner, "decode"):
            raise TypeError(f"inner must be a codec (encode/decode), not {type(inner).__name__}")
        if getattr(inner, "name", "").startswith(PREFIX):
            raise ValueError("an EncryptedCodec inside another encrypts twice: give the inner one")
        self.inner = inner
        self.keys = _check_keys(keys)
        if active is None and self.keys:
            active = list(self.keys)[-1]
        if active is not None and active not in self.keys:
            raise ValueError(f"active key {active!r} is not among the keys {sorted(self.keys)}")
        self.active = active
        self.name = PREFIX + inner.name

    def __repr__(self) -> str:
        return f"EncryptedCodec({self.inner!r}, keys={sorted(self.keys)}, active={self.active!r})"

    def encode(self, value: Any, *, path: str = "value") -> bytes:
        """Encode with the inner codec, then seal with the active key."""
        if self.active is None:
            raise SerializationError(
                f"cannot encode value at {path}: no encryption key to seal it with",
                path=path,
                type_name=type(value).__qualname__,
            )
        plain = self.inner.encode(value, path=path)
        # Sealed now (format 1) so no path can store it in the clear; the journal seals
        # it again, bound to its place, when it knows the place (see :meth:`bind`).
        out = _Sealed(self._seal(plain, None))
        out.plain, out.codec = plain, self
        return out

    def _seal(self, plain: bytes, place: Place | None) -> bytes:
        assert self.active is not None
        key_id = self.active.encode()
        nonce = os.urandom(_NONCE)
        if place is None:
            header = struct.pack("BB", _UNBOUND, len(key_id)) + key_id
        else:
            where = place.encoded()
            header = struct.pack("!BB", _BOUND, len(key_id)) + key_id
            header += struct.pack("!H", len(where)) + where
        aad = self.name.encode() + header
        sealed: bytes = _aesgcm(self.keys[self.active]).encrypt(nonce, plain, aad)
        return header + nonce + sealed

    def bind(self, data: bytes, place: Place, *, where: str = "payload") -> bytes:
        """``data`` sealed bound to ``place`` (format 2): as it is if it already is,
        else decrypted and sealed again (with the active key if ``data`` came from
        another codec's :meth:`encode`, or was stored elsewhere)."""
        if isinstance(data, _Sealed):
            return data.codec._seal_active(data.plain, place, self)
        if self.placed(data, where=where) == place:
            return bytes(data)
        return self._seal_active(self.decrypt(data, where=where), place, self)

    def _seal_active(self, plain: bytes, place: Place, fallback: EncryptedCodec) -> bytes:
        codec = self if self.active is not None else fallback
        if codec.active is None:
            raise SerializationError(
                f"cannot seal the value of {place}: no encryption key to seal it with",
                path=str(place),
                type_name="bytes",
            )
        return codec._seal(plain, place)

    def key_id(self, data: bytes, *, where: str = "payload") -> str:
        """The id of the key ``data`` was sealed with."""
        return self._parse(data, where)[0]

    @staticmethod
    def placed(data: bytes, *, where: str = "payload") -> Place | None:
        """The place ``data`` is bound to (read from its header, no key needed); ``None``
        for a value written before places were bound (format 1)."""
        return EncryptedCodec._parse(bytes(data), where)[4]

    @staticmethod
    def _parse(data: bytes, where: str) -> tuple[str, bytes, bytes, bytes, Place | None]:
        if len(data) < 2 or data[0] not in (_UNBOUND, _BOUND):
            raise DecodeError(
                f"{where} is not an encrypted payload this version reads", where=where
            )
        end = 2 + data[1]
        try:
            key_id = bytes(data[2:end]).decode()
        except UnicodeDecodeError:
            raise DecodeError(
                f"{where}: encrypted payload with a malformed key id", where=where
            ) from None
        place = None
        if data[0] == _BOUND:
            if len(data) < end + 2:
                raise DecodeError(
                    f"{where}: encrypted payload truncated ({len(data)} bytes)", where=where
                )
            size = struct.unpack_from("!H", data, end)[0]
            place = Place.parse(bytes(data[end + 2 : end + 2 + size]), where)
            end += 2 + size
        if len(data) < end + _NONCE + 16:
            raise DecodeError(
                f"{where}: encrypted payload truncated ({len(data)} bytes)", where=where
            )
        return (
            key_id,
            bytes(data[:end]),
            bytes(data[end : end + _NONCE]),
            bytes(data[end + _NONCE :]),
            place,
        )

    def decrypt(
        self,
        data: bytes,
        *,
        where: str = "payload",
        place: Place | None = None,
        run_id: str | None = None,
    ) -> bytes:
        """The inner codec's bytes; :class:`EncryptedPayload` if the key is not held here,
        :class:`DecodeError` if the payload was tampered with, :class:`MisplacedPayload`
        if it is bound to another place than ``place`` (or another run than ``run_id``)."""
        key_id, header, nonce, sealed, bound = self._parse(bytes(data), where)
        check_place(bound, place, run_id, where)
        key = self.keys.get(key_id)
        if key is None:
            raise EncryptedPayload(
                f"{where} is encrypted with key {key_id!r}, which this reader does not hold"
                f" (give it in ${ENCRYPTION_KEYS_ENV} or to the codec)",
                where=where,
                key_id=key_id,
                size=len(data),
            )
        cipher = _aesgcm(key)  # first: without the extra, its error says how to get it
        from cryptography.exceptions import InvalidTag  # noqa: PLC0415 - optional extra

        try:
            return bytes(cipher.decrypt(nonce, sealed, self.name.encode() + header))
        except InvalidTag:
            raise DecodeError(
                f"{where} does not decrypt with key {key_id!r}: it was altered, or moved from "
                f"another codec column",
                where=where,
            ) from None

    def decode(
        self,
        data: bytes,
        *,
        where: str = "payload",
        place: Place | None = None,
        run_id: str | None = None,
    ) -> Any:
        """Decrypt (checking the place, see :meth:`decrypt`), then decode with the inner
        codec."""
        plain = self.decrypt(data, where=where, place=place, run_id=run_id)
        return self.inner.decode(plain, where=where)


def check_place(bound: Place | None, place: Place | None, run_id: str | None, where: str) -> None:
    """Raise :class:`MisplacedPayload` if a value bound to ``bound`` is read at ``place``
    (or in run ``run_id``); a value bound to no place (format 1) passes."""
    if bound is None or (place is None and run_id is None):
        return
    if (place is not None and bound != place) or (run_id is not None and bound.run_id != run_id):
        at = str(place) if place is not None else f"run {run_id!r}"
        here = "" if at in where else f" (read as {at})"
        raise MisplacedPayload(
            f"{where}{here}: this encrypted value belongs to {bound}: it was moved or "
            "swapped (the journal was altered); it was not decoded",
            where=where,
            run_id=place.run_id if place is not None else run_id,
            seq=place.seq if place is not None else None,
            bound_to=str(bound),
        )


def keys_from_env(environ: Mapping[str, str] | None = None) -> dict[str, bytes]:
    """The keys of ``$DURABLE_ENCRYPTION_KEYS`` (``id=base64key,id=base64key``); the last
    one is the active key of a codec built from them."""
    text = (environ if environ is not None else os.environ).get(ENCRYPTION_KEYS_ENV, "")
    keys: dict[str, bytes] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key_id, sep, encoded = item.partition("=")
        if not sep:
            raise ValueError(f"${ENCRYPTION_KEYS_ENV}: {key_id!r} has no '=': write id=base64key")
        try:
            keys[key_id.strip()] = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(
                f"${ENCRYPTION_KEYS_ENV}: the key of {key_id!r} is not base64"
            ) from None
    return _check_keys(keys)
