"""docs/comparison.md says true things about `durable`: each claim about us that code
can check is checked here against the code (an API or command it names exists with the
parameters it shows, a feature it says we have is there, a limit it admits is real).

Each case quotes the text it checks, so an edited claim fails here until its check is
edited too; the peers' columns are out of scope (they come from their documentation).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

import engine
import journal
from engine.cli import cli

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "comparison.md"


def doc_text() -> str:
    """The comparison, with runs of whitespace made one space (claims span lines)."""
    return " ".join(DOC.read_text(encoding="utf-8").split())


def our_column() -> dict[str, str]:
    """Features table: row label -> the `durable` cell."""
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0] and not set(cells[0]) <= {"-"}:
            rows[cells[0]] = cells[1]
    return rows


def command_options(*path: str) -> set[str]:
    """The option strings of ``durable PATH...`` (the command must exist)."""
    command: object = cli
    for name in path:
        assert hasattr(command, "commands"), path
        assert name in command.commands, f"no `durable {' '.join(path)}`"  # type: ignore[attr-defined]
        command = command.commands[name]  # type: ignore[attr-defined]
    options: set[str] = set()
    for param in command.params:  # type: ignore[attr-defined]
        options.update(getattr(param, "opts", []))
    return options


def params(fn: Callable[..., object]) -> list[str]:
    return list(inspect.signature(fn).parameters)


def check_store() -> None:
    deps = (ROOT / "pyproject.toml").read_text()
    assert '"apsw>=' in deps and '"psycopg[binary]>=' in deps
    assert journal.is_url("postgresql://h/db") and not journal.is_url("app.db")


def check_postgres() -> None:
    assert {"--to"} <= command_options("migrate") or command_options("migrate")
    assert callable(journal.copy_journal)


def check_recorded() -> None:
    kinds = journal.ENTRY_KINDS
    assert {"step.completed", "state.set", "event.emitted", "event.received"} <= kinds


def check_recovery() -> None:
    assert callable(engine.recover) and "wait_leased" in params(engine.recover)
    assert issubclass(engine.Workflow, object) and hasattr(engine, "durable")


def check_who_resumes() -> None:
    assert "lease_seconds" in params(engine.Engine)
    assert command_options("worker") and command_options("recover")


def check_step_semantics() -> None:
    assert params(engine.idempotency_key) == []


def check_fsync() -> None:
    from journal import _sqlite

    assert inspect.signature(engine.Engine).parameters["durability"].default == "full"
    assert _sqlite._SYNCHRONOUS == {"full": "FULL", "process": "NORMAL"}


def check_time_travel() -> None:
    assert params(engine.state_at)[:2] == ["run_id", "step"]
    assert params(engine.diff)[:3] == ["run_id", "a", "b"]
    assert callable(engine.history)
    # "from snapshots (bounded cost)": snapshots are a journal policy.
    assert "every" in params(journal.SnapshotPolicy)


def check_fork() -> None:
    ps = inspect.signature(engine.fork).parameters
    assert next(iter(ps)) == "run_id" and {"at", "state"} <= set(ps)
    assert ps["at"].kind is inspect.Parameter.KEYWORD_ONLY


def check_resume() -> None:
    assert params(engine.Engine.resume)[:2] == ["self", "run_id"]
    assert "--wait" in command_options("resume")
    assert "run.resumed" in journal.ENTRY_KINDS
    assert issubclass(engine.NotResumable, engine.EngineError)


def check_replay() -> None:
    assert params(engine.replay)[0] == "run_id"
    assert "--all" in command_options("replay")
    assert issubclass(engine.NonDeterminismError, engine.EngineError)


@engine.step
def _bump(n: int) -> int:
    engine.current_context().state["bumped"] = n  # a step's own state change
    return n + 1


@engine.step
def _other(n: int) -> int:
    return n


def _claims_job(ctx: engine.Context, n: int) -> int:
    return _bump(n)


def test_state_commits_with_its_step_and_replay_names_the_seq(tmp_path: Path) -> None:
    """ "exactly-once state: state changes commit with their step": the step's state.set
    is journaled with the step (its key, right before its completion); "NonDeterminismError
    naming the seq": replaying changed code names the seq where it diverged."""
    eng = engine.configure(tmp_path / "claims.db", lease_seconds=0)
    try:
        engine.durable(name="claims:job")(_claims_job)
        assert engine.durable(name="claims:job")(_claims_job).run(1, run_id="c") == 2
        kinds = [(e.kind, e.step) for e in eng.journal.read("c")]
        done = kinds.index(("step.completed", "_bump#1"))
        assert kinds[done - 1] == ("state.set", "_bump#1"), kinds
        engine.durable(name="claims:job")(lambda ctx, n: _other(n))
        report = engine.replay("c")
        assert not report.ok and report.divergence is not None
        assert f"seq {report.divergence['seq']}" in (report.error or "")
    finally:
        engine.durable(name="claims:job")(_claims_job)
        eng.close()


def check_human_in_the_loop() -> None:
    assert issubclass(engine.InputRequiredEvent, engine.Event)
    assert issubclass(engine.HumanResponseEvent, engine.Event)
    assert params(engine.send_event)[:2] == ["run_id", "event"]


def check_codecs() -> None:
    assert journal.JsonSerializer().name == "json"
    assert journal.PickleSerializer().name == "pickle"
    assert journal.PickleSerializer(hmac_key=b"k").name == "pickle-hmac"
    assert journal.JsonSerializer().compress_above == 4096  # zlib above a threshold
    sealed = journal.EncryptedCodec(journal.JsonSerializer(), {"k": b"k" * 32})
    assert sealed.name == "aesgcm:json" and sealed.decode(sealed.encode([1])) == [1]
    # pickle is opt-in: a journal's default codec is JSON.
    assert inspect.signature(journal.Journal).parameters["codec"].default is None


def check_concurrency() -> None:
    from engine import committer

    assert "group" in (committer.__doc__ or "").lower()


def check_multi_host() -> None:
    source = (ROOT / "journal" / "_postgres.py").read_text()
    assert "SKIP LOCKED" in source and "LISTEN" in source and "NOTIFY" in source
    assert issubclass(engine.FencedOff, engine.EngineError)


def check_ui() -> None:
    assert "--readonly" in command_options("ui")


def check_retention() -> None:
    assert {"completed_days", "failed_days", "compact_days"} <= set(params(journal.Retention))
    assert "retention" in params(engine.Engine.worker)
    assert "--delete-completed-after" in command_options("prune")
    assert "--delete-completed-after" in command_options("worker")


def check_replay_logging() -> None:
    assert isinstance(engine.Context.log, property)
    assert issubclass(engine.ReplayFilter, __import__("logging").Filter)


def check_schedules() -> None:
    assert "schedule" in params(engine.durable)
    for name in ("add_schedule", "pause_schedule", "resume_schedule", "remove_schedule"):
        assert callable(getattr(engine, name))
    assert set(engine.MissedTicks.__args__) == {"skip", "last", "all"}  # type: ignore[attr-defined]
    assert command_options("schedules") is not None


def check_tags() -> None:
    assert "tags" in params(engine.durable) and "tags" in params(engine.Engine.start)
    assert "tags" in params(journal.Journal.list_runs)
    assert "--tag" in command_options("runs")


def check_telemetry() -> None:
    assert "telemetry" in params(engine.Engine) and issubclass(engine.Telemetry, object)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '\notel = [\n    "opentelemetry-api' in pyproject
    # Behaviour: tests/engine/test_telemetry.py (spans across enqueue and a SIGKILL, metrics).


def check_rate_limits() -> None:
    assert "rate_limit" in params(engine.Queue)
    assert "rates" in params(journal.Journal.claim_next)


def check_dedup() -> None:
    assert "dedup_key" in params(engine.DurableFunction.enqueue)
    assert issubclass(engine.DedupKeyConflict, engine.EngineError)


def check_long_steps() -> None:
    assert "heartbeat_timeout" in params(engine.step)
    assert callable(engine.Context.heartbeat) and callable(engine.heartbeat)
    assert issubclass(engine.StepHeartbeatTimeout, engine.StepTimeout)
    assert callable(journal.Journal.heartbeat_of)


def check_languages() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.10"' in pyproject


# (row label of the features table, text of our cell that the check covers, check)
FEATURES = [
    ("needs a server", "no (an SQLite file); PostgreSQL when one host is not enough", check_store),
    ("store", "SQLite (apsw) or PostgreSQL (psycopg 3)", check_store),
    ("PostgreSQL", "`durable migrate` between the two", check_postgres),
    ("what is recorded", "every step, state change and event", check_recorded),
    ("crash recovery", "`@durable`: re-run the body", check_recovery),
    (
        "who resumes",
        "`engine.recover()` (or any worker, after the owner's lease",
        check_who_resumes,
    ),
    ("step semantics", "`idempotency_key()` per step", check_step_semantics),
    # Behaviour, in test_state_commits_with_its_step_and_replay_names_the_seq.
    ("exactly-once state", "yes: state changes commit with their step", check_recorded),
    ("fsync by default", 'yes (`durability="full"`: `synchronous=FULL`)', check_fsync),
    (
        "time travel (state at any step)",
        "`state_at(run_id, step=n)`, `history`, `diff(run_id, a, b)`",
        check_time_travel,
    ),
    ("fork from a step", "`fork(run_id, at=n, state={...})`", check_fork),
    (
        "resume a failed run",
        "`engine.resume(run_id)`, `durable resume RUN`, a button in `durable ui`",
        check_resume,
    ),
    (
        "replay debugging / determinism check",
        "`replay(run_id)`, `durable replay --all` in CI, `NonDeterminismError`",
        check_replay,
    ),
    (
        "human in the loop",
        "`InputRequiredEvent` / `HumanResponseEvent`, `send_event`",
        check_human_in_the_loop,
    ),
    (
        "codecs",
        "JSON (typed, pydantic), pickle (opt in), HMAC-signed pickle, zlib compression"
        " above a threshold, AES-GCM encryption of any of them (`EncryptedCodec`",
        check_codecs,
    ),
    ("concurrency", "group commit of their step completions", check_concurrency),
    ("multi-host", "(`SKIP LOCKED` claims, `LISTEN/NOTIFY` wake-ups)", check_multi_host),
    ("UI", "`durable ui` (local web view", check_ui),
    ("languages", "Python", check_languages),
    ("retention", "applied by workers in the background or by `durable prune`", check_retention),
    ("logging during replay", "`ctx.log` and `ReplayFilter`", check_replay_logging),
    ("schedules", '`@durable(schedule="0 3 * * *")` or `add_schedule(...)`', check_schedules),
    ("find runs by tag", "`list_runs(tags=...)`, `durable runs --tag k=v`", check_tags),
    (
        "traces and metrics",
        "OpenTelemetry (`otel` extra, `Engine(telemetry=True)`)",
        check_telemetry,
    ),
    ("queue rate limits", "`Queue(name, rate_limit=(n, seconds))`", check_rate_limits),
    ("deduplication", '`enqueue(..., dedup_key="k")`', check_dedup),
    (
        "long steps",
        "`ctx.heartbeat(details)` records progress, shown in `durable show` and the web"
        " view; `@step(heartbeat_timeout=s)`",
        check_long_steps,
    ),
]


@pytest.mark.parametrize(("row", "claim", "check"), FEATURES, ids=[f[0] for f in FEATURES])
def test_feature_claim(row: str, claim: str, check: Callable[[], None]) -> None:
    """The claim is still in our cell of the row, and the code bears it out."""
    cell = our_column().get(row)
    assert cell is not None, f"no row {row!r} in the features table"
    assert claim in cell, f"the {row!r} cell no longer says {claim!r}: update this check"
    check()


def test_every_row_of_our_column_is_checked() -> None:
    """A new row about us gets a check (the header row excepted)."""
    rows = set(our_column()) - {"", "runs where"}  # where it runs: not a code property
    assert rows <= {f[0] for f in FEATURES}, rows - {f[0] for f in FEATURES}


def test_postgresql_is_supported_not_not_yet() -> None:
    """PostgreSQL is a backend today: no "not yet" about it; a URL opens a journal."""
    text = doc_text()
    assert not re.search(r"PostgreSQL[^.|]*not yet", text)
    assert "PostgreSQL journal ([scaling](scaling.md))" in text
    assert (ROOT / "docs" / "scaling.md").exists()
    assert "postgresql" in journal.redact_location("postgresql://u:p@h/db")


def test_admitted_gaps_are_real() -> None:
    """ "not handed to the next attempt": a step attempt has no way to read the details
    its previous attempt reported (no such API on the context or the module)."""
    assert "our heartbeat details are shown, and not handed to the next attempt" in doc_text()
    assert not any("heartbeat" in n and n != "heartbeat" for n in dir(engine.Context))
    assert [n for n in engine.__all__ if "heartbeat" in n.lower()] == [
        "StepHeartbeatTimeout",
        "heartbeat",
    ]


def test_performance_figures_come_from_the_benchmarks() -> None:
    """The measured table cites `python -m benchmarks`, and that module exists."""
    assert "`python -m benchmarks`" in doc_text()
    assert (ROOT / "benchmarks" / "__main__.py").exists()


def test_commands_named_exist_and_run() -> None:
    """Every `durable X` the comparison names is a command with a working --help."""
    named = set(re.findall(r"`durable (\w+)", doc_text()))
    assert named >= {"migrate", "replay", "ui"}
    runner = CliRunner()
    for name in sorted(named):
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
