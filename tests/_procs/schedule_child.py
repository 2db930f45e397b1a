"""A worker process for tests/reliability/test_schedule_crash.py: ``Engine.worker`` until SIGTERM.

``python schedule_child.py LOCATION LEASE_SECONDS POLL_INTERVAL``

Prints ``ready <owner>`` once its journal is open, then fires due schedule ticks and
claims and executes their runs (``$SCHEDULE_LOG`` names the side-effect log). The test
SIGKILLs it at random.
"""

from __future__ import annotations

import signal
import sys
import threading

import schedule_workload  # noqa: F401 - registers the scheduled function

from engine import configure


def main(location: str, lease: str, poll: str) -> None:
    eng = configure(location, lease_seconds=float(lease))
    eng.journal  # noqa: B018 - open now: a bad location fails before "ready"
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"ready {eng.owner}", flush=True)
    eng.worker(concurrency=4, poll_interval=float(poll), stop=stop, grace=10)
    eng.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
