"""Scaling scenarios: worker processes sharing one journal, PostgreSQL beside SQLite.

``scaling.workers``
    Queued runs of a 10-step ``@durable`` function (sync, its steps return at once)
    drained by 1, 2 and 4 worker processes (``Engine.worker``, 8 runs at once each),
    on a PostgreSQL journal and on a journal file, durability "full" on both (PG:
    ``fsync=on``, ``synchronous_commit=on``; SQLite: WAL, ``synchronous=FULL``). The
    runs are enqueued first; the workers are started, open the journal, and are told
    to go together; the time is from "go" to the last run's completion as the journal
    stamps it (``runs.updated_at``), so process start-up is not in it. Ratios are to
    one worker on SQLite; derived: PostgreSQL ÷ SQLite at each worker count, each
    backend's 4-worker ÷ 1-worker rate, and the CPU a step costs: the workers' (their
    process time from "go" to stop) plus, on PostgreSQL, the server's (the postmaster's
    process tree, from ``/proc``).

``scaling.takeover``
    A worker is SIGKILLed while executing a run; another worker, idle and polling,
    takes the run over once the dead one's lease expires. The figure is the seconds
    from the SIGKILL to the first step the other worker executes for that run (lease
    2 s, so the heartbeat renews every 0.67 s; poll interval 1 s, the default). It is
    lease left at the kill + until the next poll + loading the run and replaying its
    completed steps; the parts are in the extras. The kill falls at a random moment
    of both cycles (heartbeat and poll), so the rounds sample their phases.

Each PostgreSQL measurement starts its own throwaway server (``TempCluster``: initdb
into a private directory, ``fsync`` on) and stops it after; without PostgreSQL on the
machine the PostgreSQL contenders are listed as skipped, with the reason.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from engine import Engine, configure, durable, step
from journal import Journal
from journal.pg_cluster import ClusterUnavailable, TempCluster, find_bindir

from .harness import REPO, Contender, Derived, Sample, Scenario

STEPS = 10
_LOG_ENV = "DURABLE_SCALING_LOG"


# -- the functions the workers execute (imported by name in each worker) -----------------


@step(name="scaling.add")
def _add(x: int) -> int:
    return x + 1


@durable(name="scaling.ten_steps")
def ten_steps(x: int) -> int:
    """The drained workload: ten steps, each returning at once."""
    for _ in range(STEPS):
        x = _add(x)
    return x


_log_fd: int | None = None


@step(name="scaling.tick")
def _tick(i: int) -> int:
    """One step of the run taken over: logs ``<time> <pid> <i>``, then takes 20 ms."""
    global _log_fd
    if _log_fd is None:
        _log_fd = os.open(os.environ[_LOG_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(_log_fd, f"{time.time():.6f} {os.getpid()} {i}\n".encode())
    time.sleep(0.02)
    return i


@durable(name="scaling.long_run")
def long_run(n: int) -> int:
    """A run long enough to be killed in the middle of."""
    return sum(_tick(i) for i in range(n))


# -- worker processes ------------------------------------------------------------------------

_WORKER_CODE = "from benchmarks.scaling_bench import worker_main; worker_main()"


def worker_main() -> None:
    """A worker process: ``ready`` once the journal is open, claims after ``go`` on stdin,
    stops on SIGTERM. Arguments: LOCATION LEASE_SECONDS CONCURRENCY POLL_INTERVAL."""
    location, lease, concurrency, poll = sys.argv[1:5]
    eng = configure(location, lease_seconds=float(lease))
    eng.journal  # noqa: B018 - open before "ready": start-up stays out of the timing
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    cpu = time.process_time()
    eng.worker(concurrency=int(concurrency), poll_interval=float(poll), stop=stop)
    print(f"cpu {time.process_time() - cpu}", flush=True)
    eng.close()


class _Worker:
    def __init__(self, location: str, *, lease: float, concurrency: int, poll: float,
                 env: dict[str, str]) -> None:  # fmt: skip
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER_CODE, location, str(lease), str(concurrency),
             str(poll)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, cwd=REPO, env=env,
        )  # fmt: skip

    def ready(self) -> _Worker:
        """Wait for the worker's ``ready`` (start several, then wait: they start in parallel)."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.proc.kill()
            _, err = self.proc.communicate()
            raise RuntimeError(f"a worker did not start: {line!r}\n{err}")
        return self

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def stop(self) -> float:
        """Stop the worker; return the CPU seconds it used after "go" (0 if it said none)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        said = [line.split()[1] for line in out.splitlines() if line.startswith("cpu ")]
        return float(said[0]) if said else 0.0

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def _tree_cpu(pid: int) -> float:
    """CPU seconds of process ``pid``, its live children and the children it reaped
    (Linux ``/proc``): a PostgreSQL server's postmaster, its backends and helpers."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended while we looked
        ppid, utime, stime, cutime, cstime = (int(fields[i]) for i in (1, 11, 12, 13, 14))
        if stat.parent.name == str(pid):
            total += utime + stime + cutime + cstime
        elif ppid == pid:
            total += utime + stime
    return total / tick


@contextlib.contextmanager
def _location(workdir: Path, backend: str) -> Iterator[tuple[str, str, Callable[[], float]]]:
    """A fresh journal location, a note on its durability, and the server's CPU seconds
    so far (0 for a journal file: its CPU is the workers')."""
    if backend == "sqlite":
        yield str(workdir / "durable.db"), "WAL, synchronous=FULL", lambda: 0.0
        return
    with TempCluster() as cluster:
        postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
        url = f"{cluster.url}?schema=bench"
        with Journal(url) as j:
            s = j.query(
                "SELECT current_setting('fsync') AS fsync,"
                " current_setting('synchronous_commit') AS sc,"
                " current_setting('server_version') AS v"
            )[0]
        version = s["v"].split()[0]
        note = f"PostgreSQL {version}, fsync={s['fsync']}, synchronous_commit={s['sc']}"
        yield url, note, lambda: _tree_cpu(postmaster)


def _wait_for(done: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


# -- contenders ------------------------------------------------------------------------------


def drain(workdir: Path, *, backend: str, workers: int, runs: int, concurrency: int) -> Sample:
    """``runs`` queued runs of :func:`ten_steps` drained by ``workers`` processes; ops = steps."""
    with _location(workdir, backend) as (location, note, server_cpu):
        eng = Engine(location)
        ten_steps._engine = eng
        try:
            for i in range(runs):
                ten_steps.enqueue(i, run_id=f"drain-{i}")
        finally:
            ten_steps._engine = None
        pool = [_Worker(location, lease=30.0, concurrency=concurrency, poll=1.0, env=_env())
                for _ in range(workers)]  # fmt: skip
        cpu: list[float] = []
        try:
            for w in pool:
                w.ready()
            server_before = server_cpu()
            start = time.time()
            for w in pool:
                w.go()
            journal = eng.journal

            def left() -> int:
                rows = journal.query("SELECT count(*) AS n FROM runs WHERE status <> 'completed'")
                return int(rows[0]["n"])

            _wait_for(lambda: left() == 0, 600, "the runs to complete")
        finally:
            cpu = [w.stop() for w in pool]
        server = server_cpu() - server_before  # includes our polling: a query per 50 ms
        done = journal.query("SELECT max(updated_at) AS end FROM runs")
        elapsed = float(done[0]["end"]) - start
        wrong = [
            r.run_id
            for r in journal.list_runs(limit=None)
            if journal.decode(r.output, r.codec, where=r.run_id) != int(r.run_id[6:]) + STEPS
        ]
        eng.close()
    if wrong:
        raise RuntimeError(f"wrong results: {wrong[:5]}")
    return Sample(
        elapsed,
        runs * STEPS,
        {
            "runs": runs,
            "workers": workers,
            "concurrency": concurrency,
            "runs_per_s": runs / elapsed,
            # CPU per step: the workers' from "go" to their stop, the server's likewise.
            "worker_cpu_us_per_step": sum(cpu) / (runs * STEPS) * 1e6,
            "server_cpu_us_per_step": server / (runs * STEPS) * 1e6,
            "durability_note": note,
        },
    )


def takeover(workdir: Path, *, backend: str, lease: float, poll: float) -> Sample:
    """SIGKILL the worker executing a run; seconds until another executes its next step."""
    log = workdir / "ticks.log"
    env = _env(**{_LOG_ENV: str(log)})
    with _location(workdir, backend) as (location, note, _):
        eng = Engine(location)
        long_run._engine = eng
        try:
            long_run.enqueue(100_000, run_id="long")
        finally:
            long_run._engine = None

        def lines() -> list[tuple[float, int, int]]:
            if not log.exists():
                return []
            rows = [line.split() for line in log.read_text().splitlines()]
            return [(float(t), int(pid), int(i)) for t, pid, i in rows]

        first = _Worker(location, lease=lease, concurrency=1, poll=poll, env=env)
        second = None
        try:
            first.ready().go()
            _wait_for(lambda: len(lines()) >= 5, 60, "the first worker to run steps")
            second = _Worker(location, lease=lease, concurrency=1, poll=poll, env=env)
            second.ready().go()
            # At a random moment of the second worker's poll and the first's heartbeat
            # cycles: a fixed delay would measure one phase of them only.
            time.sleep(poll + random.uniform(0, max(poll, lease / 3)))
            killed_at = time.time()
            first.kill()
            run = eng.journal.get_run("long")
            theirs = second.proc.pid

            _wait_for(lambda: any(pid == theirs for _, pid, _ in lines()), 60, "the takeover")
            resumed_at, _, resumed_step = next(r for r in lines() if r[1] == theirs)
            done_before = max(i for _, pid, i in lines() if pid == first.proc.pid)
        finally:
            first.kill()
            if second is not None:
                second.kill()
        eng.close()
    seconds = resumed_at - killed_at
    expires = run.lease_expires_at or killed_at
    return Sample(
        seconds,
        1,
        {
            "takeover_s": seconds,
            "lease_seconds": lease,
            "poll_interval": poll,
            "lease_left_at_kill_s": expires - killed_at,
            "expiry_to_first_step_s": resumed_at - expires,
            "steps_before_kill": done_before + 1,
            "resumed_at_step": resumed_step,
            "durability_note": note,
        },
    )


# -- scenarios -------------------------------------------------------------------------------


def _pg_missing() -> str | None:
    try:
        find_bindir()
    except ClusterUnavailable as exc:
        return f"PostgreSQL cannot be started: {exc}"
    return None


def _split(contenders: list[Contender], missing: str | None) -> dict[str, Any]:
    """PostgreSQL contenders go to ``skipped`` when the server cannot be started."""
    if missing is None:
        return {"contenders": tuple(contenders)}
    return {
        "contenders": tuple(c for c in contenders if not c.name.startswith("pg")),
        "skipped": tuple((c.name, missing) for c in contenders if c.name.startswith("pg")),
    }


def _ratio(a: str, b: str) -> Callable[[dict[str, dict[str, Any]]], float]:
    return lambda r: float(r[a]["rate"]) / float(r[b]["rate"])


def _workers(quick: bool, missing: str | None) -> Scenario:
    # The smoke run: two workers on each backend, a few runs.
    counts = (2,) if quick else (1, 2, 4)
    runs = 20 if quick else 300
    contenders = [
        Contender(
            f"{backend}/{n}",
            f"{__name__}:drain",
            {"backend": backend, "workers": n, "runs": runs, "concurrency": 8},
            optional=backend == "pg",
        )
        for n in counts
        for backend in ("sqlite", "pg")
    ]
    derived = [
        Derived(f"pg ÷ sqlite, {n} workers", _ratio(f"pg/{n}", f"sqlite/{n}")) for n in counts
    ]
    derived += [
        Derived(f"{c.name}: CPU per step, workers + server", _cpu_per_step(c.name), "µs")
        for c in contenders
    ]
    if len(counts) > 1:
        top = counts[-1]
        derived += [
            Derived(f"{b} {top} workers ÷ 1", _ratio(f"{b}/{top}", f"{b}/1"))
            for b in ("sqlite", "pg")
        ]
    return Scenario(
        name="scaling.workers",
        description=(
            f"{runs} queued {STEPS}-step runs drained by "
            + "/".join(map(str, counts))
            + " worker processes, PostgreSQL vs SQLite, durability='full'"
        ),
        unit="steps",
        reference=f"sqlite/{counts[0]}",
        ratio="rate",
        derived=tuple(derived),
        max_rounds=1 if quick else None,
        **_split(contenders, missing),
    )


def _takeover(quick: bool, missing: str | None) -> Scenario:
    lease, poll = (0.6, 0.1) if quick else (2.0, 1.0)
    # The smoke run measures one backend: PostgreSQL, or SQLite where it cannot start.
    backends = ("pg",) if quick and missing is None else ("sqlite", "pg")
    measured = [b for b in backends if b == "sqlite" or missing is None]
    contenders = [
        Contender(
            b,
            f"{__name__}:takeover",
            {"backend": b, "lease": lease, "poll": poll},
            optional=b != measured[0],
        )
        for b in backends
    ]
    derived = []
    for b in measured:
        derived += [
            Derived(f"{b}: kill → first step elsewhere", _extra(b, "takeover_s"), "s"),
            Derived(f"{b}: lease left at the kill", _extra(b, "lease_left_at_kill_s"), "s"),
            Derived(f"{b}: lease expiry → first step", _extra(b, "expiry_to_first_step_s"), "s"),
        ]
    return Scenario(
        name="scaling.takeover",
        description=(
            f"SIGKILL the worker running a run: seconds until another worker runs its next "
            f"step (lease {lease:g} s, heartbeat every {lease / 3:.2g} s, poll {poll:g} s)"
        ),
        unit="takeovers",
        reference=measured[0],
        ratio="cost",
        derived=tuple(derived),
        max_rounds=1 if quick else None,
        **_split(contenders, missing),
    )


def _cpu_per_step(contender: str) -> Callable[[dict[str, dict[str, Any]]], float]:
    def cpu(r: dict[str, dict[str, Any]]) -> float:
        extra = r[contender]["extra"]
        return float(extra["worker_cpu_us_per_step"] + extra["server_cpu_us_per_step"])

    return cpu


def _extra(contender: str, key: str) -> Callable[[dict[str, dict[str, Any]]], float]:
    return lambda r: float(r[contender]["extra"][key])


def scenarios(quick: bool) -> list[Scenario]:
    missing = _pg_missing()
    return [_workers(quick, missing), _takeover(quick, missing)]
