"""The step graph on a workflow run's page: an inline SVG drawn on the server from the
journal (no script, nothing fetched), escaped, and absent from non-workflow runs."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from engine import Event, StartEvent, StopEvent, Workflow, configure, step
from engine.ui import create_app
from journal import EntryKind, Journal

XSS = "<script>alert(1)</script>"


class Asked(Event):
    q: str


class Answered(Event):
    a: str


class Desk(Workflow):
    @step
    async def ask(self, ev: StartEvent) -> Asked | Answered:
        return Answered(a="known") if ev.q == "easy" else Asked(q=ev.q)

    @step
    async def think(self, ev: Asked) -> Answered:
        return Answered(a=ev.q.upper())

    @step
    async def reply(self, ev: Answered) -> StopEvent:
        return StopEvent(result=ev.a)


@pytest.fixture
def client(db_path: Path) -> Iterator[TestClient]:
    eng = configure(db_path, lease_seconds=0)
    try:

        async def both() -> None:
            await Desk().run(q="hard", run_id="hard")
            await Desk().run(q="easy", run_id="easy")

        asyncio.run(both())
    finally:
        eng.close()
    with Journal(db_path) as j:
        j.create_run("fn", name="m:f", entries=[j.entry(EntryKind.RUN_STARTED)])
        j.create_run(
            "crafted",
            name=XSS,
            kind="workflow",
            status="failed",
            entries=[
                j.entry(EntryKind.RUN_STARTED),
                j.entry(EntryKind.STEP_COMPLETED, {"consumed": XSS, "emitted": []}, step=XSS,
                        key="k"),
            ],
        )  # fmt: skip
    app = create_app(db_path)
    with TestClient(
        app, base_url="http://127.0.0.1", headers={"Authorization": f"Bearer {app.state.token}"}
    ) as c:
        yield c


def _edges(html: str) -> set[tuple[str, str]]:
    return set(re.findall(r'data-source="[a-z]+:([^"]+)" data-target="[a-z]+:([^"]+)"', html))


def test_run_page_shows_the_steps_it_ran(client: TestClient) -> None:
    """The graph is the run's journal: the branch it took, not the one it did not."""
    resp = client.get("/runs/hard")
    assert resp.status_code == 200
    html = resp.text
    assert 'id="step-graph"' in html and html.count('class="flow-graph"') == 1
    assert _edges(html) == {
        ("StartEvent", "ask"), ("ask", "Asked"), ("Asked", "think"), ("think", "Answered"),
        ("Answered", "reply"), ("reply", "StopEvent"),
    }  # fmt: skip
    assert _edges(client.get("/runs/easy").text) == {
        ("StartEvent", "ask"), ("ask", "Answered"), ("Answered", "reply"), ("reply", "StopEvent"),
    }  # fmt: skip
    # Still the package's one script, under the same policy: the SVG needs neither.
    assert (
        html.count("<script") == 1
        and "script-src 'self'" in resp.headers["content-security-policy"]
    )
    assert "3 steps" in html
    assert "Answered → StopEvent" in html  # the timeline names the StopEvent as well


def test_no_graph_for_a_function_run(client: TestClient) -> None:
    """A durable function's run has no step graph section."""
    html = client.get("/runs/fn").text
    assert 'id="step-graph"' not in html


def test_journaled_names_are_escaped(client: TestClient) -> None:
    """A step name from a crafted journal shows as text."""
    html = client.get("/runs/crafted").text
    assert 'id="step-graph"' in html
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
