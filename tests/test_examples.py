"""Every example in examples/ runs as documented: in a fresh directory, with ``--db``,
it exits 0 and tells the story it promises (the lines checked here are its proof)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from journal import Journal

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, cwd: Path, *args: str) -> str:
    """Run ``examples/<name>`` with ``cwd`` as its working directory; return its stdout."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"{name} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def run_with_db(name: str, tmp_path: Path) -> tuple[str, list[str]]:
    """Run with ``--db``; return the output and the statuses of the runs it left there."""
    db = tmp_path / "journal.db"
    out = run_example(name, tmp_path, "--db", str(db))
    with Journal(db) as j:
        return out, [r.status for r in j.list_runs()]


def test_every_example_is_tested_and_listed() -> None:
    """Each example script has a test here and a line in examples/README.md."""
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    source = Path(__file__).read_text(encoding="utf-8")
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    assert scripts
    for script in scripts:
        assert f'"{script}"' in source, script
        assert f"examples/{script}" in readme, script


def test_checkpointing_workflow(tmp_path: Path) -> None:
    """Killed in critique, resumed elsewhere: finished steps ran once; run_from differs."""
    out, statuses = run_with_db("checkpointing_workflow.py", tmp_path)
    assert "KILLED pid" in out and "RECOVERED jokes-" in out
    assert re.search(r"brainstorm +ran once", out)
    assert re.search(r"write +ran once", out)
    assert re.search(r"critique +ran twice", out)
    assert re.search(r"#4 polish .* -> StopEvent", out)
    assert "penguins" in out and "topic='pirates'" in out
    assert "after critique, Review(score=" in out and "flowchart TD" in out
    assert statuses == ["completed", "completed"]  # the original run and the run_from fork


def test_multi_strategy_workflow(tmp_path: Path) -> None:
    """Three strategies in parallel, each one's journaled state, a judged best answer."""
    out, statuses = run_with_db("multi_strategy_workflow.py", tmp_path)
    assert "<- best" in out
    for name in ("naive", "high_top_k", "rerank"):
        assert f"strategy/{name} = {{'retrieved'" in out
    assert "collected 3 of 3 answers, picked the best" in out
    assert "ran in parallel" in out
    assert statuses == ["completed"]


def test_planning_workflow(tmp_path: Path) -> None:
    """A failed tool leads to plan revision 2; the diff names what changed."""
    out, statuses = run_with_db("planning_workflow.py", tmp_path)
    assert "s2 FAILED: 404" in out
    assert "revision 1, at checkpoint #1" in out and "revision 2, at checkpoint #4" in out
    assert "changed plan.revision: 1 -> 2" in out
    assert "changed plan.steps[1].tool: 'fetch_report' -> 'sum_quarters'" in out
    assert "answer: Acme's revenue grew 12.5%" in out
    assert statuses == ["completed"]


def test_human_in_the_loop(tmp_path: Path) -> None:
    """Asked in one process, answered in another, resumed in a third."""
    out, statuses = run_with_db("human_in_the_loop.py", tmp_path)
    assert "the run is 'waiting' in the journal" in out
    assert "the run is 'pending'" in out
    assert "RESUMED post-" in out and "'approved_by': 'ada'" in out
    assert re.search(r"draft +1x", out) and re.search(r"publish +1x", out)
    pids = re.findall(r"\[pid (\d+)\]", out)
    assert len(set(pids)) == 3  # three distinct processes took part
    assert "the question was streamed and journaled 1x" in out
    assert "event.received  the reviewer's answer" in out
    assert statuses == ["completed"]


def test_fault_tolerant_etl(tmp_path: Path) -> None:
    """Killed mid-write, recovered: 40 rows, none twice, totals agree."""
    out, statuses = run_with_db("fault_tolerant_etl.py", tmp_path)
    assert "KILLED pid" in out and "RECOVERED etl-" in out
    assert "41 write attempts, for records [23] more than once" in out
    assert "40 rows for 40 distinct records: no record was written twice" in out
    assert "duplicates skipped by idempotency key: 1" in out
    assert "3 failed extract attempts journaled and retried" in out
    assert "3 durable rate-limit sleeps journaled" in out
    assert "all totals agree" in out
    assert statuses == ["completed"]


def test_debugging(tmp_path: Path) -> None:
    """Replay ok without executing steps; until=N; the divergence of a renamed step."""
    out = run_example("debugging.py", tmp_path)  # no --db: a temporary journal
    assert "ok (5 calls replayed, end of run)" in out
    assert "step bodies executed during the replay: 0" in out
    assert "stopped after 2 replayed calls" in out
    assert "the same as engine.state_at(run_id, step=2): True" in out
    assert "divergence at seq 13:" in out
    assert "recorded: step.completed 'tax#4' at seq 13" in out
    assert "but the code now calls step.completed 'vat#4'" in out
    assert out.rstrip().endswith("step bodies executed: 0")
    assert not list(tmp_path.iterdir())  # nothing left behind in the working directory


def test_llamaindex_nested_workflows(tmp_path: Path) -> None:
    """LlamaIndex code with only its imports changed: killed inside the nested workflow,
    recovered; the nested run is a child run and completed steps ran once."""
    out, statuses = run_with_db("llamaindex_nested_workflows.py", tmp_path)
    assert "KILLED pid" in out and "RECOVERED research-" in out
    for name in ("plan", "critique", "answer"):
        assert re.search(rf"{name} +ran once", out), name
    for name in ("research", "improve"):
        assert re.search(rf"{name} +ran twice", out), name
    assert "'answer': 'Revenue grew 12% (How did revenue grow in 2023?)'" in out
    assert re.search(r"research-\w+/research:e\w+#1 ReflectionFlow: completed \(child of", out)
    assert statuses == ["completed", "completed"]
