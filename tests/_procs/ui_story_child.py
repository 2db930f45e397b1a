"""Child program for ``ui_story_workload.crash_and_recover``: ``DB RUN_ID LEASE``.

Starts ``crashy(4)`` as RUN_ID under a lease of LEASE seconds; the parent SIGKILLs it.
"""

from __future__ import annotations

import sys

import ui_story_workload

from engine import configure

if __name__ == "__main__":
    db, run_id, lease = sys.argv[1:4]
    configure(db, lease_seconds=float(lease))
    ui_story_workload.crashy.run(4, run_id=run_id)
