"""A child process for tests/engine/test_queue_limits.py.

``python limits_child.py URL enqueue N``: enqueue N runs of the rated queue, then exit.
``python limits_child.py URL worker``: print ``ready``, then ``Engine.worker`` until SIGTERM.
``python limits_child.py URL dedup KEY``: print ``ready``, wait for a line on stdin,
enqueue with dedup key KEY and print the run id it got back.
"""

from __future__ import annotations

import signal
import sys
import threading

import limits_workload

from engine import configure


def main(url: str, mode: str, *args: str) -> None:
    eng = configure(url, lease_seconds=5)
    eng.journal  # noqa: B018 - open now: a bad URL fails here
    if mode == "enqueue":
        for i in range(int(args[0])):
            limits_workload.work.enqueue(i)
    elif mode == "worker":
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        print("ready", flush=True)
        eng.worker(concurrency=4, poll_interval=0.05, stop=stop)
        eng.drain(10)
    elif mode == "dedup":
        print("ready", flush=True)
        sys.stdin.readline()  # every racer is ready: go together
        print(limits_workload.once.enqueue(7, dedup_key=args[0]).run_id, flush=True)
    eng.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
