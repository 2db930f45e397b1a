"""The run page's step graph in a real browser (Chromium, as tests/test_ui_browser.py
drives it): the SVG is drawn under the page's Content-Security-Policy with no console
error, every node is on screen with its size, and the graph is in the screenshot."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from test_ui_browser import ARGS, CHROMIUM, TOKEN, artefacts, playwright, serving
from test_ui_graph import Desk

from engine import configure


def test_step_graph_is_drawn_under_the_csp(db_path: Path, tmp_path: Path) -> None:
    """The seven nodes of a finished Desk run, each a visible box; no CSP or script error."""
    eng = configure(db_path, lease_seconds=0)
    try:

        async def run() -> Any:
            return await Desk().run(q="hard", run_id="drawn")

        assert asyncio.run(run()) == "HARD"
    finally:
        eng.close()
    errors: list[str] = []
    with serving(db_path) as url, playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = chromium.new_page(viewport={"width": 1200, "height": 1000})
            page.set_default_timeout(15_000)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(url + f"/runs/drawn?token={TOKEN}")
            graph = page.locator("#step-graph svg.flow-graph")
            playwright.expect(graph).to_be_visible()
            nodes = page.locator("#step-graph g.flow-node")
            assert nodes.count() == 7  # 3 steps; StartEvent, Asked, Answered, StopEvent
            boxes = [nodes.nth(i).bounding_box() for i in range(nodes.count())]
            assert all(b is not None and b["width"] > 40 and b["height"] > 20 for b in boxes)
            labels = sorted(nodes.nth(i).locator("text").text_content() for i in range(7))
            assert labels == sorted(
                ["StartEvent", "ask", "Asked", "think", "Answered", "reply", "StopEvent"]
            )
            page.locator("#step-graph").screenshot(path=artefacts(tmp_path) / "step-graph.png")
        finally:
            chromium.close()
    assert errors == []
