"""Engine scenarios: what ``@durable`` and ``@step`` cost on top of the journal.

``steps.sequential.full`` / ``steps.sequential.process``
    A 10-step ``@durable`` function run many times in a row (one run at a time,
    sync) against the same function with its steps undecorated, and against the
    raw commit floor of ``journal_bench``. A run costs 12 commits (run start, one
    per step, run end), so the target, durable steps/s >= 0.70 x floor commits/s,
    asks the engine to keep ~84% of the floor per commit. A fourth contender,
    ``statements``, replays the engine's own SQL for one run (traced, then run by
    raw apsw under new run ids): what those commits cost with no Python around
    them, the ceiling for any implementation of them. A fifth, ``lean``, is a
    lean-Python replica of the same writes (the same statements, codec work,
    checksums and argument hash, in one plain loop over apsw with no engine or
    journal machinery): ``durable ÷ lean replica`` (target ≥ 0.9) is what the
    engine's machinery costs against Python written for this one job. Derived:
    overhead per step (µs) = durable time per step - plain time per step; CPU µs
    per step of durable and lean (run start and end included).

``runs.fixed_cost.full`` / ``runs.fixed_cost.process``
    A run's fixed cost (its start and its end: creating the run row with its
    first entry, finishing it) against its cost per step: sequential runs of a
    ``@durable`` function with 0 steps and with 10. The 0-step run's cost is the
    intercept; (10-step cost - 0-step cost) / 10 the cost per step. Target: the
    fixed cost (CPU) at most two steps' worth. The lean replica (see below) run
    with 0 and 10 steps gives the same figure for the statements themselves.

``steps.concurrent.100`` / ``steps.concurrent.1000``
    That many async runs of an async 10-step function in flight at once in one
    process (``asyncio.gather``), durability "full": their step commits share
    transactions through the group committer, so steps/s should beat the
    single-run floor (target ≥ 3x). Derived: requests per batch.

``memory.flat``
    Peak and current RSS after N vs 10N completed sequential runs (durability
    "process"): the ratio should stay ~1, i.e. nothing is kept per finished run.

``recovery.looping``
    A run crashed (``os._exit(137)`` inside its last step) after N completed
    steps; the time from starting a fresh process to the run's completion through
    ``Engine.recover()``. A ``@durable`` body replays from its first step on
    recovery (by design, as in Temporal/DBOS), so the cost is linear in N: the
    rate is steps replayed per second.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw

from engine import Engine, configure, durable, step
from journal import Journal
from journal._sqlite import open_connection
from journal.ids import new_run_id

from .harness import REPO, Contender, Derived, Sample, Scenario

STEPS = 10  # per run in the steps.* and memory scenarios
COMMITS_PER_RUN = STEPS + 2  # run start, one per step, run end
_CRASH_ENV = "DURABLE_BENCH_CRASH"


# -- the functions measured (module level: recovery imports them by name) ---------------


def _add_plain(x: int) -> int:
    return x + 1


async def _add_plain_async(x: int) -> int:
    return x + 1


_add = step(name="add")(_add_plain)
_add_async = step(name="add_async")(_add_plain_async)


def ten_plain(x: int) -> int:
    """The reference body: the same loop, steps undecorated."""
    for _ in range(STEPS):
        x = _add_plain(x)
    return x


@durable
def ten_steps(x: int) -> int:
    """Ten steps with small (int) results."""
    for _ in range(STEPS):
        x = _add(x)
    return x


@durable
def n_steps(x: int, n: int) -> int:
    """``n`` steps (0 for a run with none: its start and end alone)."""
    for _ in range(n):
        x = _add(x)
    return x


@durable
async def ten_steps_async(x: int) -> int:
    """The async twin: each step is awaited in turn."""
    for _ in range(STEPS):
        x = await _add_async(x)
    return x


@step(name="loop")
def _loop_step(i: int) -> int:
    return i


@step(name="last")
def _last_step(total: int) -> int:
    if os.environ.get(_CRASH_ENV):
        os._exit(137)  # the process dies inside the step: nothing of it is journaled
    return total


@durable
def looping(n: int) -> int:
    """``n`` completed steps, then one more: the one a crash interrupts."""
    total = 0
    for i in range(n):
        total += _loop_step(i)
    return _last_step(total)


# -- helpers ----------------------------------------------------------------------------


def _engine(workdir: Path, durability: str, **options: Any) -> Engine:
    # configure(): a DurableFunction asks the default engine for its codec, and an
    # unconfigured default engine would open ./durable.db in the repository.
    return configure(workdir / "durable.db", durability=durability, **options)


def _rss_kib() -> int:
    """Current resident set size (Linux); elsewhere the peak, which only grows."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss // 1024 if sys.platform == "darwin" else rss


def _count_commits(eng: Engine, fn: Any) -> tuple[int, int]:
    """Commits and entries one more run of ``fn`` makes (counted outside the timed loop)."""
    journal = eng.journal
    conn = journal.raw_connection()
    commits = 0

    def hook() -> bool:
        nonlocal commits
        commits += 1
        return False  # let the commit go ahead

    conn.set_commit_hook(hook)
    try:
        run_id = "count-commits"
        eng.call(fn, (0,), {}, run_id=run_id)
    finally:
        conn.set_commit_hook(None)
    return commits, journal.get_run(run_id).last_seq


def _child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


# -- contenders (each runs in its own child process: see harness.measure) -------------


def steps_durable(workdir: Path, *, durability: str, runs: int, warmup: int) -> Sample:
    """``runs`` sequential runs of the 10-step durable function; ops = steps."""
    eng = _engine(workdir, durability)
    for i in range(warmup):
        eng.call(ten_steps, (i,), {})
    cpu = time.process_time()
    start = time.perf_counter()
    for i in range(runs):
        eng.call(ten_steps, (i,), {})
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu
    commits, entries = _count_commits(eng, ten_steps)
    eng.close()
    return Sample(
        elapsed,
        runs * STEPS,
        {
            "runs": runs,
            "steps_per_run": STEPS,
            "commits_per_run": commits,
            "entries_per_run": entries,
            "us_per_run": elapsed / runs * 1e6,
            "us_per_commit": elapsed / (runs * commits) * 1e6,
            "cpu_us_per_step": cpu / (runs * STEPS) * 1e6,
        },
    )


def steps_durable_async(workdir: Path, *, durability: str, runs: int, warmup: int) -> Sample:
    """The async twin run alone: ``runs`` sequential awaited runs; ops = steps."""
    eng = _engine(workdir, durability)

    async def main() -> tuple[float, int]:
        for i in range(warmup):
            await eng.acall(ten_steps_async, (i,), {})
        inline = eng.committer().inline
        start = time.perf_counter()
        for i in range(runs):
            await eng.acall(ten_steps_async, (i,), {})
        return time.perf_counter() - start, eng.committer().inline - inline

    elapsed, inline = asyncio.run(main())
    eng.close()
    return Sample(
        elapsed,
        runs * STEPS,
        {"runs": runs, "us_per_run": elapsed / runs * 1e6, "inline_per_run": inline / runs},
    )


def _trace_one_run(eng: Engine) -> list[tuple[str, Any]]:
    """The statements (and their bindings) the engine executes for one ten_steps run."""
    conn = eng.journal.backend.conn  # type: ignore[attr-defined]
    traced: list[tuple[str, Any]] = []

    def tracer(_cursor: Any, sql: str, bindings: Any) -> bool:
        traced.append((sql, bindings))
        return True

    conn.exec_trace = tracer
    try:
        eng.call(ten_steps, (0,), {})
    finally:
        conn.exec_trace = None
    return traced


def steps_statements(workdir: Path, *, durability: str, runs: int, warmup: int) -> Sample:
    """The engine's own SQL for a run, replayed by raw apsw with no Python around it.

    One run of ``ten_steps`` is traced (every statement with its bindings), then
    replayed ``runs`` times on a fresh journal under new time-ordered run ids: what
    the commits cost with zero engine or journal Python, i.e. the best any
    implementation of these statements could reach. ops = steps.
    """
    (workdir / "traced").mkdir()
    eng = _engine(workdir / "traced", durability)
    for i in range(warmup):
        eng.call(ten_steps, (i,), {})
    traced = _trace_one_run(eng)
    traced_id = eng.journal.list_runs(limit=1, newest_first=True)[0].run_id
    eng.close()
    Journal(workdir / "replay.db", durability=durability).close()  # type: ignore[arg-type]
    conn = open_connection(
        str(workdir / "replay.db"), durability=durability, busy_timeout_ms=5000, readonly=False
    )
    run_ids = [new_run_id() for _ in range(warmup + runs)]
    plans = [
        [
            (sql, tuple(run_id if b == traced_id else b for b in binds) if binds else None)
            for sql, binds in traced
        ]
        for run_id in run_ids
    ]

    def replay(plan: list[tuple[str, Any]]) -> None:
        for sql, binds in plan:
            conn.execute(sql, binds).fetchall()

    for plan in plans[:warmup]:
        replay(plan)
    start = time.perf_counter()
    for plan in plans[warmup:]:
        replay(plan)
    elapsed = time.perf_counter() - start
    commits = sum(sql == "COMMIT" for sql, _ in traced)
    conn.close()
    return Sample(
        elapsed,
        runs * STEPS,
        {"runs": runs, "statements_per_run": len(traced), "commits_per_run": commits},
    )


def run_cost(workdir: Path, *, durability: str, steps: int, runs: int, warmup: int) -> Sample:
    """``runs`` sequential runs of ``n_steps`` with ``steps`` steps each; ops = runs."""
    eng = _engine(workdir, durability)
    for i in range(warmup):
        eng.call(n_steps, (i, steps), {})
    cpu = time.process_time()
    start = time.perf_counter()
    for i in range(runs):
        eng.call(n_steps, (i, steps), {})
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu
    eng.close()
    return Sample(
        elapsed,
        runs,
        {
            "runs": runs,
            "steps": steps,
            "us_per_run": elapsed / runs * 1e6,
            "cpu_us_per_run": cpu / runs * 1e6,
        },
    )


def lean_runner(path: str, durability: str, steps: int = STEPS) -> tuple[Callable[[int], int], Any]:
    """The lean replica's run (see :func:`steps_lean`) on a new journal at ``path``, and
    the connection to close."""
    from journal import JsonSerializer
    from journal._integrity import entry_checksum
    from journal._recorder import INSERT_ENTRY
    from journal._schema import RUN_COLUMNS, SEALED_COLUMNS, run_checksum
    from journal._sqlite import LAST_SEQ

    Journal(path, durability=durability).close()  # type: ignore[arg-type]
    conn = open_connection(path, durability=durability, busy_timeout_ms=5000, readonly=False)
    execute = conn.execute
    encode = JsonSerializer().encode
    crc = entry_checksum
    blake2b = hashlib.blake2b
    now = time.time
    owner = "lean:0"
    started_payload = encode({"owner": owner})
    insert_run = (
        f"INSERT INTO runs ({RUN_COLUMNS}, checksum) VALUES "
        "(?,?,?,?,?,?,NULL,NULL,?,?,?,?,?,?,?,?,?,?,?,?,0,?,?,?,?) ON CONFLICT (run_id) DO NOTHING"
    )
    guard = f"SELECT {LAST_SEQ}, runs.epoch, runs.status FROM runs WHERE runs.run_id = ?"
    sealed_guard = (
        f"SELECT {LAST_SEQ}, runs.epoch, {SEALED_COLUMNS}, runs.checksum FROM runs"
        " WHERE runs.run_id = ?"
    )
    finish = (
        "UPDATE runs SET updated_at = ?, last_seq = ?, status = ?, output = ?, checksum = ?,"
        " owner = NULL, lease_expires_at = NULL WHERE run_id = ?"
    )
    name = f"{__name__}:ten_steps"

    def one_run(x: int) -> int:
        run_id = new_run_id()
        t = now()
        data = encode({"args": [x], "kwargs": {}})
        sealed = [run_id, "function", name, "running", "json", data, None, None, t,
                  None, None, None, None, None, 0, "{}", None, 0]  # fmt: skip
        execute("BEGIN IMMEDIATE")
        execute(insert_run, (run_id, "function", name, "running", "json", data, t, t, 1, 1,
                             owner, t + 30.0, None, None, None, None, None, None, "{}", None, 0,
                             run_checksum(sealed)))  # fmt: skip
        execute(INSERT_ENTRY, (run_id, 1, "run.started", None, None, started_payload, "json",
                               t, crc(run_id, 1, "run.started", None, None, started_payload,
                                      "json", t)))  # fmt: skip
        execute("COMMIT")
        seq = 1
        for i in range(1, steps + 1):
            key = blake2b(repr(((x,), {})).encode(), digest_size=8).hexdigest()
            began = now()
            x = _add_plain(x)
            payload = encode(
                {"result": x, "attempt": 1, "started": began, "duration": now() - began}
            )
            step = f"add#{i}"
            t = now()
            execute("BEGIN IMMEDIATE")
            row = execute(guard, (run_id,)).fetchone()
            if row is None or row[0] != seq or row[1] != 1 or row[2] != "running":
                raise RuntimeError("guard")
            seq += 1
            execute(INSERT_ENTRY, (run_id, seq, "step.completed", step, key, payload, "json", t,
                                   crc(run_id, seq, "step.completed", step, key, payload,
                                       "json", t)))  # fmt: skip
            execute("COMMIT")
        output = encode(x)
        t = now()
        execute("BEGIN IMMEDIATE")
        row = execute(sealed_guard, (run_id,)).fetchone()
        if row is None or row[0] != seq or row[1] != 1 or run_checksum(row[2:-1]) != row[-1]:
            raise RuntimeError("guard")
        sealed[3], sealed[6] = "completed", output
        seq += 1
        execute(finish, (t, seq, "completed", output, run_checksum(sealed), run_id))
        done = crc(run_id, seq, "run.completed", None, None, None, "json", t)
        execute(INSERT_ENTRY, (run_id, seq, "run.completed", None, None, None, "json", t, done))
        execute("COMMIT")
        return x

    return one_run, conn


def steps_lean(
    workdir: Path,
    *,
    durability: str,
    runs: int,
    warmup: int,
    steps: int = STEPS,
    per_run: bool = False,
) -> Sample:
    """A lean-Python replica of what the engine writes for a run: no engine machinery.

    The same statements as the engine's (see ``steps_statements``) with the same
    work done in Python around them: the codec encodes the input, each step's
    completion and the output; each entry and the run row get their checksums; each
    step's key is a hash of its arguments; each step commit reads the guard and
    checks it. All of it written as one plain loop over apsw, the ceiling for a
    Python implementation of these writes. ops = steps (``per_run``: runs).
    """
    one_run, conn = lean_runner(str(workdir / "lean.db"), durability, steps)
    for i in range(warmup):
        one_run(i)
    cpu = time.process_time()
    start = time.perf_counter()
    for i in range(runs):
        one_run(i)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu
    conn.close()
    return Sample(
        elapsed,
        runs if per_run or not steps else runs * steps,
        {
            "runs": runs,
            "steps": steps,
            "cpu_us_per_step": cpu / (runs * steps) * 1e6 if steps else 0.0,
            "us_per_run": elapsed / runs * 1e6,
            "cpu_us_per_run": cpu / runs * 1e6,
        },
    )


def steps_plain(workdir: Path, *, runs: int) -> Sample:
    """The same body with plain function calls; ops = steps."""
    for i in range(min(runs, 1000)):
        ten_plain(i)
    start = time.perf_counter()
    for i in range(runs):
        ten_plain(i)
    elapsed = time.perf_counter() - start
    return Sample(elapsed, runs * STEPS, {"runs": runs})


def steps_concurrent(workdir: Path, *, in_flight: int, warmup: int) -> Sample:
    """``in_flight`` async runs gathered at once, durability "full"; ops = steps."""
    eng = _engine(workdir, "full")

    commits = 0

    def hook() -> bool:
        nonlocal commits
        commits += 1
        return False

    async def main() -> tuple[float, int, int]:
        await asyncio.gather(*(eng.acall(ten_steps_async, (i,), {}) for i in range(warmup)))
        committer = eng.committer()
        batches, requests = committer.batches, committer.requests
        eng.journal.raw_connection().set_commit_hook(hook)  # every commit, either thread
        start = time.perf_counter()
        results = await asyncio.gather(
            *(eng.acall(ten_steps_async, (i,), {}) for i in range(in_flight))
        )
        elapsed = time.perf_counter() - start
        eng.journal.raw_connection().set_commit_hook(None)
        assert results == [i + STEPS for i in range(in_flight)]
        return elapsed, committer.batches - batches, committer.requests - requests

    elapsed, batches, requests = asyncio.run(main())
    eng.close()
    return Sample(
        elapsed,
        in_flight * STEPS,
        {
            "runs": in_flight,
            "batches": batches,
            "requests": requests,
            "requests_per_batch": requests / batches if batches else 0.0,
            "commits": commits,
            # Commits outside the group committer: run starts (Engine._claim writes
            # each in its own transaction, on the event loop's thread).
            "commits_unbatched": commits - batches,
        },
    )


def memory_runs(workdir: Path, *, runs: int, durability: str) -> Sample:
    """``runs`` sequential 10-step runs; RSS after the first tenth and at the end."""
    eng = _engine(workdir, durability)
    tenth = max(runs // 10, 1)
    start = time.perf_counter()
    for i in range(tenth):
        eng.call(ten_steps, (i,), {})
    rss_tenth = _rss_kib()
    for i in range(tenth, runs):
        eng.call(ten_steps, (i,), {})
    elapsed = time.perf_counter() - start
    rss_end = _rss_kib()
    # SQLite's page cache grows with the file up to cache_size (default 2 MiB), then stops.
    sqlite_kib = apsw.memory_used() // 1024
    eng.close()
    return Sample(
        elapsed,
        runs,
        {
            "runs": runs,
            "rss_tenth_kib": rss_tenth,
            "rss_end_kib": rss_end,
            "sqlite_memory_kib": sqlite_kib,
            # Growth over the last nine tenths, per run: ~0 if nothing is kept per run.
            "bytes_per_run": (rss_end - rss_tenth) * 1024 / (runs - tenth),
        },
    )


_CRASH_CODE = """
import sys
from engine import Engine
from benchmarks.engine_bench import looping
eng = Engine(sys.argv[1], durability="process", lease_seconds=0)
eng.call(looping, (int(sys.argv[2]),), {}, run_id="looping")
raise SystemExit("the crash did not happen")
"""

_RECOVER_CODE = """
import json, resource, sys, time
t0 = time.perf_counter()
from engine import Engine
eng = Engine(sys.argv[1], durability=sys.argv[2])
t1 = time.perf_counter()
report = eng.recover(wait=True)
t2 = time.perf_counter()
assert report.run_ids == ["looping"] and not report.errors, (report.run_ids, report.errors)
n = int(sys.argv[3])
assert report.handles[0].result() == n * (n - 1) // 2
print(json.dumps({
    "startup_s": t1 - t0,
    "recover_s": t2 - t1,
    "entries_read": eng.journal.entries_read,
    "child_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
}))
eng.close()
"""


def recovery(workdir: Path, *, steps: int, durability: str) -> Sample:
    """Crash a run after ``steps`` steps (in a child); time a fresh process recovering it."""
    db = str(workdir / "durable.db")
    start = time.perf_counter()
    crash = subprocess.run(
        [sys.executable, "-c", _CRASH_CODE, db, str(steps)],
        cwd=workdir, env=_child_env(**{_CRASH_ENV: "1"}),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    build = time.perf_counter() - start
    if crash.returncode != 137:
        raise RuntimeError(f"crash child exited {crash.returncode}:\n{crash.stderr}")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _RECOVER_CODE, db, durability, str(steps)],
        cwd=workdir, env=_child_env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"recovery child exited {proc.returncode}:\n{proc.stderr}")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    return Sample(
        elapsed,
        steps,
        {
            **info,
            "steps": steps,
            "build_s": build,
            "replay_steps_per_s": steps / info["recover_s"],
        },
    )


# -- scenarios ---------------------------------------------------------------------------


def _us_per_op(sample: dict[str, Any]) -> float:
    return 1e6 / float(sample["rate"])


Round = dict[str, dict[str, Any]]  # {contender: sample} of one round, as Derived.fn gets it


def _sample(contender: str, key: str) -> Callable[[Round], float]:
    """A derived figure that is one field of one contender's sample."""
    return lambda r: float(r[contender][key])


def _extra(contender: str, key: str) -> Callable[[Round], float]:
    """A derived figure that is one of a contender's extras."""
    return lambda r: float(r[contender]["extra"][key])


def _sequential(durability: str, quick: bool) -> Scenario:
    runs = {"full": 30, "process": 200} if quick else {"full": 200, "process": 2000}
    floor_commits = {"full": 200, "process": 2000} if quick else {"full": 2000, "process": 20_000}
    return Scenario(
        name=f"steps.sequential.{durability}",
        description=(
            f"{runs[durability]} sequential runs of a {STEPS}-step @durable function, "
            f"durability={durability!r}: durable steps/s vs floor commits/s"
        ),
        unit="steps",
        contenders=(
            Contender(
                "floor",
                "benchmarks.journal_bench:append_floor",
                {"durability": durability, "commits": floor_commits[durability]},
            ),
            Contender(
                "durable",
                f"{__name__}:steps_durable",
                {"durability": durability, "runs": runs[durability], "warmup": 5},
            ),
            Contender(
                "statements",
                f"{__name__}:steps_statements",
                {"durability": durability, "runs": runs[durability], "warmup": 5},
                checked=False,
            ),
            Contender(
                "lean",
                f"{__name__}:steps_lean",
                {"durability": durability, "runs": runs[durability], "warmup": 5},
                checked=False,
            ),
            Contender(
                "plain",
                f"{__name__}:steps_plain",
                {"runs": 20_000 if quick else 100_000},
                checked=False,
            ),
        ),
        reference="floor",
        ratio="rate",
        target=(">=", 0.70),
        derived=(
            Derived(
                "overhead per step",
                lambda r: _us_per_op(r["durable"]) - _us_per_op(r["plain"]),
                "µs",
            ),
            Derived(
                "durable ÷ lean replica (steps/s)",
                lambda r: r["durable"]["rate"] / r["lean"]["rate"],
                target=(">=", 0.9),
            ),
            Derived(
                "lean ÷ durable (CPU per step)",
                lambda r: (
                    r["lean"]["extra"]["cpu_us_per_step"] / r["durable"]["extra"]["cpu_us_per_step"]
                ),
            ),
            Derived("durable CPU µs per step", _extra("durable", "cpu_us_per_step"), "µs"),
            Derived("lean CPU µs per step", _extra("lean", "cpu_us_per_step"), "µs"),
            Derived("commits per run", _extra("durable", "commits_per_run")),
            Derived(
                "durable commits/s ÷ floor",
                lambda r: r["durable"]["ratio"] * r["durable"]["extra"]["commits_per_run"] / STEPS,
            ),
            Derived("floor µs per commit", lambda r: _us_per_op(r["floor"]), "µs"),
            Derived("durable µs per commit", _extra("durable", "us_per_commit"), "µs"),
        ),
    )


def _fixed_cost(durability: str, quick: bool) -> Scenario:
    runs = {"full": 30, "process": 300} if quick else {"full": 200, "process": 2000}
    n = STEPS

    def per_step(r: Round, key: str, who: str = "") -> float:
        return (r[f"{who}{n} steps"]["extra"][key] - r[f"{who}0 steps"]["extra"][key]) / n

    return Scenario(
        name=f"runs.fixed_cost.{durability}",
        description=(
            f"{runs[durability]} sequential runs of a @durable function with 0 steps vs "
            f"{n} steps, durability={durability!r}: a run's start and end (the intercept) "
            "in steps' worth"
        ),
        unit="runs",
        contenders=tuple(
            Contender(
                f"{k} steps",
                f"{__name__}:run_cost",
                {"durability": durability, "steps": k, "runs": runs[durability], "warmup": 5},
            )
            for k in (0, n)
        )
        + tuple(
            Contender(
                f"lean {k} steps",
                f"{__name__}:steps_lean",
                {
                    "durability": durability,
                    "steps": k,
                    "runs": runs[durability],
                    "warmup": 5,
                    "per_run": True,
                },
                checked=False,
            )
            for k in (0, n)
        ),
        reference="0 steps",
        ratio="cost",
        derived=(
            Derived(
                "fixed cost in steps (CPU)",
                lambda r: r["0 steps"]["extra"]["cpu_us_per_run"] / per_step(r, "cpu_us_per_run"),
                target=("<=", 2.0),
            ),
            Derived(
                "fixed cost in steps (wall)",
                lambda r: r["0 steps"]["extra"]["us_per_run"] / per_step(r, "us_per_run"),
            ),
            Derived(
                "lean replica: fixed cost in steps (CPU)",
                lambda r: (
                    r["lean 0 steps"]["extra"]["cpu_us_per_run"]
                    / per_step(r, "cpu_us_per_run", "lean ")
                ),
            ),
            Derived("fixed CPU µs per run", _extra("0 steps", "cpu_us_per_run"), "µs"),
            Derived("lean fixed CPU µs per run", _extra("lean 0 steps", "cpu_us_per_run"), "µs"),
            Derived("CPU µs per step", lambda r: per_step(r, "cpu_us_per_run"), "µs"),
            Derived("fixed µs per run (wall)", _extra("0 steps", "us_per_run"), "µs"),
            Derived("µs per step (wall)", lambda r: per_step(r, "us_per_run"), "µs"),
        ),
    )


def _concurrent(in_flight: int, quick: bool) -> Scenario:
    return Scenario(
        name=f"steps.concurrent.{in_flight}",
        description=(
            f"{in_flight} async {STEPS}-step runs in flight (group commit), durability='full':"
            " steps/s vs floor commits/s"
        ),
        unit="steps",
        contenders=(
            Contender(
                "floor",
                "benchmarks.journal_bench:append_floor",
                {"durability": "full", "commits": 200 if quick else 2000},
            ),
            Contender(
                "concurrent",
                f"{__name__}:steps_concurrent",
                {"in_flight": in_flight, "warmup": 10},
            ),
        ),
        reference="floor",
        ratio="rate",
        target=(">=", 3.0),
        derived=(
            Derived("committer batches", _extra("concurrent", "batches")),
            Derived("requests per batch", _extra("concurrent", "requests_per_batch")),
            Derived("commits outside group commit", _extra("concurrent", "commits_unbatched")),
        ),
    )


def _async_alone(durability: str, quick: bool) -> Scenario:
    runs = {"full": 30, "process": 200} if quick else {"full": 200, "process": 2000}
    args = {"durability": durability, "runs": runs[durability], "warmup": 5}
    return Scenario(
        name=f"steps.async_alone.{durability}",
        description=(
            f"{runs[durability]} sequential runs of the {STEPS}-step function, async (awaited"
            f" one at a time) vs sync, durability={durability!r}: steps/s"
        ),
        unit="steps",
        contenders=(
            Contender("sync", f"{__name__}:steps_durable", args),
            Contender("async", f"{__name__}:steps_durable_async", args),
        ),
        reference="sync",
        ratio="rate",
        target=(">=", 0.9),
        derived=(
            Derived(
                "commits written on the loop's thread per run", _extra("async", "inline_per_run")
            ),
        ),
    )


def _memory(quick: bool) -> Scenario:
    small, large = (200, 2000) if quick else (1000, 10_000)
    names = (f"{small:,}", f"{large:,}")
    return Scenario(
        name="memory.flat",
        description=(
            f"RSS after {small:,} vs {large:,} completed sequential runs, durability='process'"
        ),
        unit="runs",
        contenders=tuple(
            Contender(name, f"{__name__}:memory_runs", {"runs": n, "durability": "process"})
            for name, n in zip(names, (small, large), strict=True)
        ),
        reference=names[0],
        ratio="rate",
        derived=(
            Derived(
                "peak RSS ratio",
                lambda r: r[names[1]]["maxrss_kib"] / r[names[0]]["maxrss_kib"],
                target=("<=", 1.10),
            ),
            Derived(
                "end RSS ratio",
                lambda r: r[names[1]]["extra"]["rss_end_kib"] / r[names[0]]["extra"]["rss_end_kib"],
            ),
            Derived(
                f"growth per run ({names[1]})",
                _extra(names[1], "bytes_per_run"),
                "B",
            ),
            Derived(
                "growth per run (across)",
                lambda r: (
                    (r[names[1]]["extra"]["rss_end_kib"] - r[names[0]]["extra"]["rss_end_kib"])
                    * 1024
                    / (large - small)
                ),
                "B",
            ),
        ),
    )


def _recovery(quick: bool) -> Scenario:
    # 100,000 steps: the crashed state alone takes ~10 s to build at durability
    # "process", and the replay scales linearly; run it with --only recovery.
    sizes = (1000, 10_000) if quick else (1000, 10_000, 100_000)
    names = tuple(f"{n // 1000}k" for n in sizes)
    derived = [
        Derived(f"replay steps/s ({name})", _extra(name, "replay_steps_per_s")) for name in names
    ]
    derived += [
        Derived(f"fresh process → done ({name})", _sample(name, "seconds"), "s") for name in names
    ]
    derived.append(Derived("process startup + imports", _extra(names[0], "startup_s"), "s"))
    return Scenario(
        name="recovery.looping",
        description=(
            "fresh process recovering a run crashed after N completed steps: "
            + " vs ".join(f"{n:,}" for n in sizes)
        ),
        unit="steps",
        contenders=tuple(
            Contender(name, f"{__name__}:recovery", {"steps": n, "durability": "full"})
            for name, n in zip(names, sizes, strict=True)
        ),
        reference=names[0],
        ratio="rate",
        derived=tuple(derived),
    )


def scenarios(quick: bool) -> list[Scenario]:
    return [
        _sequential("full", quick),
        _sequential("process", quick),
        _fixed_cost("full", quick),
        _fixed_cost("process", quick),
        _async_alone("full", quick),
        _async_alone("process", quick),
        _concurrent(100, quick),
        _concurrent(1000, quick),
        _memory(quick),
        _recovery(quick),
    ]
