"""A worker process for tests/reliability/test_multiworker.py: ``Engine.worker`` until SIGTERM.

``python multiworker_child.py URL LEASE_SECONDS CONCURRENCY POLL_INTERVAL``

Prints ``ready <owner>`` once its journal is open, then claims and executes runs of
``multiworker_workload`` (``$MULTIWORKER_LOG`` names the side-effect log). SIGTERM
stops it cleanly (the runs in flight finish first); the test also SIGKILLs and
SIGSTOPs it at random.
"""

from __future__ import annotations

import signal
import sys
import threading

import multiworker_workload  # noqa: F401 - registers the durable functions

from engine import RunHandle, configure


def main(url: str, lease: str, concurrency: str, poll: str) -> None:
    # The default engine: the workload's functions find it as their own.
    eng = configure(url, lease_seconds=float(lease))
    eng.journal  # noqa: B018 - open now: a bad URL fails before "ready"
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    handles: list[RunHandle] = []
    print(f"ready {eng.owner}", flush=True)
    eng.worker(
        concurrency=int(concurrency),
        poll_interval=float(poll),
        stop=stop,
        on_recover=lambda report: handles.extend(report.handles),
    )
    # Let the runs in flight end here (closing would hand them over mid-step).
    for handle in handles:
        handle.wait()
    eng.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
