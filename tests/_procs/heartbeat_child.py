"""A child process for tests/engine/test_heartbeats.py.

``python heartbeat_child.py URL own KIND``: start run ``long`` (KIND: ``sync`` or
``async`` durable function, or ``workflow``) in this process, print ``started``, wait
for it and print ``done <result>``.
``python heartbeat_child.py URL worker KIND``: print ``ready``, then claim and execute
runs (``Engine.worker``) until SIGTERM; it would take ``long`` over if its lease lapsed.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading

from heartbeat_workload import LEASE, LongFlow, async_run, sync_run

from engine import configure


async def _own_async(kind: str) -> object:
    if kind == "async":
        handle = async_run.start(run_id="long")
        print("started", flush=True)
        return await asyncio.to_thread(handle.result, 60)
    handler = LongFlow(timeout=None).run(run_id="long")
    print("started", flush=True)
    return await handler


def main(url: str, mode: str, kind: str) -> None:
    eng = configure(url, lease_seconds=LEASE)
    eng.journal  # noqa: B018 - open now: a bad URL fails here
    if mode == "own":
        if kind == "sync":
            handle = sync_run.start(run_id="long")
            print("started", flush=True)
            result: object = handle.result(60)
        else:
            result = asyncio.run(_own_async(kind))
        print(f"done {result}", flush=True)
    else:
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        print("ready", flush=True)
        eng.worker(concurrency=2, poll_interval=0.05, stop=stop)
    eng.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
