"""Child process for the LlamaIndex-module crash test: ``start DB RUN_ID`` starts a
``Review`` run and answers it (then is killed by the parent, or finishes);
``recover DB`` resumes what a dead process left and prints the run's result."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from llamaindex_flow import Review

from engine import Engine, HumanResponseEvent, configure, send_event


def main() -> None:
    mode, db = sys.argv[1], sys.argv[2]
    if mode == "start":
        configure(db, lease_seconds=0.3)
        handler = Review(timeout=None).run(run_id=sys.argv[3], topic="otters")
        while handler.status != "waiting":
            time.sleep(0.01)
        send_event(sys.argv[3], HumanResponseEvent(response="yes"))
        print("answered", flush=True)
        result = handler.result(timeout=60)
        print(json.dumps({"url": result.url}), flush=True)
    else:
        with Engine(db, lease_seconds=0.3) as eng:
            report = eng.recover(timeout=60, wait_leased=True)
            print(json.dumps({"recovered": report.run_ids, "errors": report.errors}), flush=True)


if __name__ == "__main__":
    main()
