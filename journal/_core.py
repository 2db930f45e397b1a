"""What every part of the :class:`~journal.Journal` facade shares: the open recorder,
the lock that serialises its use, and the per-run caches. The facade's parts (codecs,
runs, claims, snapshots: one private module each) extend this class, and
``journal.store.Journal`` puts them together."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ._recorder import Recorder
from .codecs import Codec
from .errors import CorruptionError, JournalClosed
from .fold import FoldedState
from .policies import Durability, SnapshotPolicy
from .records import Entry, NewEntry, Run

_T = TypeVar("_T")


class JournalCore:
    """The state the facade's parts share (see the module docstring)."""

    path: str
    durability: Durability
    readonly: bool
    codec: Codec
    snapshot_policy: SnapshotPolicy
    trust_pickle: bool
    where: str
    """Where the journal is, for messages: the path, or the URL without its password."""
    entries_read: int
    """Entries read from disk since open: lets tests prove recovery reads only a tail."""
    _db: Recorder | None
    _lock: threading.RLock
    _hmac_key: bytes | str | None
    # The codecs payloads decode with, by column value: the journal's own codec is
    # here from the start (the writer's lookup stays one dict hit), and a column
    # never picks pickle on its own. A function's own codec is bound to its runs
    # (use_codec): to the runs in flight, then to the last ones left.
    _codecs: dict[str, Codec]
    _run_codecs: dict[str, Codec]
    _left_codecs: OrderedDict[str, Codec]
    _snapshot_every: dict[str, int | None]
    # Per run in flight, for size-chosen snapshots: [seq accounted to, tail bytes
    # since the last snapshot, that snapshot's bytes, its seq]. A cache: a run
    # another writer moved on (or a rolled-back append) is measured again.
    _tails: dict[str, list[int]]
    # Per run this journal writes and snapshots: [the state at its last snapshot,
    # the appends since (base, entries, time), the seq they reach], so the next
    # snapshot folds what the writer already holds instead of re-reading entries.
    _held: dict[str, list[Any]]
    _altered: set[str]
    """Runs whose row failed its checksum when a claim read it: never claimed again."""

    def _c(self) -> Recorder:
        if self._db is None:
            raise JournalClosed(f"journal {self.where!r} is closed", path=self.where)
        return self._db

    def _read(self, where: str, operation: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """``operation(*args, **kwargs)`` of the recorder, its errors translated."""
        db = self._c()
        try:
            return operation(*args, **kwargs)
        except db.errors as exc:
            raise db.translate(exc, where) from exc
        except UnicodeDecodeError as exc:
            raise CorruptionError(
                f"{where}: a stored text is not valid UTF-8 ({exc.reason} at byte {exc.start}); "
                "the file was altered or damaged",
                where=where,
            ) from None

    if TYPE_CHECKING:  # what one part calls of another (each defined once, in its part)
        get_run: Callable[..., Run]
        find_run: Callable[..., Run | None]
        get_runs: Callable[..., dict[str, Run]]
        _resealed: Callable[..., int]
        _read_entry: Callable[..., Any]
        codec_named: Callable[..., Codec]
        decode: Callable[..., Any]
        decode_entry: Callable[..., Any]
        bind: Callable[..., bytes | None]
        bind_entries: Callable[..., Sequence[NewEntry]]
        read: Callable[..., Iterator[Entry]]
        _resolve_unknown_create: Callable[..., tuple[Run, bool]]
        append: Callable[..., int]
        _snapshot_due: Callable[..., bool]
        _snapshot_row: Callable[..., tuple[Any, ...]]
        state_at: Callable[..., FoldedState]
