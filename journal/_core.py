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
from ._requests import UNSET, CreateRequest
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

        def get_run(self, run_id: str) -> Run: ...

        def find_run(self, run_id: str) -> Run | None: ...

        def _resealed(
            self,
            run_id: str,
            *,
            status: str | None = None,
            output: Any = UNSET,
            error: Any = UNSET,
            horizon: int | None = None,
            claim: bool = False,
            row: Sequence[Any] | None = None,
        ) -> int: ...

        def _read_entry(self, entry: Entry) -> Any: ...

        def codec_named(self, name: str, *, run_id: str | None = None) -> Codec: ...

        def decode(
            self,
            data: bytes | None,
            codec: str,
            *,
            where: str,
            strict: bool = True,
            run_id: str | None = None,
        ) -> Any: ...

        def decode_entry(self, entry: Entry, *, strict: bool = True) -> Any: ...

        def read(self, run_id: str, start: int = 1, end: int | None = None) -> Iterator[Entry]: ...

        def _resolve_unknown_create(self, req: CreateRequest) -> tuple[Run, bool]: ...

        def append(
            self,
            run_id: str,
            entries: Sequence[NewEntry],
            *,
            expected_seq: int | None,
            epoch: int | None = None,
            status: str | None = None,
            output: Any = UNSET,
            error: Any = UNSET,
            wake_at: Any = UNSET,
            release: bool = False,
        ) -> int: ...

        def _snapshot_due(self, run_id: str, base: int, entries: Sequence[NewEntry]) -> bool: ...

        def _snapshot_row(self, run_id: str, state: FoldedState, now: float) -> tuple[Any, ...]: ...

        def state_at(
            self, run_id: str, seq: int | None = None, *, strict: bool = True
        ) -> FoldedState: ...
