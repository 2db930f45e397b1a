"""Child-process programs for tests/reliability/test_journal_processes.py.

Run as ``python journal_worker.py MODE ARGS...``. Every line a mode prints is
flushed at once: the parent coordinates through this stdout (and a "go" line
on stdin), never through sleeps. An unexpected exception prints one
``error <type> <message>`` line and exits with status 3.
"""

from __future__ import annotations

import sys

import journal


def _wait_for_go() -> None:
    print("ready", flush=True)
    line = sys.stdin.readline()
    if line.strip() != "go":
        raise SystemExit(f"expected 'go' on stdin, got {line!r}")


def contend(path: str, durability: str, run_id: str, name: str, total: str) -> None:
    """Race another process on one run until it holds ``total`` entries; print each seq won."""
    target = int(total)
    conflicts = 0
    with journal.Journal(path, durability=durability) as j:  # type: ignore[arg-type]
        _wait_for_go()
        while True:
            last = j.get_run(run_id).last_seq
            if last >= target:
                break
            entry = j.entry("state.set", {"who": name, "seq": last + 1}, key="k")
            try:
                seq = j.append(run_id, [entry], expected_seq=last)
            except journal.ConflictError:
                conflicts += 1
                continue
            print(f"won {seq}", flush=True)
    print(f"done conflicts={conflicts}", flush=True)


def lockstep(path: str, durability: str, run_id: str, name: str) -> None:
    """Obey the parent line by line: ``read`` last_seq, then ``append`` after it, until ``stop``.

    The parent lets both children read before either appends, so both name the
    same expected seq and exactly one of them must lose with ConflictError.
    """
    last = -1
    with journal.Journal(path, durability=durability) as j:  # type: ignore[arg-type]
        print("ready", flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "stop":
                break
            if command == "read":
                last = j.get_run(run_id).last_seq
                print(f"read {last}", flush=True)
            elif command == "append":
                entry = j.entry("state.set", {"who": name, "seq": last + 1}, key="k")
                try:
                    seq = j.append(run_id, [entry], expected_seq=last)
                except journal.ConflictError as exc:
                    print(f"lost {exc.actual_seq}", flush=True)  # type: ignore[attr-defined]
                else:
                    print(f"won {seq}", flush=True)
            else:
                raise SystemExit(f"unknown command {command!r}")
    print("done", flush=True)


def own_run(path: str, durability: str, run_id: str, count: str) -> None:
    """Create ``run_id`` and append ``count`` entries to it, one commit each."""
    n = int(count)
    with journal.Journal(path, durability=durability) as j:  # type: ignore[arg-type]
        j.create_run(run_id, name="own")
        _wait_for_go()
        for i in range(1, n + 1):
            entry = j.entry("state.set", {"run": run_id, "i": i}, key=f"k{i % 3}")
            seq = j.append(run_id, [entry], expected_seq=i - 1)
            if seq != i:
                raise AssertionError(f"append returned seq {seq}, expected {i}")
    print("done", flush=True)


def ack_forever(path: str, durability: str, run_id: str) -> None:
    """Append batches of 1-3 entries forever; print each acknowledged last seq."""
    with journal.Journal(path, durability=durability) as j:  # type: ignore[arg-type]
        j.create_run(run_id, name="victim")
        last = 0
        i = 0
        while last < 1_000_000:  # a bound, so a lost parent cannot leave it running forever
            i += 1
            batch = [
                j.entry(
                    "state.set", {"seq": last + k, "pad": "x" * (k * 40)}, key=f"k{(last + k) % 5}"
                )
                for k in range(1, i % 3 + 2)
            ]
            last = j.append(run_id, batch, expected_seq=last)
            print(last, flush=True)


def open_fresh(path: str, run_id: str) -> None:
    """Wait for go, then open (maybe creating) the journal and create one run."""
    _wait_for_go()
    with journal.Journal(path) as j:
        j.create_run(run_id, name="fresh")
    print("done", flush=True)


MODES = {
    "contend": contend,
    "lockstep": lockstep,
    "own": own_run,
    "ack": ack_forever,
    "fresh": open_fresh,
}


def main(argv: list[str]) -> int:
    try:
        MODES[argv[1]](*argv[2:])
    except Exception as exc:
        print(f"error {type(exc).__module__}.{type(exc).__name__} {exc}", flush=True)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
