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
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
from collections.abc import Mapping
from typing import Any

from .errors import DecodeError, EncryptedPayload, SerializationError

__all__ = ["ENCRYPTION_KEYS_ENV", "EncryptedCodec", "keys_from_env"]

ENCRYPTION_KEYS_ENV = "DURABLE_ENCRYPTION_KEYS"
"""The environment variable read tools take keys from: ``id=base64key,...``."""

PREFIX = "aesgcm:"
_VERSION = 1
_NONCE = 12
_KEY_SIZES = (16, 24, 32)


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
        key_id = self.active.encode()
        nonce = os.urandom(_NONCE)
        header = struct.pack("BB", _VERSION, len(key_id)) + key_id
        aad = self.name.encode() + header
        sealed: bytes = _aesgcm(self.keys[self.active]).encrypt(nonce, plain, aad)
        return header + nonce + sealed

    def key_id(self, data: bytes, *, where: str = "payload") -> str:
        """The id of the key ``data`` was sealed with."""
        return self._parse(data, where)[0]

    def _parse(self, data: bytes, where: str) -> tuple[str, bytes, bytes, bytes]:
        if len(data) < 2 or data[0] != _VERSION:
            raise DecodeError(
                f"{where} is not an encrypted payload this version reads", where=where
            )
        end = 2 + data[1]
        if len(data) < end + _NONCE + 16:
            raise DecodeError(
                f"{where}: encrypted payload truncated ({len(data)} bytes)", where=where
            )
        try:
            key_id = bytes(data[2:end]).decode()
        except UnicodeDecodeError:
            raise DecodeError(
                f"{where}: encrypted payload with a malformed key id", where=where
            ) from None
        return (
            key_id,
            bytes(data[:end]),
            bytes(data[end : end + _NONCE]),
            bytes(data[end + _NONCE :]),
        )

    def decrypt(self, data: bytes, *, where: str = "payload") -> bytes:
        """The inner codec's bytes; :class:`EncryptedPayload` if the key is not held here,
        :class:`DecodeError` if the payload was tampered with."""
        key_id, header, nonce, sealed = self._parse(bytes(data), where)
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

    def decode(self, data: bytes, *, where: str = "payload") -> Any:
        """Decrypt, then decode with the inner codec."""
        return self.inner.decode(self.decrypt(data, where=where), where=where)


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
