"""``python -m engine.demo``: durable execution, told in the terminal in ten seconds.

1. An order pipeline of eight steps starts as a durable run in a child process.
2. Once step 4's completion is in the journal, the child is SIGKILLed.
3. A new process recovers the run: steps 1-4 are replayed from the journal, not
   executed again (a side-effect log counts every real execution).
4. The run's history, its state at an earlier step and a diff between two steps.
5. A fork from the middle with an edited value, next to the original.

It needs no network; the journal lives in a temporary directory unless ``--db``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from journal import Journal

from . import _demo_workload as workload
from . import _render as render
from .replay import replay
from .runtime import Engine, configure
from .timetravel import diff, fork, iter_history, state_at

__all__ = ["main"]

FORK_AT = 3
FORK_EDIT = {"discount_pct": 25}
COMPARE = ("discount_pct", "subtotal", "discount", "tax", "charged", "payment_id", "tracking")


class DemoFailed(Exception):
    """Something in the story did not happen as it should."""


class Demo:
    """The story, one section per method."""

    def __init__(self, console: Console, db: str, log: str, delay: float) -> None:
        self.console = console
        self.db = db
        self.log = log
        self.delay = delay
        self.run_id = f"order-{uuid.uuid4().hex[:8]}"
        self.in_flight: int | None = None
        self.began = time.monotonic()

    # -- helpers -------------------------------------------------------------------

    def say(self, text: str | Text = "", style: str = "") -> None:
        self.console.print(text if isinstance(text, Text) else Text(text, style=style))

    def section(self, title: str) -> None:
        self.console.print()
        self.console.print(Rule(Text(title, style="bold"), align="left", characters="─"))

    def child(self, *args: str) -> subprocess.Popen[str]:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        return subprocess.Popen(
            [sys.executable, "-m", "engine._demo_workload", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )

    def step_line(self, who: str, line: str) -> None:
        word, _, rest = line.partition(" ")
        if word in ("start", "done", "replayed"):
            i = int(rest.split()[0])
            label = f"step {i} {workload.STEPS[i - 1]:<15}"
            text = {
                "start": Text("executing…"),
                "done": Text("completed (journaled)", style="green"),
                "replayed": Text("replayed from the journal, not executed", style="cyan"),
            }[word]
            self.say(Text.assemble(f"  [{who}] ", label, " ") + text)
        elif word in ("pid", "result"):
            pass
        else:
            self.say(f"  [{who}] {line}")

    def executions(self) -> Counter[int]:
        counts: Counter[int] = Counter()
        with open(self.log, encoding="utf-8") as f:
            for line in f:
                run_id, i, *_ = line.split()
                if run_id == self.run_id:
                    counts[int(i)] += 1
        return counts

    # -- the story -----------------------------------------------------------------

    def start_and_kill(self) -> None:
        self.section("1. A durable run starts in a child process")
        self.say(
            "An order pipeline of 8 steps (validate, reserve, price, discount, tax, charge, "
            "ship, receipt); each step keeps its progress in ctx.state and appends a line "
            "to a side-effect log as it executes."
        )
        proc = self.child("start", self.db, self.log, self.run_id, str(self.delay))
        assert proc.stdout is not None
        pid = proc.pid
        self.say(Text.assemble("run ", (self.run_id, "bold"), f" starts in process {pid}"))
        killed = False
        lines: list[str] = []
        for raw in proc.stdout:
            line = raw.strip()
            lines.append(line)
            self.step_line(f"pid {pid}", line)
            if line.startswith("done 4 "):
                os.kill(pid, signal.SIGKILL)  # step 4 is journaled: kill it, now
                killed = True
                break
        for raw in proc.stdout:  # what the child wrote before it died
            line = raw.strip()
            lines.append(line)
            self.step_line(f"pid {pid}", line)
            if line.startswith("start "):
                self.in_flight = int(line.split()[1])
        status = proc.wait()
        if not killed:
            raise DemoFailed(
                f"the child exited with status {status} before step 4 completed:\n"
                + "\n".join(lines)
            )
        self.say(
            Text.assemble(
                ("KILLED ", "bold red"),
                f"process {pid} with SIGKILL right after step 4 completed (exit status {status})",
            )
        )
        with Journal(self.db, readonly=True) as journal:
            run = journal.get_run(self.run_id)
            left = (run.lease_expires_at or 0) - time.time()
        done = self.executions()
        flight = self.in_flight or (max(done) if done and max(done) > 4 else None)
        self.in_flight = flight
        self.say(
            f"The journal still says '{run.status}', owned by the dead process "
            f"(lease expires in {render.duration(max(left, 0))}); steps 1-4 are recorded"
            + (f", step {flight} was in flight." if flight else ".")
        )

    def recover(self) -> None:
        self.section("2. A new process recovers the run")
        proc = self.child("recover", self.db, self.log, str(self.delay))
        assert proc.stdout is not None
        pid = proc.pid
        self.say(f"process {pid} calls engine.recover() once the dead owner's lease runs out")
        lines: list[str] = []
        for raw in proc.stdout:
            line = raw.strip()
            lines.append(line)
            if line.startswith("recovered "):
                _, rid, result = line.split(" ", 2)
                self.say(Text.assemble(("RECOVERED ", "bold green"), rid, f" → {result}"))
            else:
                self.step_line(f"pid {pid}", line)
        if proc.wait() != 0 or not any(x.startswith("recovered ") for x in lines):
            raise DemoFailed("recovery failed:\n" + "\n".join(lines))

        counts = self.executions()
        table = Table(title="side effects: executions per step, across all processes")
        table.add_column("step", justify="right")
        table.add_column("name")
        table.add_column("executions", justify="right")
        table.add_column("")
        redone = []
        for i, name in enumerate(workload.STEPS, 1):
            n = counts[i]
            note = "ran once"
            if i == self.in_flight and n == 2:
                note = "in flight at the kill: never journaled, so it ran again"
            elif i == self.in_flight:
                note = "in flight at the kill, had not started its side effect"
            elif i <= 4:
                note = "completed before the kill: replayed, not re-run"
            if n != 1 and not (i == self.in_flight and n == 2):
                redone.append(i)
                note = "UNEXPECTED"
            table.add_row(str(i), name, str(n), Text(note, style="red" if i in redone else ""))
        self.console.print(table)
        tally = " ".join(f"{i}:{counts[i]}" for i in range(1, len(workload.STEPS) + 1))
        self.say(f"(executions by step: {tally})", style="dim")
        if redone:
            raise DemoFailed(f"steps {redone} executed an unexpected number of times")
        self.say("No completed step was executed twice.", style="green")

    def time_travel(self, eng: Engine) -> None:
        self.section("3. History: the run as the journal recorded it")
        self.say(f"(the same as: durable --db {self.db} history {self.run_id})", style="dim")
        run = eng.journal.get_run(self.run_id)
        timeline = render.Timeline(self.console, run, {run.run_id: run})
        for cp in iter_history(self.run_id, engine=eng):
            timeline.add(cp)
        timeline.close()
        self.say(
            "The gap in the timeline before the step in flight is the crash: recovery "
            "waited for the dead owner's lease to expire.",
            style="dim",
        )

        self.section(f"4. State at step {FORK_AT}, read back from the journal")
        view = state_at(self.run_id, step=FORK_AT, engine=eng)
        self.say(f"(durable state {self.run_id} --at {FORK_AT}; seq {view.seq})", style="dim")
        self.console.print_json(data=view.to_dict())

        self.section(f"5. Diff: what changed from step {FORK_AT} to step 8")
        self.console.print(
            render.diff_table(
                diff(self.run_id, FORK_AT, 8, engine=eng), before="step 3", after="step 8"
            )
        )

    def fork(self, eng: Engine) -> None:
        edit = ", ".join(f"{k}={v}" for k, v in FORK_EDIT.items())
        self.section(f"6. Fork at step {FORK_AT} with {edit}: what if the coupon were bigger?")
        handle = fork(self.run_id, at=FORK_AT, state=FORK_EDIT, engine=eng)
        final = handle.wait(timeout=60)
        if final.status != "completed":
            raise DemoFailed(f"the fork {final.status}: {final.error}")
        self.say(
            Text.assemble(
                ("FORKED ", "bold magenta"),
                f"{handle.run_id}: steps 1-{FORK_AT} shared with the original, "
                f"steps {FORK_AT + 1}-8 executed live with the edit",
            )
        )
        original = state_at(self.run_id, engine=eng).to_dict()
        forked = state_at(handle.run_id, engine=eng).to_dict()
        table = Table()
        table.add_column("state key")
        table.add_column(f"original {self.run_id}", overflow="fold")
        table.add_column(f"fork {handle.run_id[:12]}", overflow="fold")
        for key in COMPARE:
            a, b = original.get(key), forked.get(key)
            table.add_row(
                key,
                render.compact_json(a),
                Text(render.compact_json(b), style="bold yellow" if a != b else ""),
            )
        out_a = eng.outcome(eng.journal.get_run(self.run_id))
        out_b = eng.outcome(final)
        table.add_row(
            Text("result total", style="bold"),
            f"{out_a['total'] / 100:.2f} EUR",
            Text(f"{out_b['total'] / 100:.2f} EUR", style="bold yellow"),
        )
        self.console.print(table)
        for rid in (self.run_id, handle.run_id):
            report = replay(rid, engine=eng)
            if not report.ok:
                raise DemoFailed(f"replay of {rid} diverged: {report.error}")
        self.say("Both runs replay against today's code without divergence (durable replay).")

    def run(self) -> int:
        self.console.print(
            Rule(
                Text("durable: a run killed mid-way, recovered, then time-travelled", style="bold")
            )
        )
        self.say(f"journal: {self.db}", style="dim")
        self.start_and_kill()
        self.recover()
        workload.ANNOUNCE = False  # the fork runs in this process: it prints nothing
        os.environ["DURABLE_DEMO_LOG"] = self.log
        os.environ["DURABLE_DEMO_DELAY"] = str(self.delay)
        eng = configure(self.db)
        try:
            self.time_travel(eng)
            self.fork(eng)
        finally:
            eng.close()
        self.section("Done")
        self.say(f"The demo took {time.monotonic() - self.began:.1f} s.")
        return 0

    def epilogue(self, kept: bool) -> None:
        """The CLI commands that show the same things."""
        db = self.db if kept else "demo.db"
        if not kept:
            self.say(
                "The journal was in a temporary directory. Keep it with "
                "`python -m engine.demo --db demo.db`, then explore it with the CLI:"
            )
        else:
            self.say("Explore the journal with the CLI:")
        rid = self.run_id if kept else "RUN"
        for cmd in ("runs", f"history {rid}", f"state {rid} --at 5", f"diff {rid} 3 8",
                    f"replay {rid} --import engine._demo_workload", "search notebook"):  # fmt: skip
            self.say(f"  durable --db {db} {cmd}")


def main(argv: list[str] | None = None) -> int:
    """Run the demo; exit status 0 when the whole story happened as told."""
    parser = argparse.ArgumentParser(
        prog="python -m engine.demo",
        description="A durable run is SIGKILLed mid-way, recovered by a new process, "
        "then inspected and forked.",
    )
    parser.add_argument(
        "--db", help="keep the journal at this path (default: a temporary directory)"
    )
    parser.add_argument(
        "--delay", type=float, default=0.15, help="seconds each step takes (default 0.15)"
    )
    args = parser.parse_args(argv)
    console = render.make_console()
    with tempfile.TemporaryDirectory(prefix="durable-demo-") as tmp:
        db = args.db or os.path.join(tmp, "demo.db")
        log = os.path.join(tmp, "side-effects.log")
        demo = Demo(console, db, log, args.delay)
        try:
            status = demo.run()
        except DemoFailed as exc:
            console.print(Text(f"demo failed: {exc}", style="bold red"))
            return 1
        demo.epilogue(kept=bool(args.db))
        with contextlib.suppress(OSError):
            sys.stdout.flush()
        return status


if __name__ == "__main__":
    sys.exit(main())
