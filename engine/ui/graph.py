"""The step graph on a workflow run's page: drawn on the server as an inline SVG from
the journal alone (``engine.drawing.run_graph``), so nothing is fetched, no script
runs, and the run's code need not be importable here."""

from __future__ import annotations

from typing import Any

from markupsafe import Markup

from journal import JournalError, Run

from ..drawing import run_graph
from ..errors import EngineError
from ..runtime import Engine

MAX_ENTRIES = 20_000
"""Runs with more journal entries are not drawn on their page (reading them all would
slow every view of it)."""


def step_graph(engine: Engine, run: Run) -> dict[str, Any] | None:
    """``{"svg", "steps", "events"}`` for a workflow run, ``{"error"}`` when it cannot be
    drawn, None for a run that is not a workflow's."""
    if run.kind != "workflow":
        return None
    if run.last_seq > MAX_ENTRIES:
        return {"error": f"not drawn: {run.last_seq} journal entries (more than {MAX_ENTRIES})"}
    try:
        graph = run_graph(run.run_id, engine=engine, max_label_length=40)
    except (JournalError, EngineError) as exc:
        return {"error": str(exc)}
    return {
        "error": None,
        "svg": Markup(graph.to_svg()),  # every label is escaped by to_svg
        "steps": sum(1 for n in graph.nodes if n.kind == "step"),
        "events": sum(1 for n in graph.nodes if n.kind != "step"),
    }
