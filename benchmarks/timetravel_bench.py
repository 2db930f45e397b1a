"""Time travel over long runs: ``history`` streams, ``replay`` speed.

``timetravel.history``
    A finished ``@durable`` run of N steps; a fresh process iterates its whole
    history (``iter_history``) and then replays it (``replay``). Reported: the peak
    memory that iterating the history added (it streams the journal page by page, so
    it should not grow with N), and replay's entries per second (today's code
    re-executed against the record, no step body run).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from .engine_bench import _child_env, _extra
from .harness import Contender, Derived, Sample, Scenario

_BUILD_CODE = """
import sys
from engine import Engine
from benchmarks.engine_bench import looping
eng = Engine(sys.argv[1], durability="process")
eng.call(looping, (int(sys.argv[2]),), {}, run_id="long")
eng.close()
"""

_MEASURE_CODE = """
import json, resource, sys, time
from engine import Engine, iter_history, replay
import benchmarks.engine_bench
eng = Engine(sys.argv[1])
eng.journal.get_run("long")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
count = sum(1 for _ in iter_history("long", engine=eng))
t1 = time.perf_counter()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
entries = eng.journal.get_run("long").last_seq
t2 = time.perf_counter()
report = replay("long", engine=eng)
t3 = time.perf_counter()
assert report.ok, report.error
print(json.dumps({"checkpoints": count, "history_s": t1 - t0,
                  "history_rss_added_kib": peak - base, "entries": entries,
                  "replay_s": t3 - t2, "replay_entries_per_s": entries / (t3 - t2)}))
eng.close()
"""


def measure(workdir: Path, *, steps: int) -> Sample:
    """Build a finished ``steps``-step run, then time history and replay in a fresh process."""
    db = str(workdir / "durable.db")
    build = subprocess.run(
        [sys.executable, "-c", _BUILD_CODE, db, str(steps)],
        cwd=workdir, env=_child_env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    if build.returncode != 0:
        raise RuntimeError(f"build child exited {build.returncode}:\n{build.stderr}")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE_CODE, db],
        cwd=workdir, env=_child_env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"measuring child exited {proc.returncode}:\n{proc.stderr}")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    return Sample(elapsed, 1, {**info, "steps": steps})


def scenarios(quick: bool) -> list[Scenario]:
    """History memory and replay speed on a short and a ten times longer run."""
    sizes = (2000, 20_000) if quick else (10_000, 100_000)
    names = tuple(f"{n // 1000}k" for n in sizes)
    derived = []
    for name in names:
        derived.append(
            Derived(f"history: peak KiB added ({name})", _extra(name, "history_rss_added_kib"))
        )
        derived.append(Derived(f"replay entries/s ({name})", _extra(name, "replay_entries_per_s")))
    return [
        Scenario(
            name="timetravel.history",
            description=(
                "iterate the whole history, then replay, of a finished run of "
                + " vs ".join(f"{n:,}" for n in sizes)
                + " steps (fresh process)"
            ),
            unit="runs",
            contenders=tuple(
                Contender(name, f"{__name__}:measure", {"steps": n})
                for name, n in zip(names, sizes, strict=True)
            ),
            reference=names[0],
            ratio="cost",
            derived=tuple(derived),
            max_rounds=2 if quick else 3,
        )
    ]
