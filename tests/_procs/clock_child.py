"""A process whose clock is off: ``Engine.worker`` until SIGTERM, or one ``recover``.

``python clock_child.py URL worker|recover LEASE_SECONDS CONCURRENCY``

``$CLOCK_SKEW`` (seconds, may be negative) is added to ``time.time`` before anything
else is imported, as a host whose clock runs fast or slow would see it
(``time.real_time`` keeps the true one for the side-effect log). Prints ``ready
<owner>`` once its journal is open; ``recover`` prints ``recovered <n>`` when done.
"""

from __future__ import annotations

import os
import time

_skew = float(os.environ.get("CLOCK_SKEW", "0"))
time.real_time = time.time  # type: ignore[attr-defined]
if _skew:
    _real_time, _real_ns = time.time, time.time_ns
    time.time = lambda: _real_time() + _skew
    time.time_ns = lambda: _real_ns() + int(_skew * 1e9)

import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402

import clock_workload  # noqa: E402, F401 - registers the durable functions

from engine import RunHandle, configure  # noqa: E402


def main(url: str, mode: str, lease: str, concurrency: str) -> None:
    eng = configure(url, lease_seconds=float(lease))
    eng.journal  # noqa: B018 - open now: a bad URL fails before "ready"
    print(f"ready {eng.owner}", flush=True)
    if mode == "recover":
        report = eng.recover(wait=True, wait_leased=True, timeout=120)
        print(f"recovered {len(report.handles)}", flush=True)
        eng.close()
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    handles: list[RunHandle] = []
    eng.worker(
        concurrency=int(concurrency),
        poll_interval=0.05,
        stop=stop,
        on_recover=lambda report: handles.extend(report.handles),
    )
    for handle in handles:
        handle.wait()
    eng.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
