"""An apsw VFS that records every write, and rebuilds what a disk holds after a power cut.

:class:`RecordingVFS` wraps the default VFS. Every call that changes a file (``xWrite``,
``xTruncate``, ``xSync``, ``xDelete``) is appended to :attr:`RecordingVFS.ops`, with
its bytes, before it is passed on; the test may interleave its own marks (an append
was acknowledged) with :meth:`RecordingVFS.mark`. With :attr:`RecordingVFS.fault_at`
set, the n-th such call raises an apsw I/O error instead of reaching the disk.

:func:`disk_after_power_loss` replays the first ``k`` recorded I/O operations against
a model of the disk: what a file held at its last ``xSync`` is durable; what was
written since may reach the platter whole, in part (a torn write: some 512-byte
sectors new, the others old, or garbage where the write grew the file), in another
order, or not at all. The result is the bytes each file would hold when the machine
comes back.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import apsw

SECTOR = 512
MODES = ("lost", "kept", "subset", "reordered", "torn", "garbage")
"""How unsynced writes fare in the power cut (see :func:`disk_after_power_loss`)."""


@dataclass(frozen=True)
class Op:
    """One recorded operation: an I/O call on a file, or a mark from the test."""

    kind: str  # "write" | "truncate" | "sync" | "delete" | "mark"
    path: str
    offset: int = 0
    data: bytes = b""
    label: Any = None


class RecordingVFS(apsw.VFS):  # type: ignore[misc]
    """Records (and optionally fails) the mutating I/O of the files it opens."""

    def __init__(self, name: str) -> None:
        super().__init__(name, base="")
        self.vfs_name = name
        self.ops: list[Op] = []
        self.fault_at: int | None = None
        """Fail the n-th counted I/O call (1-based); None: never."""
        self.fault: Callable[[], BaseException] = lambda: apsw.IOError("injected I/O error")
        self.fault_kinds: frozenset[str] = frozenset({"write", "truncate", "sync"})
        self.io_count = 0
        self.faults_raised = 0
        self.faults_absorbed = 0
        """Injected faults SQLite did not report to its caller (apsw's excepthook got them)."""

    # -- the hooks ---------------------------------------------------------------------

    def before(self, kind: str, path: str) -> None:
        """Count an I/O call; raise the injected fault if this is the chosen one."""
        if kind not in self.fault_kinds:
            return
        self.io_count += 1
        if self.fault_at is not None and self.io_count == self.fault_at:
            self.faults_raised += 1
            raise self.fault()

    def record(self, op: Op) -> None:
        self.ops.append(op)

    def mark(self, label: Any) -> None:
        """Note, between I/O calls, that something happened (e.g. an append was acked)."""
        self.ops.append(Op("mark", "", label=label))

    @property
    def io_ops(self) -> list[Op]:
        """The recorded I/O operations (marks left out)."""
        return [op for op in self.ops if op.kind != "mark"]

    # -- the VFS -----------------------------------------------------------------------

    def excepthook(self, etype: Any, evalue: Any, etraceback: Any) -> bool:
        """An exception SQLite could not hand back (e.g. a fault during its own cleanup)."""
        self.faults_absorbed += 1
        return True

    def xOpen(self, name: Any, flags: list[int]) -> apsw.VFSFile:
        return RecordingFile(self, name, flags)

    def xDelete(self, filename: str, syncdir: bool) -> None:
        self.before("delete", filename)
        self.record(Op("delete", filename))
        super().xDelete(filename, syncdir)


class RecordingFile(apsw.VFSFile):  # type: ignore[misc]
    """A file of the default VFS whose writes, truncations and syncs are recorded."""

    def __init__(self, vfs: RecordingVFS, name: Any, flags: list[int]) -> None:
        self.vfs = vfs
        self.path = name.filename() if isinstance(name, apsw.URIFilename) else name
        super().__init__("", name, flags)

    def excepthook(self, etype: Any, evalue: Any, etraceback: Any) -> bool:
        """See :meth:`RecordingVFS.excepthook`."""
        return self.vfs.excepthook(etype, evalue, etraceback)

    def xWrite(self, data: Any, offset: int) -> None:
        self.vfs.before("write", self.path)
        if self.path is not None:
            self.vfs.record(Op("write", self.path, offset, bytes(data)))
        super().xWrite(data, offset)

    def xTruncate(self, newsize: int) -> None:
        self.vfs.before("truncate", self.path)
        if self.path is not None:
            self.vfs.record(Op("truncate", self.path, newsize))
        super().xTruncate(newsize)

    def xSync(self, flags: int) -> None:
        self.vfs.before("sync", self.path)
        if self.path is not None:
            self.vfs.record(Op("sync", self.path))
        super().xSync(flags)


_COUNTER = iter(range(1_000_000))


@contextmanager
def recording_vfs() -> Iterator[RecordingVFS]:
    """A freshly registered :class:`RecordingVFS`, unregistered on exit."""
    vfs = RecordingVFS(f"reliability-{os.getpid()}-{next(_COUNTER)}")
    try:
        yield vfs
    finally:
        vfs.unregister()


# -- the disk after a power cut ------------------------------------------------------------


def _apply(image: bytearray | None, op: Op, data: bytes | None = None) -> bytearray:
    image = bytearray() if image is None else image
    if op.kind == "truncate":
        del image[op.offset :]
        if len(image) < op.offset:
            image.extend(b"\x00" * (op.offset - len(image)))
        return image
    payload = op.data if data is None else data
    end = op.offset + len(payload)
    if len(image) < op.offset:
        image.extend(b"\x00" * (op.offset - len(image)))
    image[op.offset : end] = payload
    return image


def _torn(image: bytearray | None, op: Op, rng: random.Random, garbage: bool) -> bytearray:
    """Apply some sectors of a write; the others keep the old bytes (or, where the write
    grew the file, hold garbage when ``garbage``)."""
    image = bytearray() if image is None else image
    old_len = len(image)
    if op.kind != "write":
        return _apply(image, op) if rng.random() < 0.5 else image
    image = _apply(image, op, b"")  # grow to the offset if needed, change nothing
    first = op.offset // SECTOR
    last = (op.offset + len(op.data) - 1) // SECTOR
    sectors = list(range(first, last + 1))
    keep = set(rng.sample(sectors, rng.randrange(len(sectors)))) if len(sectors) > 1 else set()
    for s in sectors:
        lo = max(s * SECTOR, op.offset)
        hi = min((s + 1) * SECTOR, op.offset + len(op.data))
        if s in keep:
            chunk = op.data[lo - op.offset : hi - op.offset]
        elif garbage and lo >= old_len:
            chunk = rng.randbytes(hi - lo)
        elif lo >= old_len:
            continue  # the file did not grow this far
        else:
            chunk = bytes(image[lo : min(hi, old_len)])
            hi = lo + len(chunk)
        if len(image) < lo:
            image.extend(b"\x00" * (lo - len(image)))
        image[lo:hi] = chunk
    return image


def disk_after_power_loss(
    ops: list[Op], k: int, mode: str, rng: random.Random
) -> dict[str, bytes | None]:
    """The content of every file after the first ``k`` I/O operations of ``ops`` and a
    power cut (``None``: the file does not exist).

    Synced bytes survive. Bytes written since a file's last sync fare by ``mode``:
    ``lost`` (none survive), ``kept`` (all, as after a process crash), ``subset`` (a
    random subset, in order), ``reordered`` (a random subset applied in random order,
    so an older write may win over a newer one), ``torn`` (each write survives
    whole, not at all, or in part: some of its sectors) and ``garbage`` (torn, and
    sectors past the old end of the file hold random bytes).
    """
    durable: dict[str, bytearray | None] = {}
    pending: dict[str, list[Op]] = {}
    seen = 0
    for op in ops:
        if op.kind == "mark":
            continue
        if seen == k:
            break
        seen += 1
        if op.kind == "sync":
            image = durable.get(op.path)
            for p in pending.pop(op.path, []):
                image = _apply(image, p)
            durable[op.path] = bytearray() if image is None else image
        elif op.kind == "delete":
            durable[op.path] = None
            pending.pop(op.path, None)
        else:
            durable.setdefault(op.path, bytearray())
            pending.setdefault(op.path, []).append(op)
    out: dict[str, bytes | None] = {}
    for path, base in durable.items():
        image = None if base is None else bytearray(base)
        todo = pending.get(path, [])
        if mode == "kept":
            chosen = todo
        elif mode == "lost":
            chosen = []
        else:
            chosen = [op for op in todo if rng.random() < 0.5]
            if mode == "reordered":
                rng.shuffle(chosen)
        for op in chosen:
            if mode in ("torn", "garbage") and rng.random() < 0.5:
                image = _torn(image, op, rng, garbage=mode == "garbage")
            else:
                image = _apply(image, op)
        out[path] = None if image is None else bytes(image)
    return out


def write_copy(files: dict[str, bytes | None], source: str, target: str) -> None:
    """Write the rebuilt images of ``source`` and its ``-wal`` and ``-journal`` files as
    ``target`` and ``target-wal``/``-journal`` (``-shm`` is rebuilt by SQLite from the WAL)."""
    for suffix in ("", "-wal", "-journal"):
        data = files.get(source + suffix)
        path = target + suffix
        if os.path.exists(path):
            os.remove(path)
        if data is not None:
            fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
    if files.get(source) is None:
        # The database file was created (empty, by the journal itself) before any I/O.
        fd = os.open(target, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
