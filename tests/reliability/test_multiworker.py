"""Many worker processes draining one PostgreSQL journal while workers die and stall.

Worker processes (``tests/_procs/multiworker_child.py``, ``Engine.worker`` with a 1.5 s
lease, plus one ``durable worker`` from the command line) drain thousands of queued
runs of a 3-step function (``tests/_procs/multiworker_workload.py``). Meanwhile the
test SIGKILLs workers (and starts replacements) and SIGSTOPs others for longer than the
lease, then SIGCONTs them: their runs are taken over by the others, and when they wake
they must be fenced off. Every step execution appends a line to a side-effect log
(write + fsync) and returns a fresh token that the journal keeps, so the test proves:

- every run completed exactly once (one ``run.completed``), with the right result;
- each step committed exactly one execution, and that execution is in the log;
- any other execution of a step (its completion never committed) was the *last*
  thing a killed or stopped worker did for that run: a worker that lost its lease
  wrote nothing more for it, and no worker ran a completed step again.

A queue limit holds across processes: ``Queue("limited", concurrency=3)`` drained by
3 workers of 4 slots each never has more than 3 runs between their ``begin`` and
``end`` lines in the log (the log's order is the order of the writes).

The separate-hosts variant runs the workers in two network namespaces (each joined to
the server's namespace by a veth pair; the server listens on both addresses) and also
cuts one host off the network for longer than the lease. It needs root and ``ip
netns``; where these are missing it is skipped with the reason.

``DURABLE_MULTIWORKER_RUNS`` (default 2000) and ``DURABLE_MULTIWORKER_SEED`` change the
size and the chaos schedule; a failure prints the seed to replay it.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psycopg
import pytest
from _children import REPO

from engine import Engine
from engine.worker import Worker
from journal import EntryKind, Journal, _claims
from journal.pg_cluster import ClusterUnavailable, TempCluster

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(240)]

PROCS = REPO / "tests" / "_procs"
CHILD = PROCS / "multiworker_child.py"
sys.path.insert(0, str(PROCS))

import multiworker_workload as workload  # noqa: E402 - needs tests/_procs on sys.path

RUNS = int(os.environ.get("DURABLE_MULTIWORKER_RUNS", "2000"))
LEASE = 1.5  # seconds: takeovers within ~2 s
POLL = 0.2  # an expired lease is noticed by polling (nothing notifies it)
DEADLINE = 150.0  # seconds for a drain, chaos included


def _seed() -> int:
    return int(os.environ.get("DURABLE_MULTIWORKER_SEED") or random.randrange(1 << 30))


# -- worker processes ------------------------------------------------------------------


def _read_and_close(stream: IO[str]) -> None:
    stream.read()
    stream.close()


@dataclass
class Fleet:
    """The worker processes of one test, and what was done to each."""

    tmp: Path
    url: Callable[[str | None], str]  # the URL a worker on a host (netns or None) uses
    log: Path
    concurrency: int = 4
    lease: float = LEASE
    procs: dict[int, subprocess.Popen[str]] = field(default_factory=dict)
    host_of: dict[int, str | None] = field(default_factory=dict)
    killed: set[int] = field(default_factory=set)
    stopped: set[int] = field(default_factory=set)  # ever SIGSTOPped
    cut_off: set[int] = field(default_factory=set)  # on a host the network lost
    paused: dict[int, float] = field(default_factory=dict)  # pid -> monotonic resume time

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), str(PROCS),
                                                          env.get("PYTHONPATH")]))  # fmt: skip
        env["MULTIWORKER_LOG"] = str(self.log)
        return env

    def spawn(self, host: str | None = None) -> int:
        """Start an ``Engine.worker`` process (in netns ``host``) and wait for it to be ready."""
        argv = [sys.executable, str(CHILD), self.url(host), str(self.lease),
                str(self.concurrency), str(POLL)]  # fmt: skip
        if host is not None:
            argv = ["ip", "netns", "exec", host, *argv]  # exec: the pid stays the worker's
        return self._start(argv, expect="ready", host=host)

    def spawn_cli(self) -> int:
        """Start ``durable worker`` (the command line, its default 30 s lease); never disturbed."""
        argv = [sys.executable, "-m", "engine.cli", "worker", "--db", self.url(None),
                "--import", "multiworker_workload", "--concurrency", str(self.concurrency),
                "--poll", str(POLL)]  # fmt: skip
        return self._start(argv, expect="worker ", host=None)

    def _start(self, argv: list[str], *, expect: str, host: str | None) -> int:
        n = len(self.procs)
        with (self.tmp / f"worker-{n}.err").open("w") as err:  # the child keeps its copy
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True,
                                    env=self._env(), cwd=self.tmp)  # fmt: skip
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith(expect):
            proc.kill()
            proc.wait()
            errors = (self.tmp / f"worker-{n}.err").read_text()
            raise AssertionError(f"worker {argv} did not start: {line!r}\n{errors}")
        # Its further output (the CLI prints a line per run) is read and dropped.
        threading.Thread(target=_read_and_close, args=(proc.stdout,), daemon=True).start()
        self.procs[proc.pid] = proc
        self.host_of[proc.pid] = host
        self.note(f"started {' '.join(argv[-6:])}", proc.pid)
        return proc.pid

    def alive(self, host: object = ...) -> list[int]:
        """Workers neither killed nor paused (on ``host``, if given); the CLI worker excluded."""
        return [
            pid
            for pid, p in self.procs.items()
            if pid not in self.killed and pid not in self.paused and p.returncode is None
            and (host is ... or self.host_of[pid] == host)
            and p.args[1:3] != ["-m", "engine.cli"]
        ]  # fmt: skip

    def note(self, what: str, pid: int) -> None:
        """Record a chaos event beside the side-effect log (for a failure's post-mortem)."""
        with (self.tmp / "chaos.log").open("a") as f:
            f.write(f"{time.time():.6f} {pid} {what}\n")

    def kill(self, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)
        self.procs[pid].wait()
        self.killed.add(pid)
        self.note("SIGKILL", pid)

    def pause(self, pid: int, seconds: float) -> None:
        os.kill(pid, signal.SIGSTOP)
        self.stopped.add(pid)
        self.paused[pid] = time.monotonic() + seconds
        self.note(f"SIGSTOP for {seconds:.2f}s", pid)

    def resume_due(self, now: float | None = None) -> None:
        for pid, due in list(self.paused.items()):
            if now is None or due <= now:
                os.kill(pid, signal.SIGCONT)
                del self.paused[pid]
                self.note("SIGCONT", pid)

    def disturbed(self) -> set[int]:
        """Workers whose last step of a run may have been discarded."""
        return self.killed | self.stopped | self.cut_off

    def stop(self) -> None:
        """Resume the paused, then stop every worker: SIGTERM (the CLI: SIGINT) and wait."""
        self.resume_due()
        for p in self.procs.values():
            if p.returncode is None:
                cli = p.args[1:3] == ["-m", "engine.cli"]
                p.send_signal(signal.SIGINT if cli else signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def crashed(self) -> dict[int, str]:
        """Workers (not killed by the test) that did not exit cleanly: pid -> their stderr."""
        return {
            pid: (self.tmp / f"worker-{n}.err").read_text()[-2000:]
            for n, (pid, p) in enumerate(self.procs.items())
            if pid not in self.killed and p.returncode != 0
        }


# -- the checks ------------------------------------------------------------------------


@dataclass
class LogLine:
    index: int  # position in the log: the order the writes happened
    pid: int
    run_id: str
    what: str
    token: str
    epoch: int  # the claim the execution ran under


def read_log(path: Path) -> list[LogLine]:
    lines = []
    for i, text in enumerate(path.read_text().splitlines()):
        _, pid, run_id, what, token, epoch = text.split(" ")
        lines.append(LogLine(i, int(pid), run_id, what, token, int(epoch)))
    return lines


@dataclass
class Outcome:
    executions: int = 0
    discarded: int = 0  # executions whose completion never committed
    discarded_by_stopped: int = 0
    taken_from_stopped: int = 0  # runs a stopped (SIGSTOP) worker committed steps of, then lost
    taken_over: int = 0  # runs whose steps were committed by more than one worker


def check_drained(journal: Journal, log: list[LogLine], n: int, disturbed: set[int],
                  stopped: set[int], *,
                  cut_off: frozenset[int] = frozenset()) -> Outcome:  # fmt: skip
    """Every run completed once with the right result; every extra execution allowed.

    A worker ``cut_off`` from the database stops the runs it could not commit (nothing
    written) and may claim one of them again once the network is back: it may run that
    run's uncommitted step again, and go on with the run."""
    out = Outcome(executions=len(log))
    by_step: dict[tuple[str, str], list[LogLine]] = defaultdict(list)
    # (pid, run, epoch) -> index of the last line of that claim of the run by that pid
    last_of: dict[tuple[int, str, int], int] = {}
    for line in log:
        by_step[line.run_id, line.what].append(line)
        last_of[line.pid, line.run_id, line.epoch] = line.index
    expected_steps = {str(k) for k in range(1, workload.STEPS + 1)}
    run_ids = {f"mw-{i}" for i in range(n)}
    assert {r for r, _ in by_step} == run_ids, "steps logged for runs that were never queued"
    for i in range(n):
        run_id = f"mw-{i}"
        run = journal.get_run(run_id)
        assert run.status == "completed", (run_id, run.status, run.error)
        assert journal.decode(run.output, run.codec, where=run_id) == workload.expected(i)
        entries = list(journal.read(run_id))
        kinds = [e.kind for e in entries]
        assert kinds.count(EntryKind.RUN_COMPLETED) == 1, (run_id, kinds)
        done = [e for e in entries if e.kind == EntryKind.STEP_COMPLETED]
        assert [e.step for e in done] == [f"work#{k}" for k in range(1, workload.STEPS + 1)]
        committers = set()
        for k, e in enumerate(done, start=1):
            result = journal.decode_entry(e)["result"]
            committers.add(result["pid"])
            runs_of_step = by_step[run_id, str(k)]
            claims = [(line.pid, line.epoch) for line in runs_of_step if line.pid not in cut_off]
            assert len(claims) == len(set(claims)), f"{run_id} step {k}: a claim ran it twice"
            committed = [line for line in runs_of_step if line.token == result["token"]]
            assert len(committed) == 1 and committed[0].pid == result["pid"], (
                f"{run_id} step {k}: the committed execution {result} is not in the log"
            )
            for line in runs_of_step:
                if line is committed[0]:
                    continue
                out.discarded += 1
                out.discarded_by_stopped += line.pid in stopped
                assert line.pid in disturbed, (
                    f"{run_id} step {k} also ran on worker {line.pid}, which was never "
                    "killed, stopped or cut off: a completed step ran again"
                )
                last = last_of[line.pid, run_id, line.epoch]
                assert line.pid in cut_off or last == line.index, (
                    f"{run_id} step {k}: worker {line.pid} went on after an execution whose "
                    "completion was not committed (not fenced off)"
                )
        assert {line.what for line in log if line.run_id == run_id} <= expected_steps
        out.taken_over += len(committers) > 1
        out.taken_from_stopped += len(committers) > 1 and bool(committers & stopped)
    return out


def check_limit(log: list[LogLine], n: int) -> int:
    """The most runs of the limited queue between ``begin`` and ``end`` at once."""
    open_runs: set[str] = set()
    peak = 0
    for line in log:
        if line.what == "begin":
            open_runs.add(line.run_id)
            peak = max(peak, len(open_runs))
        elif line.what == "end":
            open_runs.discard(line.run_id)
    assert sum(line.what == "end" for line in log) == n
    return peak


# -- chaos -----------------------------------------------------------------------------


def enqueue_all(url: str, n: int) -> Engine:
    eng = Engine(url, durability="process", lease_seconds=LEASE)
    workload.job._engine = eng
    try:
        for i in range(n):
            workload.job.enqueue(i, run_id=f"mw-{i}", priority=i % 3)
    finally:
        workload.job._engine = None
    return eng


def unfinished(journal: Journal) -> int:
    rows = journal.query("SELECT count(*) AS n FROM runs WHERE status <> 'completed'")
    return int(rows[0]["n"])


def drain_with_chaos(
    fleet: Fleet,
    journal: Journal,
    rng: random.Random,
    *,
    hosts: list[str | None],
    max_kills: int,
    max_pauses: int,
    cut: Callable[[str, bool], None] | None = None,
    feeder: threading.Thread | None = None,
    first: str | None = None,
) -> dict[str, int]:
    """Until ``feeder`` (enqueuing) has ended and every run is done: every 0.4-0.9 s,
    SIGKILL a worker (and start another on its host), SIGSTOP one for 1.5-3x the lease,
    or (with ``cut``) take a host off the network for 2x the lease. ``first`` fixes the
    first action (while the backlog is full, so its victims hold runs). Returns what
    was done."""
    done = {"kills": 0, "pauses": 0, "cuts": 0}
    deadline = time.monotonic() + DEADLINE
    next_event = time.monotonic() + rng.uniform(0.4, 0.9)
    cut_until: tuple[str, float] | None = None
    while (feeder is not None and feeder.is_alive()) or unfinished(journal):
        now = time.monotonic()
        assert now < deadline, f"runs still unfinished after {DEADLINE}s: {done}"
        fleet.resume_due(now)
        if cut_until is not None and cut_until[1] <= now:
            assert cut is not None
            cut(cut_until[0], False)
            fleet.note(f"network back: {cut_until[0]}", 0)
            cut_until = None
        if now >= next_event:
            next_event = now + rng.uniform(0.4, 0.9)
            choices = []
            if done["kills"] < max_kills:
                choices.append("kill")
            if done["pauses"] < max_pauses and not fleet.paused:
                choices.append("pause")
            if cut is not None and cut_until is None and done["cuts"] < 2:
                choices.append("cut")
            action = rng.choice(choices) if choices else None
            if first is not None and not any(done.values()):
                action = first
            # Workers on a host that is cut off are left alone (a replacement could not connect).
            victims = [
                p for p in fleet.alive() if cut_until is None or fleet.host_of[p] != cut_until[0]
            ]
            if action == "kill" and victims:
                pid = rng.choice(victims)
                fleet.kill(pid)
                fleet.spawn(fleet.host_of[pid])
                done["kills"] += 1
            elif action == "pause" and len(victims) > 1:
                fleet.pause(rng.choice(victims), rng.uniform(1.5, 3.0) * fleet.lease)
                done["pauses"] += 1
            elif action == "cut":
                host = rng.choice([h for h in hosts if h is not None])
                fleet.cut_off.update(fleet.alive(host))
                fleet.note(f"network cut: {host}", 0)
                cut(host, True)
                cut_until = (host, now + 2 * fleet.lease)
                done["cuts"] += 1
        time.sleep(0.05)  # the chaos schedule's tick, not a synchronisation
    if cut_until is not None:
        assert cut is not None
        cut(cut_until[0], False)
    return done


@pytest.fixture
def seed() -> Iterator[int]:
    s = _seed()
    yield s
    # On failure pytest shows this in the captured output.
    print(f"replay with DURABLE_MULTIWORKER_SEED={s}")


# -- the tests -------------------------------------------------------------------------


@pytest.mark.slow  # RUNS (2,000) runs through kills and stalls
def test_workers_drain_thousands_of_runs_through_kills_and_stalls(
    pg_schema_url: str, tmp_path: Path, seed: int
) -> None:
    """Four ``Engine.worker`` processes and one ``durable worker`` drain RUNS runs while
    workers are SIGKILLed and SIGSTOPped past their lease; see the module docstring."""
    rng = random.Random(seed)
    log = tmp_path / "effects.log"
    fleet = Fleet(tmp_path, lambda host: pg_schema_url, log)
    started = time.monotonic()
    eng = enqueue_all(pg_schema_url, 0)  # the schema exists before the workers open it
    try:
        fleet.spawn_cli()
        for _ in range(4):
            fleet.spawn()
        # Enqueued while the workers drain (they wake on NOTIFY) and the chaos starts.
        feeder = threading.Thread(target=lambda: enqueue_all(pg_schema_url, RUNS).close())
        feeder.start()
        try:
            done = drain_with_chaos(fleet, eng.journal, rng, hosts=[None],
                                    max_kills=5, max_pauses=5, feeder=feeder)  # fmt: skip
        finally:
            feeder.join()
            fleet.stop()
        assert not fleet.crashed(), f"workers died: {fleet.crashed()}"
        outcome = check_drained(eng.journal, read_log(log), RUNS, fleet.disturbed(),
                                fleet.stopped)  # fmt: skip
    finally:
        eng.close()
    print(f"{RUNS} runs in {time.monotonic() - started:.1f}s, chaos {done}, {outcome}")
    assert done["kills"] >= 1 and done["pauses"] >= 1, done
    assert outcome.taken_over >= 1, "no run moved from one worker to another"
    # A stopped worker lost a run: an execution of its was discarded (fenced off), or
    # its run went on elsewhere. (Which one depends on where SIGSTOP caught it: its
    # heartbeat, on a connection of its own, often learns it was fenced off before its
    # next step.)
    lost = outcome.taken_from_stopped + outcome.discarded_by_stopped
    assert lost >= 1, f"no stopped worker lost a run: {outcome}"


def test_a_queue_limit_holds_across_worker_processes(pg_schema_url: str, tmp_path: Path) -> None:
    """Queue("limited", concurrency=3), three workers of four slots each: never more than
    3 of its runs executing at once, and the limit is reached."""
    n = 60
    log = tmp_path / "effects.log"
    # A long lease: an expired one frees a place in the queue while its holder still
    # runs (the limit counts live leases), which this test is not about.
    fleet = Fleet(tmp_path, lambda host: pg_schema_url, log, lease=10.0)
    eng = Engine(pg_schema_url, durability="process")
    workload.limited._engine = eng
    try:
        for i in range(n):
            workload.limited.enqueue(i, 0.03, run_id=f"lim-{i}")
        for _ in range(3):
            fleet.spawn()
        try:
            deadline = time.monotonic() + 60
            while unfinished(eng.journal):
                assert time.monotonic() < deadline, "the limited runs did not finish"
                time.sleep(0.05)
        finally:
            fleet.stop()
        assert not fleet.crashed(), f"workers died: {fleet.crashed()}"
        peak = check_limit(read_log(log), n)
    finally:
        workload.limited._engine = None
        eng.close()
    assert peak <= workload.LIMIT, f"{peak} runs of a queue limited to {workload.LIMIT} at once"
    assert peak == workload.LIMIT, f"the limit was never reached (peak {peak}): test too weak"


# -- separate hosts: network namespaces -----------------------------------------------


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _netns_unusable() -> str | None:
    """Why workers cannot run in network namespaces here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = f"dmwprobe{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except subprocess.CalledProcessError as exc:
        return f"ip netns add failed: {exc.stderr.strip()}"
    _ip("netns", "del", probe)
    return None


@dataclass
class Hosts:
    """Two namespaces, each joined to this one by a veth pair: the server's addresses."""

    names: list[str]
    server_addr: dict[str, str]  # netns -> address of the server on its link
    root_link: dict[str, str]  # netns -> the veth end in the server's namespace


@contextlib.contextmanager
def two_hosts() -> Iterator[Hosts]:
    tag = uuid.uuid4().hex[:5]
    subnet = random.Random(tag).randrange(16, 250)
    hosts = Hosts([], {}, {})
    try:
        for k, side in enumerate("ab"):
            ns, root_end, ns_end = f"dmw{tag}{side}", f"dmw{tag}{side}0", f"dmw{tag}{side}1"
            _ip("netns", "add", ns)
            hosts.names.append(ns)
            _ip("link", "add", root_end, "type", "veth", "peer", "name", ns_end)
            hosts.root_link[ns] = root_end
            _ip("link", "set", ns_end, "netns", ns)
            server, worker = f"10.{subnet}.{k}.1", f"10.{subnet}.{k}.2"
            _ip("addr", "add", f"{server}/24", "dev", root_end)
            _ip("link", "set", root_end, "up")
            _ip("-n", ns, "addr", "add", f"{worker}/24", "dev", ns_end)
            _ip("-n", ns, "link", "set", ns_end, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            hosts.server_addr[ns] = server
        yield hosts
    finally:
        for ns in hosts.names:
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("link", "del", hosts.root_link[ns])  # deletes its peer too
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("netns", "del", ns)


def _listen_on(cluster: TempCluster, addresses: list[str], subnet: str) -> None:
    """Make the throwaway server listen on the hosts' links too (trust, as on 127.0.0.1)."""
    listen = ",".join(["127.0.0.1", *addresses])
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        # A utility statement takes no parameters; the addresses are ours.
        conn.execute(f"ALTER SYSTEM SET listen_addresses = '{listen}'")
    with (cluster.data / "pg_hba.conf").open("a") as hba:
        hba.write(f"host all all {subnet} trust\n")
    argv = [str(cluster.bindir / "pg_ctl"), "restart", "-D", str(cluster.data), "-w",
            "-m", "fast", "-l", str(cluster.log)]  # fmt: skip
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    subprocess.run(argv, check=True, capture_output=True, cwd=cluster.base)


@pytest.mark.slow
def test_workers_on_separate_hosts_survive_a_network_cut(tmp_path: Path, seed: int) -> None:
    """Workers in two network namespaces (two hosts) drain runs while one host loses
    the network for twice the lease, and workers are killed and stopped."""
    why = _netns_unusable()
    if why is not None:
        pytest.skip(f"separate hosts need network namespaces: {why}")
    try:
        cluster = TempCluster()
    except ClusterUnavailable as exc:
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    n = RUNS // 3
    rng = random.Random(seed)
    log = tmp_path / "effects.log"
    with cluster, two_hosts() as hosts:
        subnet = hosts.server_addr[hosts.names[0]].rsplit(".", 2)[0] + ".0.0/16"
        _listen_on(cluster, list(hosts.server_addr.values()), subnet)
        local = cluster.url + "?schema=hosts"

        def url(host: str | None) -> str:
            if host is None:
                return local
            return local.replace("127.0.0.1", hosts.server_addr[host])

        def cut(host: str, down: bool) -> None:
            _ip("link", "set", hosts.root_link[host], "down" if down else "up")

        fleet = Fleet(tmp_path, url, log)
        eng = enqueue_all(local, 0)
        try:
            for host in hosts.names * 2:
                fleet.spawn(host)
            feeder = threading.Thread(target=lambda: enqueue_all(local, n).close())
            feeder.start()
            try:
                done = drain_with_chaos(
                    fleet, eng.journal, rng, hosts=list(hosts.names),
                    max_kills=2, max_pauses=2, cut=cut, feeder=feeder, first="cut",
                )  # fmt: skip
            finally:
                feeder.join()
                for host in hosts.names:
                    cut(host, False)
                fleet.stop()
            assert not fleet.crashed(), f"workers died: {fleet.crashed()}"
            outcome = check_drained(eng.journal, read_log(log), n, fleet.disturbed(),
                                    fleet.stopped, cut_off=frozenset(fleet.cut_off))  # fmt: skip
        finally:
            eng.close()
    print(f"{n} runs on 2 hosts, chaos {done}, {outcome}")
    # The chaos hit work in flight: an execution was discarded, or a run moved hosts. (A
    # cut that lands inside a claim holds the claims' turn until the network is back, so
    # the cut host's runs may simply go on there, their leases renewed, none moved.)
    assert outcome.taken_over + outcome.discarded >= 1, "the chaos never hit a run in flight"


# -- the bugs found, pinned one by one ---------------------------------------------------


def _server(url: str) -> str:
    """The libpq URL of a journal URL (without its ``schema=``)."""
    return url.partition("?")[0]


def _schema(url: str) -> str:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["schema"][-1]


def test_a_claimer_never_waits_for_a_stalled_claims_turn(pg_schema_url: str) -> None:
    """While a claimer stalled inside its claim (SIGSTOP, GC, network) holds the
    queue-turns lock, another claims nothing at once instead of waiting (its connection
    stays free for its runs' commits); once the turn is free it claims, with a lease
    of ``lease_seconds`` from the claim."""
    with Journal(pg_schema_url) as first, Journal(pg_schema_url) as second:
        first.create_run("r1", name="f", kind="function", input=None, status="pending",
                         entries=[first.entry(EntryKind.RUN_STARTED, {"owner": None})],
                         queue="q")  # fmt: skip
        with psycopg.connect(_server(pg_schema_url)) as stalled:  # a transaction holding the turn
            stalled.execute("SELECT pg_advisory_xact_lock(%s)", (_claims._queue_turn("q"),))
            started = time.monotonic()
            assert second.claim_next("worker-b", lease_seconds=1.0, limits={"q": 5}) == []
            assert time.monotonic() - started < 1.0, "the claim waited for the turn"
            time.sleep(1.5)  # the stalled claimer stays stalled longer than the lease
            stalled.rollback()
        claimed = second.claim_next("worker-b", lease_seconds=1.0, limits={"q": 5})
        assert [r.run_id for r in claimed] == ["r1"]
        assert claimed[0].lease_expires_at is not None
        assert claimed[0].lease_expires_at > time.time(), "granted an expired lease"
        assert first.claim_next("worker-c", lease_seconds=30, limits={"q": 5}) == []


def test_a_worker_does_not_claim_a_run_it_is_executing(pg_schema_url: str) -> None:
    """A worker whose lease on a run in flight ran out (stalled past it, nobody else took
    the run) renews it or leaves it: it must not start a second execution of it."""
    eng = Engine(pg_schema_url, lease_seconds=60)  # the heartbeat (every 20 s) stays out
    blocker = workload.Blocker()
    workload.blocked._engine = eng
    try:
        workload.blocked.enqueue(run_id="r1")
        worker = Worker(eng, concurrency=4)
        handles = worker.claim_once().handles
        assert blocker.entered.wait(10)
        with psycopg.connect(_server(pg_schema_url)) as other:  # the lease runs out
            other.execute(f"UPDATE {_schema(pg_schema_url)}.runs"
                          " SET lease_expires_at = 0 WHERE run_id = 'r1'")  # fmt: skip
        handles += worker.claim_once().handles
        blocker.release()
        for handle in handles:
            handle.wait(10)
        assert eng.journal.get_run("r1").status == "completed"
        assert blocker.calls == 1, f"the step ran {blocker.calls} times in one process"
    finally:
        workload.blocked._engine = None
        eng.close()


def test_a_worker_outlives_a_dropped_connection(
    pg_schema_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server ends the worker's connection (restart, failover, idle timeout): the
    worker reconnects and goes on claiming, rather than its loop ending with the error."""
    monkeypatch.setenv("MULTIWORKER_LOG", str(tmp_path / "steps.log"))
    eng = Engine(pg_schema_url, lease_seconds=5)
    stop = threading.Event()
    died: list[BaseException] = []

    def work() -> None:
        try:
            eng.worker(poll_interval=0.05, stop=stop)
        except BaseException as exc:
            died.append(exc)

    thread = threading.Thread(target=work)
    workload.job._engine = eng
    try:
        pid = eng.journal.query("SELECT pg_backend_pid() AS pid")[0]["pid"]
        thread.start()
        with psycopg.connect(_server(pg_schema_url), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        handle = workload.job.enqueue(7, run_id="after-drop")
        assert handle.result(timeout=10) == workload.expected(7), died
    finally:
        stop.set()
        thread.join(10)
        workload.job._engine = None
        eng.close()
    assert not died


def test_a_claimer_that_stalls_holding_the_turn_loses_it(pg_schema_url: str) -> None:
    """A client that stalls (or loses the network) inside its claim is cut off by the
    server after the busy timeout, so the claims' turn does not stay held until TCP
    gives up on it; the others claim again."""
    with Journal(pg_schema_url, busy_timeout_ms=500) as stalled, Journal(pg_schema_url) as other:
        other.create_run("r1", name="f", status="pending", queue="q")
        with stalled.lock:
            stalled.backend.begin()
            assert stalled.backend.take_turns(_claims._queue_turn("q"))
            assert other.claim_next("b", limits={"q": 5}) == []  # the turn is held
            time.sleep(1.5)  # the stalled client never comes back to its transaction
        assert [r.run_id for r in other.claim_next("b", limits={"q": 5})] == ["r1"]


def test_a_held_turn_holds_up_its_queue_only(pg_schema_url: str) -> None:
    """While a stalled claimer holds one limited queue's turn, runs of other queues (and
    of no limited queue) are still claimed."""
    with Journal(pg_schema_url) as j:
        j.create_run("held", name="f", status="pending", queue="q")
        j.create_run("other", name="f", status="pending", queue="r")
        j.create_run("free", name="f", status="pending", queue="default")
        with psycopg.connect(_server(pg_schema_url)) as stalled:
            stalled.execute("SELECT pg_advisory_xact_lock(%s)", (_claims._queue_turn("q"),))
            got = j.claim_next("w", limit=5, limits={"q": 5, "r": 5})
            assert sorted(r.run_id for r in got) == ["free", "other"]
            stalled.rollback()
        assert [r.run_id for r in j.claim_next("w", limit=5, limits={"q": 5})] == ["held"]
