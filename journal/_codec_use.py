"""The Journal's codecs: which codec encodes a value and decodes a stored payload,
per run, and the building of new entries (a bad value fails before any write)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

from ._core import JournalCore
from ._requests import UNSET
from .codecs import Codec, Undecoded, codec_for_name, decode_for_reading
from .encryption import PREFIX, EncryptedCodec, Place
from .errors import (
    SerializationError,
    UntrustedPayload,
)
from .records import Entry, NewEntry, Run

_KEPT_BINDINGS = 1024
"""Runs the engine left whose own codec stays bound (see :meth:`Journal.use_codec`)."""


def _storable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


class CodecsMixin(JournalCore):
    """Encoding and decoding payloads (part of :class:`~journal.Journal`)."""

    def use_codec(self, run_id: str, codec: Codec | None) -> None:
        """Read and write run ``run_id``'s payloads named ``codec.name`` with ``codec``
        itself (a function's own codec, with its options: its HMAC key, its compression):
        the code configured it, so it is trusted for that run, and that run only.
        ``None``: the engine left the run; the binding is kept among the last 1024 left,
        so the run's result and state still read here (the cache stays bounded)."""
        with self._lock:
            if codec is not None:
                self._left_codecs.pop(run_id, None)
                self._run_codecs[run_id] = codec
                return
            left = self._run_codecs.pop(run_id, None)
            if left is not None:
                self._left_codecs[run_id] = left
                while len(self._left_codecs) > _KEPT_BINDINGS:
                    self._left_codecs.popitem(last=False)

    def codec_named(self, name: str, *, run_id: str | None = None) -> Codec:
        """The codec stored under ``name``: the one :meth:`use_codec` gave ``run_id``, else
        the journal's own, else one with this journal's HMAC key. A pickle codec the
        journal was not configured with refuses to unpickle unless ``trust_pickle`` (see
        :func:`~journal.codec_for_name`): a column alone never picks pickle."""
        if run_id is not None:
            own = self._run_codecs.get(run_id) or self._left_codecs.get(run_id)
            if own is not None and own.name == name:
                return own
        codec = self._codecs.get(name)
        if codec is None:
            codec = codec_for_name(name, hmac_key=self._hmac_key, trust_pickle=self.trust_pickle)
            self._codecs[name] = codec
        return codec

    def encode(self, value: Any, *, codec: Codec | None = None, path: str = "value") -> bytes:
        """Encode ``value``; raises :class:`SerializationError` naming ``path`` on failure."""
        return (codec or self.codec).encode(value, path=path)

    def decode(
        self,
        data: bytes | None,
        codec: str,
        *,
        where: str,
        strict: bool = True,
        run_id: str | None = None,
        place: Place | None = None,
    ) -> Any:
        """Decode a stored payload (of run ``run_id``: see :meth:`use_codec`); ``None``
        stays ``None``.

        ``strict=False`` is for reading, not executing: a pickle this journal may not
        unpickle, or a value whose class cannot be used here, comes back as a
        :class:`~journal.Undecoded` placeholder instead of an error. An encrypted value
        bound to another place than ``place`` (or another run than ``run_id``) raises
        :class:`~journal.MisplacedPayload` either way.
        """
        if data is None:
            return None
        if place is not None and run_id is None:
            run_id = place.run_id
        if strict:
            use = self.codec_named(codec, run_id=run_id)
            if isinstance(use, EncryptedCodec):
                return use.decode(data, where=where, place=place, run_id=run_id)
            return use.decode(data, where=where)
        try:
            use = self.codec_named(codec, run_id=run_id)
        except UntrustedPayload as exc:
            return Undecoded("pickle", size=len(data), reason=str(exc))
        return decode_for_reading(use, data, where=where, place=place, run_id=run_id)

    def decode_entry(self, entry: Entry, *, strict: bool = True) -> Any:
        """Decode an entry's payload; errors name the run and seq (``strict``: see
        :meth:`decode`)."""
        return self.decode(
            entry.payload,
            entry.codec,
            where=f"run {entry.run_id!r} seq {entry.seq}",
            strict=strict,
            place=Place("entry", entry.run_id, entry.seq),
        )

    def decode_run_value(
        self,
        run: Run,
        field: Literal["input", "output"],
        *,
        codec: Codec | None = None,
        strict: bool = True,
    ) -> Any:
        """Run ``run``'s input or output decoded (with ``codec`` if given, else the run's
        own); an encrypted one sealed for another run or field raises
        :class:`~journal.MisplacedPayload` before it is decoded."""
        data = run.input if field == "input" else run.output
        if data is None:
            return None
        place = Place(field, run.run_id)
        where = f"run {run.run_id!r} {field}"
        if codec is None:
            return self.decode(data, run.codec, where=where, strict=strict, place=place)
        if isinstance(codec, EncryptedCodec):
            return codec.decode(data, where=where, place=place, run_id=run.run_id)
        return codec.decode(data, where=where)

    def bind(self, data: bytes | None, codec: str, place: Place) -> bytes | None:
        """``data`` as stored at ``place``: an encrypted value sealed bound to it (see
        :class:`~journal.Place`); any other value as it is."""
        if data is None or not codec.startswith(PREFIX):
            return data
        use = self.codec_named(codec, run_id=place.run_id)
        if not isinstance(use, EncryptedCodec):
            return data
        return use.bind(data, place, where=str(place))

    def bind_entries(
        self, run_id: str, entries: Sequence[NewEntry], base: int
    ) -> Sequence[NewEntry]:
        """``entries`` as appended after seq ``base``: their encrypted payloads bound to
        their seqs (the same sequence when none is encrypted)."""
        bound: list[NewEntry] | None = None
        for i, e in enumerate(entries):
            if e.payload is not None and e.codec.startswith(PREFIX):
                if bound is None:
                    bound = list(entries)
                place = Place("entry", run_id, base + 1 + i)
                bound[i] = replace(e, payload=self.bind(e.payload, e.codec, place))
        return entries if bound is None else bound

    def _read_entry(self, entry: Entry) -> Any:
        return self.decode_entry(entry, strict=False)

    def entry(
        self,
        kind: str,
        value: Any = UNSET,
        *,
        step: str | None = None,
        key: str | None = None,
        codec: Codec | None = None,
        path: str | None = None,
    ) -> NewEntry:
        """Build a :class:`NewEntry`, encoding ``value`` now: a bad value fails before any write."""
        use = codec or self.codec
        for label, text in (("key", key), ("step", step)):
            if text is not None and not _storable(text):
                raise SerializationError(
                    f"cannot store {kind} entry: its {label} {text!r} is not valid Unicode "
                    "(a lone surrogate); use text that encodes as UTF-8",
                    path=f"{label} {text!r}",
                    type_name="str",
                )
        payload = (
            None
            if value is UNSET
            else use.encode(value, path=path or (f"state[{key!r}]" if key else kind))
        )
        return NewEntry(kind=kind, payload=payload, codec=use.name, step=step, key=key)
