"""Child-process program for tests/reliability/test_postgres_durability.py.

``python pg_writer.py URL DURABILITY RUN_ID``: create run ``RUN_ID`` on the PostgreSQL
journal at ``URL`` opened with ``durability=DURABILITY``, print ``ready``, then append
one ``step.completed`` entry per commit, printing ``ack <seq>`` after each append
returned (was acknowledged), until an append fails (``error <type>``) or it is killed.
"""

from __future__ import annotations

import sys

from journal import EntryKind, Journal


def main() -> None:
    url, durability, run_id = sys.argv[1:4]
    journal = Journal(url, durability=durability)  # type: ignore[arg-type]
    run, _ = journal.create_run(run_id, name="writer", status="running")
    seq = run.last_seq
    print("ready", flush=True)
    while True:
        entry = journal.entry(EntryKind.STEP_COMPLETED, {"n": seq + 1}, step="s", key=str(seq))
        try:
            seq = journal.append(run_id, [entry], expected_seq=seq)
        except Exception as exc:  # the server died: the parent reads what was acknowledged
            print(f"error {type(exc).__name__}", flush=True)
            return
        print(f"ack {seq}", flush=True)


if __name__ == "__main__":
    main()
