"""Drawings of a workflow: every possible flow from the step signatures, and what a run
did from its journal; HTML (inline SVG, nothing fetched) or Mermaid text."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import (
    Context,
    DrawingError,
    Engine,
    Event,
    StartEvent,
    StopEvent,
    Workflow,
    configure,
    draw_all_possible_flows,
    draw_all_possible_flows_mermaid,
    draw_most_recent_execution,
    draw_most_recent_execution_mermaid,
    history,
    run_graph,
    step,
    workflow_graph,
)
from journal import EntryKind, Journal


class Left(Event):
    n: int


class Right(Event):
    n: int


class Again(Event):
    n: int


class Fork(Workflow):
    """route -> Left | Right; left loops through Again until n reaches 3; both stop."""

    @step
    async def route(self, ev: StartEvent) -> Left | Right:
        return Left(n=0) if ev.side == "left" else Right(n=0)

    @step
    async def left(self, ev: Left | Again) -> Again | StopEvent:
        return StopEvent(result=ev.n) if ev.n >= 3 else Again(n=ev.n + 1)

    @step
    async def right(self, ctx: Context, ev: Right) -> StopEvent:
        return StopEvent(result="right")


class Broken(Workflow):
    @step
    async def begin(self, ev: StartEvent) -> Left:
        return Left(n=1)

    @step
    async def fail(self, ev: Left) -> StopEvent:
        raise ValueError("no")


ALL_EDGES = {
    ("StartEvent", "route"),
    ("route", "Left"),
    ("route", "Right"),
    ("Left", "left"),
    ("Again", "left"),
    ("left", "Again"),
    ("left", "StopEvent"),
    ("Right", "right"),
    ("right", "StopEvent"),
}


@pytest.fixture(autouse=True)
def fresh(db_path: Path) -> Iterator[Engine]:
    eng = configure(db_path, lease_seconds=0)
    yield eng
    eng.close()


def _await(handler: Any) -> Any:
    async def wait() -> Any:
        return await handler

    return asyncio.run(wait())


class TestAllPossibleFlows:
    def test_nodes_and_edges_of_a_branching_workflow(self) -> None:
        """Every event type to the steps accepting it, every step to what it returns."""
        graph = workflow_graph(Fork)
        kinds = {n.label: n.kind for n in graph.nodes}
        assert kinds == {
            "route": "step", "left": "step", "right": "step", "StartEvent": "start",
            "Left": "event", "Right": "event", "Again": "event", "StopEvent": "stop",
        }  # fmt: skip
        assert graph.edge_labels() == ALL_EDGES
        assert workflow_graph(Fork()).edge_labels() == ALL_EDGES  # an instance as well

    def test_html_is_self_contained(self, tmp_path: Path) -> None:
        """One SVG, no script, nothing fetched: the only URL is the SVG namespace."""
        out = tmp_path / "flows.html"
        draw_all_possible_flows(Fork, filename=out)
        text = out.read_text()
        assert text.startswith("<!doctype html>") and text.count("<svg") == 1
        assert "<script" not in text.lower() and "src=" not in text
        assert set(re.findall(r"https?://[^\s\"'<>]+", text)) == {"http://www.w3.org/2000/svg"}
        drawn = set(re.findall(r'data-source="step:(\w+)" data-target="event:(\w+)"', text))
        assert drawn == {(s, e) for s, e in ALL_EDGES if s in ("route", "left", "right")}

    def test_mermaid(self, tmp_path: Path) -> None:
        """A .mmd file (or the _mermaid function) gets Mermaid text with every edge."""
        out = tmp_path / "flows.mmd"
        draw_all_possible_flows(Fork(), filename=out)
        text = out.read_text()
        assert text == draw_all_possible_flows_mermaid(Fork, filename=None)
        assert text.startswith("flowchart TD\n")
        ids = dict(re.findall(r'^\s+(n\d+)\(?\["([^"]+)"\]\)?:::', text, flags=re.M))
        edges = {(ids[a], ids[b]) for a, b in re.findall(r"^\s+(n\d+) --> (n\d+)$", text, re.M)}
        assert edges == ALL_EDGES

    def test_long_labels_are_cut(self) -> None:
        """max_label_length shortens labels, as LlamaIndex's does."""
        graph = workflow_graph(Fork, max_label_length=4)
        assert {n.label for n in graph.nodes} >= {"rou…", "Sta…", "left"}


class TestExecution:
    def test_run_graph_matches_the_journal(self, db_path: Path) -> None:
        """The counted graph of a run: the steps and events the journal holds, each
        as often as it happened, a subset of every possible flow."""
        handler = Fork().run(side="left", run_id="lefty")
        assert _await(handler) == 3
        graph = run_graph("lefty")
        assert graph.edge_labels() <= ALL_EDGES
        assert graph.edge_labels() == ALL_EDGES - {("route", "Right"), ("Right", "right"),
                                                   ("right", "StopEvent")}  # fmt: skip
        steps = Counter(cp.name for cp in history("lefty") if cp.kind == EntryKind.STEP_COMPLETED)
        assert {n.label: n.count for n in graph.nodes if n.kind == "step"} == dict(steps)
        counts = {(e.source, e.target): e.count for e in graph.edges}
        assert counts[("step:left", "event:Again")] == 3
        assert counts[("event:Again", "step:left")] == 3

    def test_unrolled_execution_follows_each_delivery(self, tmp_path: Path, db_path: Path) -> None:
        """draw_most_recent_execution: one node per step execution, in journal order,
        each linked from the event it consumed, which links from the step that emitted it."""
        handler = Fork().run(side="left")
        _await(handler)
        text = draw_most_recent_execution_mermaid(handler, filename=None)
        labels = dict(re.findall(r'^\s+(n\d+)\(?\["([^"]+)"\]\)?:::', text, flags=re.M))
        edges = [(labels[a], labels[b]) for a, b in re.findall(r"(n\d+) --> (n\d+)", text)]
        with Journal(db_path) as j:
            ran = [e.step for e in j.read(handler.run_id) if e.kind == EntryKind.STEP_COMPLETED]
        step_nodes = [v for v in labels.values() if v in ("route", "left", "right")]
        assert step_nodes == ran == ["route", "left", "left", "left", "left"]
        assert edges == [
            ("StartEvent", "route"), ("route", "Left"), ("Left", "left"), ("left", "Again"),
            ("Again", "left"), ("left", "Again"), ("Again", "left"), ("left", "Again"),
            ("Again", "left"), ("left", "StopEvent"),
        ]  # fmt: skip
        out = tmp_path / "recent.html"
        draw_most_recent_execution(handler, filename=out)
        assert out.read_text().count('class="flow-node flow-step"') == 5

    def test_most_recent_run_of_a_workflow(self, tmp_path: Path) -> None:
        """Given a workflow, its newest run is drawn; with none yet, DrawingError."""
        with pytest.raises(DrawingError, match="No runs"):
            draw_most_recent_execution(Fork(), filename=tmp_path / "none.html")
        _await(Fork().run(side="left"))
        _await(Fork().run(side="right"))
        text = draw_most_recent_execution_mermaid(Fork(), filename=tmp_path / "r.mermaid")
        assert '["right"]' in text and '["left"]' not in text
        assert (tmp_path / "r.mermaid").read_text() == text

    def test_a_failed_run_shows_where(self) -> None:
        """The step that failed the run leads to a failure node."""
        handler = Broken().run(run_id="broken")
        with pytest.raises(ValueError, match="no"):
            _await(handler)
        graph = run_graph("broken")
        failed = [n for n in graph.nodes if n.kind == "failed"]
        assert len(failed) == 1 and failed[0].label == "failed: StepFailed"
        assert ("fail", failed[0].label) in graph.edge_labels()

    def test_a_non_workflow_run_is_refused(self, db_path: Path) -> None:
        """A run that is not a workflow's has no step graph: DrawingError."""
        with Journal(db_path) as j:
            j.create_run("fn-run", name="m:f", entries=[j.entry(EntryKind.RUN_STARTED)])
        with pytest.raises(DrawingError, match="not a workflow run"):
            run_graph("fn-run")
