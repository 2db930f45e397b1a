"""Child process for tests/reliability/test_workflow_resources.py: ``start DB WORKFLOW RUN_ID``
starts a run (and is killed by the test); ``recover DB`` resumes what a dead process
left, waits for it, and prints the recovery report as JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from llamaindex_services import Guarded, Report, Summarizer

import engine


def main() -> None:
    mode, db = sys.argv[1], sys.argv[2]
    engine.configure(db, lease_seconds=0.3)
    if mode == "start":
        name, run_id = sys.argv[3], sys.argv[4]
        if name == "report":
            wf = Report(timeout=None)
            wf.add_workflows(summarizer=Summarizer(timeout=None))
            handler = wf.run(run_id=run_id, topic="agents")
        else:
            handler = Guarded(timeout=None).run(run_id=run_id, url="https://example.org")
        print(json.dumps({"result": handler.result(timeout=60)}), flush=True)
    else:
        report = engine.recover(timeout=60, wait_leased=True)
        print(json.dumps({"recovered": report.run_ids, "errors": report.errors}), flush=True)


if __name__ == "__main__":
    main()
