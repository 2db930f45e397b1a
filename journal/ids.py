"""Generated run ids: UUIDv7 (RFC 9562) in 32 hex digits, ordered by creation time.

Entries are keyed by ``(run_id, seq)``. With random ids (UUIDv4) every new run's
entries land on a random page of that B-tree, so each commit dirties pages far
apart; time-ordered ids put a new run's rows at the right edge, next to the last
run's, and a commit writes fewer pages (measured in docs/performance.md).
"""

from __future__ import annotations

import os
import threading
import time

_lock = threading.Lock()
_last_ms = 0
_last_counter = 0
_COUNTER_MAX = 0xFFF


def new_run_id() -> str:
    """A fresh run id: 48-bit Unix milliseconds, a 12-bit counter, 62 random bits.

    Within one process ids increase strictly (the counter, seeded at random each
    millisecond, orders ids made in the same millisecond; a clock that steps back
    keeps the last millisecond). Across processes the random bits keep them unique.
    """
    global _last_ms, _last_counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms = ms
            _last_counter = int.from_bytes(os.urandom(2), "big") & 0x7FF
        else:
            _last_counter += 1
            if _last_counter > _COUNTER_MAX:  # 2,048+ ids in one ms: borrow the next ms
                _last_ms += 1
                _last_counter = 0
        ms, counter = _last_ms, _last_counter
    tail = (0b10 << 62) | (int.from_bytes(os.urandom(8), "big") >> 2)
    return f"{ms & 0xFFFFFFFFFFFF:012x}7{counter:03x}{tail:016x}"
