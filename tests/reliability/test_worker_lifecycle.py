"""Workers in real processes: scripts recovered by a worker, runs that cannot resume,
stopping on signals, and recovery reporting the leases it waits for.

Every program here is a subprocess killed or signalled for real. Steps count their
side effects in a file and block on a file-based barrier (never on sleeps), so each
test knows which step was in flight when the signal landed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import Engine, UnrecoverableDefinition, Worker, durable, step
from journal import Journal

TIMEOUT = 30.0

AGENT = textwrap.dedent(
    '''
    """A program written the way people first write one: everything in __main__."""
    import asyncio
    import os
    import sys
    import time
    from dataclasses import dataclass

    import engine
    from engine import Context, Event, StartEvent, StopEvent, Workflow, durable, step

    HERE = os.path.dirname(os.path.abspath(__file__))

    if __name__ == "__main__" and os.environ.get("AGENT_OLD_NAMES"):
        # What a journal written before scripts were recorded under their import name
        # holds: "__main__:Agent", "__main__:ToolCall", "__main__:Plan".
        import journal.naming

        journal.naming.main_import_name = lambda: None


    def effect(name: str) -> None:
        with open(os.path.join(HERE, "effects.log"), "a", encoding="utf-8") as f:
            f.write(f"{name}\\n")
            f.flush()
            os.fsync(f.fileno())


    def barrier() -> None:
        while not os.path.exists(os.path.join(HERE, "barrier")):
            time.sleep(0.01)


    async def hold() -> None:
        while os.path.exists(os.path.join(HERE, "hold")):
            await asyncio.sleep(0.01)


    def make_client() -> object:
        if os.environ.get("AGENT_BROKEN"):
            raise ConnectionError("the tool server is down")
        return object()


    @dataclass
    class Plan:
        tool: str
        tries: int


    class ToolCall(Event):
        plan: Plan


    class Acted(Event):
        outcome: str


    class Agent(Workflow):
        def __init__(self, timeout=None, **options):
            # Recovery makes the workflow with Agent(): its resources come from here.
            if os.environ.get("AGENT_RESOURCES"):
                options.setdefault("resources", {"client": make_client})
            super().__init__(timeout, **options)

        @step
        async def plan(self, ctx: Context, ev: StartEvent) -> ToolCall:
            await hold()
            effect("plan")
            await ctx.store.set("plan", Plan(tool=ev.tool, tries=1))  # a __main__ dataclass
            return ToolCall(plan=Plan(tool=ev.tool, tries=1))

        @step
        def act(self, ctx: Context, ev: ToolCall) -> Acted:
            effect("act-start")
            barrier()
            effect("act")
            return Acted(outcome=f"{ev.plan.tool}:{ev.plan.tries}")

        @step
        async def report(self, ctx: Context, ev: Acted) -> StopEvent:
            effect("report")
            return StopEvent(result=ev.outcome)


    class Healthy(Workflow):
        @step
        async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
            effect("healthy")
            return StopEvent(result="ok")


    @durable
    def job(ctx: Context, n: int) -> int:
        first = one(n)
        second = two(first)
        return three(second)


    @step
    def one(n: int) -> int:
        effect("one")
        return n + 1


    @step
    def two(n: int) -> int:
        effect("two-start")
        barrier()
        effect("two")
        return n * 10


    @step
    def three(n: int) -> int:
        effect("three")
        return n + 3


    if __name__ == "__main__":
        eng = engine.configure("durable.db", lease_seconds=float(os.environ["AGENT_LEASE"]))
        if sys.argv[1] == "agent":
            Agent().run(tool="search", run_id="agent-1").result()
        elif sys.argv[1] == "start":
            # Start the run and go away before its first step: a worker takes it over.
            Agent().run(tool="search", run_id="agent-1")
            while eng.journal.find_run("agent-1") is None:
                time.sleep(0.01)
            os._exit(0)
        elif sys.argv[1] == "enqueue":
            job.enqueue(int(sys.argv[2]), run_id=sys.argv[3])
        elif sys.argv[1] == "healthy":
            Healthy(timeout=None).run(run_id=sys.argv[2]).result()
    '''
)


class Program:
    """A directory holding agent.py, its journal, its side-effect log and barrier."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "agent.py").write_text(AGENT, encoding="utf-8")
        self.db = root / "durable.db"
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", AGENT_LEASE="1")
        self.env.pop("DURABLE_DB", None)
        self.procs: list[subprocess.Popen[str]] = []

    def effects(self) -> Counter[str]:
        path = self.root / "effects.log"
        if not path.exists():
            return Counter()
        return Counter(path.read_text(encoding="utf-8").split())

    def wait_effect(self, name: str, count: int = 1) -> None:
        deadline = time.monotonic() + TIMEOUT
        while self.effects()[name] < count:
            assert time.monotonic() < deadline, f"no {name!r} effect: {self.effects()}"
            time.sleep(0.01)

    def open_barrier(self) -> None:
        (self.root / "barrier").touch()

    def script(self, *args: str, **env: str) -> subprocess.Popen[str]:
        return self._started(
            [sys.executable, "agent.py", *args],
            cwd=self.root,
            env={**self.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def cli(self, *args: str, **env: str) -> subprocess.Popen[str]:
        return self._started(
            [sys.executable, "-m", "engine.cli", "--db", str(self.db), *args],
            cwd=self.root,
            env={**self.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def _started(self, *args: object, **kwargs: object) -> subprocess.Popen[str]:
        proc: subprocess.Popen[str] = subprocess.Popen(*args, **kwargs)  # type: ignore[call-overload]
        self.procs.append(proc)
        return proc

    def worker(self, *args: str, **env: str) -> Output:
        return Output(self.cli("worker", "--import", "agent", "--poll", "0.05", *args, **env))

    def run(self, run_id: str) -> object:
        with Journal(self.db, readonly=True) as j:
            return j.get_run(run_id)

    def wait_status(self, run_id: str, status: str) -> float:
        """Seconds until ``run_id`` has ``status``."""
        start = time.monotonic()
        while True:
            if self.db.exists():
                with Journal(self.db, readonly=True) as j:
                    found = j.find_run(run_id)
                if found is not None and found.status == status:
                    return time.monotonic() - start
            assert time.monotonic() - start < TIMEOUT, f"{run_id} never became {status}"
            time.sleep(0.02)

    def kill_in(self, proc: subprocess.Popen[str], effect: str) -> None:
        """SIGKILL ``proc`` once it shows ``effect`` (its step is in flight)."""
        try:
            self.wait_effect(effect)
        finally:
            proc.kill()
            proc.communicate(timeout=TIMEOUT)


def _communicate(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """The output of a process that should end by itself; killed if it does not."""
    try:
        return proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"{proc.args} did not end within {TIMEOUT}s: {out}{err}")


class Output:
    """A process whose stdout lines are read as they come."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_line(self, text: str) -> str:
        deadline = time.monotonic() + TIMEOUT
        while True:
            for line in list(self.lines):
                if text in line:
                    return line
            if self.proc.poll() is not None and not self._reader.is_alive():
                pytest.fail(f"exited without {text!r}: {self.text()}")
            assert time.monotonic() < deadline, f"no {text!r} in {self.text()}"
            time.sleep(0.01)

    def finish(self, timeout: float = TIMEOUT) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        return code

    def text(self) -> str:
        err = self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr else ""
        return "".join(self.lines) + err


def _plain(payload: bytes | None) -> bytes:
    """A JSON payload's text (compressed ones start with a zero byte)."""
    data = bytes(payload or b"")
    return zlib.decompress(data[1:]) if data[:1] == b"\x00" else data


@pytest.fixture
def program(tmp_path: Path) -> Iterator[Program]:
    prog = Program(tmp_path)
    yield prog
    for proc in prog.procs:  # a failed test leaves no process behind
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)


# -- item: scripts recover ----------------------------------------------------------------


@pytest.mark.parametrize("names", ["import-name", "old-__main__-names"])
def test_a_script_killed_mid_step_is_recovered_by_the_worker(program: Program, names: str) -> None:
    """``python agent.py`` (classes in __main__) killed with SIGKILL inside a step;
    ``durable worker --import agent`` finishes the run, and no completed step runs again."""
    old = {"AGENT_OLD_NAMES": "1"} if names != "import-name" else {}
    program.kill_in(program.script("agent", **old), "act-start")
    with Journal(program.db, readonly=True) as j:
        recorded = b"".join(_plain(e.payload) for e in j.read("agent-1"))
        run_name = j.get_run("agent-1").name
    if old:
        assert b'"__main__:ToolCall"' in recorded and run_name == "__main__:Agent"
    else:
        assert b'"agent:ToolCall"' in recorded and b'"agent:Plan"' in recorded
        assert b"__main__" not in recorded and run_name == "agent:Agent"
    program.open_barrier()
    worker = program.worker("--grace", "5")
    program.wait_status("agent-1", "completed")
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.finish() == 0, worker.text()
    assert "resumed agent-1" in worker.text()
    with Journal(program.db, readonly=True) as j:
        run = j.get_run("agent-1")
        assert j.decode(run.output, run.codec, where="output") == "search:1"
    effects = program.effects()
    # act was in flight when the script died: it starts again (at-least-once) but
    # completes once; plan, completed before the kill, never runs again.
    assert effects["plan"] == 1 and effects["act"] == 1 and effects["act-start"] == 2


def test_main_import_name_follows_how_the_program_was_started(tmp_path: Path) -> None:
    """A file gives its stem, a file inside packages its dotted path, ``-m`` its module
    name, and ``-c`` nothing (no worker could import that)."""
    pkg = tmp_path / "app" / "jobs"
    pkg.mkdir(parents=True)
    (tmp_path / "app" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    probe = "import journal.naming as n; print(n.main_import_name())\n"
    (pkg / "flow.py").write_text(probe)
    (tmp_path / "solo.py").write_text(probe)

    def name(*argv: str) -> str:
        out = subprocess.run(
            [sys.executable, *argv], cwd=tmp_path, capture_output=True, text=True, check=True
        )
        return out.stdout.strip()

    assert name("solo.py") == "solo"
    assert name(str(pkg / "flow.py")) == "app.jobs.flow"
    assert name("-m", "app.jobs.flow") == "app.jobs.flow"
    assert name("-c", probe) == "None"


def test_a_definition_no_worker_can_import_is_warned_about() -> None:
    """A durable function defined inside a function, without name=, warns when decorated."""
    with pytest.warns(UnrecoverableDefinition, match="inside a function"):

        @durable
        def local_job() -> None: ...

    with warnings.catch_warnings():
        warnings.simplefilter("error")

        @durable(name="tests:named_local_job")
        def named_local_job() -> None: ...


# -- item: a run that cannot resume never loops ---------------------------------------------


def test_a_run_that_cannot_resume_is_marked_and_the_worker_goes_on(program: Program) -> None:
    """The worker cannot resume agent-1 (its resource factory raises there): the run is
    claimed once, marked with the reason and released; the worker runs the others, and
    --max-seconds stops it. A worker that can resume it later finishes it."""
    program.kill_in(program.script("agent", AGENT_RESOURCES="1"), "act-start")
    program.open_barrier()
    for n in range(3):
        done = program.script("enqueue", str(n), f"job-{n}")
        assert done.wait(TIMEOUT) == 0, done.communicate()
    started = time.monotonic()
    worker = program.worker(
        "--max-seconds", "4", "--grace", "2", AGENT_BROKEN="1", AGENT_RESOURCES="1"
    )
    assert worker.finish() == 0, worker.text()
    took = time.monotonic() - started
    assert took < 4 + 2 + 10, took  # --max-seconds + --grace + start-up
    out = worker.text()
    assert out.count("not resumed agent-1") == 1, out
    assert "ConnectionError" in out and "the tool server is down" in out
    run = program.run("agent-1")
    assert run.status == "running" and run.owner is None  # type: ignore[attr-defined]
    assert run.epoch == 2, run  # type: ignore[attr-defined]  # the script's claim, then one
    assert "cannot resume" in (run.error or "")  # type: ignore[attr-defined]
    for n in range(3):
        assert program.run(f"job-{n}").status == "completed"  # type: ignore[attr-defined]
    listed = subprocess.run(
        [sys.executable, "-m", "engine.cli", "--db", str(program.db), "runs"],
        capture_output=True, text=True, cwd=program.root, env=program.env, check=True,
    )  # fmt: skip
    assert "cannot resume" in listed.stdout
    shown = subprocess.run(
        [sys.executable, "-m", "engine.cli", "--db", str(program.db), "show", "agent-1"],
        capture_output=True, text=True, cwd=program.root, env=program.env, check=True,
    )  # fmt: skip
    assert "the tool server is down" in shown.stdout
    healed = program.worker("--grace", "5", AGENT_RESOURCES="1")
    program.wait_status("agent-1", "completed")
    healed.proc.send_signal(signal.SIGTERM)
    assert healed.finish() == 0, healed.text()
    run = program.run("agent-1")
    assert run.error is None  # type: ignore[attr-defined]  # the reason went with the fix
    assert program.effects()["plan"] == 1 and program.effects()["act"] == 1


def test_recover_reports_a_run_that_cannot_resume_instead_of_hanging(program: Program) -> None:
    """``durable recover`` on that run exits 1 with the reason, at once."""
    program.kill_in(program.script("agent", AGENT_RESOURCES="1"), "act-start")
    time.sleep(1.2)  # the script's 1 s lease lapses
    proc = program.cli("recover", "--import", "agent", AGENT_BROKEN="1", AGENT_RESOURCES="1")
    out, err = _communicate(proc)
    assert proc.returncode == 1, out + err
    assert "agent-1" in out and "the tool server is down" in out
    assert program.run("agent-1").owner is None  # type: ignore[attr-defined]


def test_a_queued_run_no_worker_can_import_goes_back_to_pending(program: Program) -> None:
    """A worker that cannot import a queued run's function leaves it pending, unowned."""
    other = program.root / "elsewhere"
    other.mkdir()
    (other / "billing.py").write_text(
        "import engine\n"
        "from engine import durable\n"
        "@durable\n"
        "def charge(n: int) -> int:\n"
        "    return n\n"
        "if __name__ == '__main__':\n"
        f"    engine.configure({str(program.db)!r})\n"
        "    charge.enqueue(1, run_id='bill-1')\n"
    )
    subprocess.run([sys.executable, "billing.py"], cwd=other, env=program.env, check=True)
    worker = program.worker("--max-seconds", "1", "--grace", "1")
    assert worker.finish() == 0, worker.text()
    assert "not recovered bill-1" in worker.text()
    run = program.run("bill-1")
    assert run.status == "pending" and run.owner is None  # type: ignore[attr-defined]


# -- item: workers stop like services -------------------------------------------------------


@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)]
)
@pytest.mark.parametrize("kind", ["function", "workflow"])
def test_a_stopped_worker_pauses_at_a_step_boundary_and_hands_over(
    program: Program, signum: int, kind: str
) -> None:
    """A signal while a step is blocked: the step finishes and commits, the next does not
    start, the lease is released and the worker exits 0; a second worker finishes the run
    within seconds (not after the 60 s lease), and no step ran twice."""
    program.env["AGENT_LEASE"] = "60"
    if kind == "function":
        run_id, blocked, effects_done = "job-1", "two-start", ("one", "two", "three")
        enqueue = program.script("enqueue", "4", run_id)
        assert enqueue.wait(TIMEOUT) == 0, enqueue.communicate()
        first = program.worker("--lease", "60", "--grace", "20")
    else:
        run_id, blocked, effects_done = "agent-1", "act-start", ("plan", "act", "report")
        (program.root / "hold").touch()
        starter = program.script("start", AGENT_LEASE="1")
        assert starter.wait(TIMEOUT) == 0, starter.communicate()
        (program.root / "hold").unlink()
        first = program.worker("--lease", "60", "--grace", "20")
    program.wait_effect(blocked)
    first.wait_line("worker ")
    first.proc.send_signal(signum)
    first.wait_line("stopping: 1 run in flight")
    program.open_barrier()
    assert first.finish() == 0, first.text()
    assert "1 paused at a step boundary" in first.text(), first.text()
    run = program.run(run_id)
    assert not run.finished and run.owner is None  # type: ignore[attr-defined]
    second = program.worker("--lease", "30", "--grace", "5")
    # Released, the run is taken at once; held, it would wait out the 60 s lease. The
    # margin is for a loaded machine's slow worker start, not a lease.
    took = program.wait_status(run_id, "completed")
    assert took < 25, took
    second.proc.send_signal(signal.SIGTERM)
    assert second.finish() == 0, second.text()
    effects = program.effects()
    assert effects[blocked] == 1, effects
    assert all(effects[name] == 1 for name in effects_done), effects


def test_a_second_signal_abandons_at_once_but_releases_the_leases(program: Program) -> None:
    """SIGTERM twice: the worker exits at once (143) though the step is still blocked;
    its lease is released, so another worker resumes at once; the blocked step runs again
    there (at-least-once), every completed step does not."""
    program.env["AGENT_LEASE"] = "60"
    enqueue = program.script("enqueue", "4", "job-1")
    assert enqueue.wait(TIMEOUT) == 0, enqueue.communicate()
    first = program.worker("--lease", "60", "--grace", "60")
    program.wait_effect("two-start")
    first.proc.send_signal(signal.SIGTERM)
    first.wait_line("stopping: 1 run in flight")
    started = time.monotonic()
    first.proc.send_signal(signal.SIGTERM)
    assert first.finish() == 128 + signal.SIGTERM, first.text()
    assert time.monotonic() - started < 5
    assert "1 abandoned mid-step" in first.text()
    run = program.run("job-1")
    assert run.status == "running" and run.owner is None  # type: ignore[attr-defined]
    program.open_barrier()
    second = program.worker("--lease", "30", "--grace", "5")
    assert program.wait_status("job-1", "completed") < 25  # the lease is 60 s
    second.proc.send_signal(signal.SIGTERM)
    assert second.finish() == 0, second.text()
    effects = program.effects()
    assert effects["one"] == 1 and effects["two"] == 1 and effects["three"] == 1, effects
    assert effects["two-start"] == 2, effects


# -- item: recovery says what it waits for --------------------------------------------------


def test_recover_reports_runs_held_by_a_lease_and_waits_for_them(program: Program) -> None:
    """Right after a crash the dead script's lease still holds its run: ``recover``
    says so (owner, seconds left) at once; ``recover --wait`` resumes it once it lapses."""
    program.env["AGENT_LEASE"] = "60"
    program.kill_in(program.script("agent"), "act-start")
    program.open_barrier()  # so that nothing below hangs if the lease lapsed early
    owner = program.run("agent-1").owner  # type: ignore[attr-defined]
    started = time.monotonic()
    proc = program.cli("recover", "--import", "agent", "--json")
    out, err = _communicate(proc)
    assert proc.returncode == 0, out + err
    assert time.monotonic() - started < 30  # it does not wait for the lease
    doc = json.loads(out)
    assert doc["resumed"] == [] and doc["errors"] == {}
    [held] = doc["held"]
    assert held["run_id"] == "agent-1" and held["owner"] == owner
    assert 0 < held["seconds_left"] <= 60
    proc = program.cli("recover", "--import", "agent")
    out, _ = _communicate(proc)
    assert "nothing to recover" not in out and "held agent-1" in out and owner in out
    with Journal(program.db) as j:  # the dead owner's lease: 10 s from now, not 60
        j.claim_run("agent-1", owner, lease_seconds=10)
    proc = program.cli("recover", "--import", "agent", "--wait")
    out, err = _communicate(proc)
    assert proc.returncode == 0, out + err
    assert f"waiting for agent-1: held by {owner}" in out
    assert "recovered agent-1" in out and "completed" in out
    assert program.effects()["plan"] == 1 and program.effects()["act"] == 1


def test_engine_recover_reports_held_runs_without_blocking(db_path: Path) -> None:
    """engine.recover() returns at once with the held run's owner and seconds left."""
    with Journal(db_path) as j:
        j.create_run("held", name="tests:nothing", status="running", owner="ghost:1",
                     lease_seconds=30)  # fmt: skip
    with Engine(db_path) as eng:
        started = time.monotonic()
        report = eng.recover(timeout=5)
        assert time.monotonic() - started < 2
    assert report.handles == [] and report.errors == {}
    assert report.owners == {"held": "ghost:1"} and 25 < report.leased["held"] <= 30


# -- the Python API: Worker.stop ------------------------------------------------------------

GATE = threading.Event()
ENTERED = threading.Event()
CALLS: Counter[str] = Counter()


@step
def gated(n: int) -> int:
    CALLS["gated"] += 1
    ENTERED.set()
    GATE.wait(TIMEOUT)
    return n * 10


@step
def after(n: int) -> int:
    CALLS["after"] += 1
    return n + 1


@durable(name="tests.lifecycle:pausable")
def pausable(n: int) -> int:
    return after(gated(n))


@pytest.fixture
def gate() -> object:
    GATE.clear()
    ENTERED.clear()
    CALLS.clear()
    yield
    GATE.set()
    pausable._engine = None


@pytest.mark.usefixtures("gate")
def test_worker_stop_pauses_runs_at_a_step_boundary(db_path: Path) -> None:
    """Worker.stop(grace): the step in flight commits, the next does not start, the lease
    is released at once; another engine finishes the run, no step twice."""
    eng = Engine(db_path, lease_seconds=30)
    pausable._engine = eng
    worker = Worker(eng, concurrency=2, poll_interval=0.05)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        pausable.enqueue(4, run_id="p")
        assert ENTERED.wait(TIMEOUT)
        threading.Timer(0.2, GATE.set).start()
        report = worker.stop(grace=TIMEOUT)
        thread.join(TIMEOUT)
        assert not thread.is_alive()
        assert report.paused == ["p"] and not report.abandoned and not report.finished
        run = eng.journal.get_run("p")
        assert run.status == "running" and run.owner is None
    finally:
        eng.close()
    with Engine(db_path, lease_seconds=30) as other:
        pausable._engine = other
        started = time.monotonic()
        report = other.recover(timeout=TIMEOUT)
        assert report.run_ids == ["p"] and time.monotonic() - started < 5
        assert other.handle("p").result(TIMEOUT) == 41
    assert CALLS == {"gated": 1, "after": 1}


@pytest.mark.usefixtures("gate")
def test_worker_stop_abandons_a_step_past_its_grace(db_path: Path) -> None:
    """A step still running after the grace is abandoned: its lease is released anyway."""
    eng = Engine(db_path, lease_seconds=30)
    pausable._engine = eng
    worker = Worker(eng, concurrency=2, poll_interval=0.05)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        pausable.enqueue(4, run_id="a")
        assert ENTERED.wait(TIMEOUT)
        started = time.monotonic()
        report = worker.stop(grace=0.3)
        assert 0.3 <= time.monotonic() - started < 5
        thread.join(TIMEOUT)
        assert report.abandoned == ["a"] and not report.paused
        run = eng.journal.get_run("a")
        assert run.status == "running" and run.owner is None
    finally:
        GATE.set()
        eng.close()
