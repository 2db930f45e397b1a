"""A planner that re-plans when a step fails, and time travel across its plan revisions.

LlamaIndex's planning notebook has an agent write a plan, execute it step by step,
and revise it as results come in. Here:

1. ``planner`` writes plan revision 1 (a list of tool calls) to ``ctx.store``.
2. ``execute`` runs one plan step per event; every step is a journaled checkpoint.
3. A tool fails (the 2023 annual report is not published): ``execute`` hands the error
   to the planner, which writes plan revision 2 around it; the run finishes.
4. Time travel: ``engine.history`` finds the checkpoints where the plan changed,
   ``engine.state_at`` shows each revision as it was, and ``engine.diff`` shows what
   changed between them.

The planner and the tools are deterministic stand-ins for the LLM and real APIs.
Run it from the repository root: ``python examples/planning_workflow.py [--db PATH]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from typing import Any

import engine
from engine import Context, Event, StartEvent, StopEvent, Workflow, step

GOAL = "How much did Acme's revenue grow from 2022 to 2023?"


# -- deterministic stand-ins for the planner LLM and the tools ---------------------------


class ToolError(Exception):
    pass


def llm_plan(goal: str) -> list[dict[str, Any]]:
    return [
        {"id": "s1", "tool": "search", "input": "Acme revenue 2022"},
        {"id": "s2", "tool": "fetch_report", "input": "Acme annual report 2023"},
        {"id": "s3", "tool": "growth", "input": ["s1", "s2"]},
        {"id": "s4", "tool": "write", "input": ["s1", "s2", "s3"]},
    ]


def llm_replan(steps: list[dict[str, Any]], failed: str, error: str) -> list[dict[str, Any]]:
    """Replace the failed step by another way to the same number, and rewire its uses."""
    new_id = f"{failed}b"
    out = []
    for s in steps:
        if s["id"] == failed:
            out.append({"id": new_id, "tool": "sum_quarters", "input": "Acme 10-Q filings 2023"})
        else:
            refs = s["input"]
            if isinstance(refs, list):
                refs = [new_id if r == failed else r for r in refs]
            out.append({**s, "input": refs})
    return out


def search(query: str, results: dict[str, Any]) -> float:
    return {"Acme revenue 2022": 120.0}[query]


def fetch_report(name: str, results: dict[str, Any]) -> float:
    raise ToolError(f"404 Not Found: {name!r} is not published yet")


def sum_quarters(name: str, results: dict[str, Any]) -> float:
    return 31.0 + 33.0 + 34.0 + 37.0


def growth(refs: list[str], results: dict[str, Any]) -> float:
    before, after = (results[r] for r in refs)
    return round(100 * (after - before) / before, 1)


def write(refs: list[str], results: dict[str, Any]) -> str:
    before, after, pct = (results[r] for r in refs)
    return f"Acme's revenue grew {pct}% from ${before:.0f}M (2022) to ${after:.0f}M (2023)."


TOOLS = {f.__name__: f for f in (search, fetch_report, sum_quarters, growth, write)}


# -- the workflow -----------------------------------------------------------------------


class ExecuteEvent(Event):
    index: int


class ReplanEvent(Event):
    failed: str
    error: str


class PlanningFlow(Workflow):
    @step
    async def planner(self, ctx: Context, ev: StartEvent | ReplanEvent) -> ExecuteEvent:
        if isinstance(ev, StartEvent):
            await ctx.store.set("goal", ev.goal)
            await ctx.store.set("results", {})
            plan = {"revision": 1, "steps": llm_plan(ev.goal)}
        else:
            old = await ctx.store.get("plan")
            plan = {
                "revision": old["revision"] + 1,
                "steps": llm_replan(old["steps"], ev.failed, ev.error),
                "why": f"{ev.failed} failed: {ev.error}",
            }
        await ctx.store.set("plan", plan)
        results = await ctx.store.get("results")
        todo = next(i for i, s in enumerate(plan["steps"]) if s["id"] not in results)
        return ExecuteEvent(index=todo)

    @step
    async def execute(
        self, ctx: Context, ev: ExecuteEvent
    ) -> ExecuteEvent | ReplanEvent | StopEvent:
        plan = await ctx.store.get("plan")
        task = plan["steps"][ev.index]
        results = dict(await ctx.store.get("results"))
        try:
            output = TOOLS[task["tool"]](task["input"], results)
        except ToolError as exc:
            failures = await ctx.store.get("failures", [])
            await ctx.store.set("failures", [*failures, {"step": task["id"], "error": str(exc)}])
            return ReplanEvent(failed=task["id"], error=str(exc))
        results[task["id"]] = output
        await ctx.store.set("results", results)
        if ev.index + 1 < len(plan["steps"]):
            return ExecuteEvent(index=ev.index + 1)
        return StopEvent(result=output)


# -- the story --------------------------------------------------------------------------


def describe(task: dict[str, Any]) -> str:
    return f"{task['id']:<3} {task['tool']}({task['input']!r})"


def story(db: str) -> int:
    engine.configure(db)
    run_id = f"plan-{uuid.uuid4().hex[:6]}"
    wf = PlanningFlow()
    print(f"1. The planner works on: {GOAL}")
    answer = wf.run(run_id=run_id, goal=GOAL).result(timeout=30)
    print(f"   answer: {answer}")

    print("\n2. Its checkpoints, one per step (wf.checkpoints)")
    for cp in wf.checkpoints(run_id):
        state = cp.state
        plan, results = state["plan"], state["results"]
        if cp.step == "planner":
            what = f"wrote plan revision {plan['revision']} ({len(plan['steps'])} steps)"
        elif cp.emitted == ("ReplanEvent",):
            what = f"{state['failures'][-1]['step']} FAILED: {state['failures'][-1]['error']}"
        else:
            done = list(results)[-1]
            what = f"{done} done: {results[done]!r}"
        print(f"   #{cp.number} {cp.step:<8} {what}")

    print("\n3. Time travel to each plan revision (engine.history + engine.state_at)")
    revisions = [cp for cp in engine.history(run_id) if "plan" in cp.set_keys]
    for cp in revisions:
        plan = engine.state_at(run_id, step=cp.number).values["plan"]
        why = f" ({plan['why']})" if "why" in plan else ""
        print(f"   revision {plan['revision']}, at checkpoint #{cp.number}{why}")
        for task in plan["steps"]:
            print(f"      {describe(task)}")

    first, second = revisions[0].number, revisions[1].number
    print(f"\n4. engine.diff({run_id!r}, {first}, {second}): from revision 1 to revision 2")
    d = engine.diff(run_id, first, second)
    for path, (old, new) in d.changed.items():
        print(f"   changed {path}: {old!r} -> {new!r}")
    for path, value in d.added.items():
        print(f"   added   {path}: {value!r}")
    for path, value in d.removed.items():
        print(f"   removed {path}: {value!r}")
    ok = len(revisions) == 2 and "plan.revision" in d.changed and answer.startswith("Acme")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="journal path (default: a temporary directory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="durable-example-") as tmp:
        try:
            return story(args.db or os.path.join(tmp, "journal.db"))
        finally:
            engine.default_engine().close()


if __name__ == "__main__":
    sys.exit(main())
