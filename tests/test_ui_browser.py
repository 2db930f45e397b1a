"""The web UI in a real browser: Debian's Chromium, headless, driven by Playwright.

The server is uvicorn in a thread on 127.0.0.1; the browser is refused without the
access token, then opens the address with it (a cookie carries it on), the run list, a
run, picks a step on the timeline, reads the state, forks from it with an edit, and
checks that a ``<script>`` payload shows as text and runs nothing. Screenshots go to
the test's tmp_path. Skipped when /usr/bin/chromium is missing (CI installs it);
``playwright install`` is never needed: the system browser is launched.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import Context, Engine, configure, durable, step
from engine.ui import create_app
from journal import Journal

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
XSS = "<script>alert(1)</script>"
TOKEN = "browser-test-token-0123456789"

if not os.path.exists(CHROMIUM):
    REASON = f"{CHROMIUM} is missing: apt-get install -y chromium"
    print(f"test_ui_browser: skipped: {REASON}", file=sys.stderr)
    pytest.skip(REASON, allow_module_level=True)

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
uvicorn = pytest.importorskip("uvicorn", reason="the ui extra is not installed")


@step
def add(a: int, b: int) -> int:
    return a + b


@durable(name="ui_browser:tally")
def tally(ctx: Context, n: int) -> dict[str, Any]:
    ctx.state["note"] = XSS
    ctx.state["factor"] = 1
    ctx.state["count"] = 0
    for i in range(n):
        ctx.state["count"] = add(ctx.state["count"], (i + 1) * ctx.state["factor"])
    ctx.state["done"] = True
    return {"count": ctx.state["count"]}


@pytest.fixture
def server(db_path: Path) -> Iterator[str]:
    """The UI over a journal holding one finished run, served on a free loopback port."""
    eng = configure(db_path, lease_seconds=0)
    try:
        tally.run(3, run_id="b1")
    finally:
        eng.close()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # bound before the server starts: no race for the port
    port = sock.getsockname()[1]
    app = create_app(db_path, token=TOKEN, port=port)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=30)
    sock.close()


@pytest.fixture
def page(server: str) -> Iterator[Any]:
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            pg = browser.new_page(viewport={"width": 1400, "height": 1000})
            pg.set_default_timeout(15_000)
            yield pg
        finally:
            browser.close()


def test_browse_pick_a_step_and_fork(server: str, page: Any, db_path: Path, tmp_path: Path) -> None:
    """The run list updates live; a step picked on the timeline shows its state; a
    fork with an edited value runs and appears in the list; payloads are text."""
    expect = playwright.expect
    dialogs: list[str] = []
    errors: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: errors.append(str(e)))
    # A console error would be a script failing or the CSP blocking something.
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    # Without the access token nothing is shown; the URL `durable ui` prints has it,
    # and a cookie carries it from then on.
    refused = page.goto(server + "/")
    assert refused is not None and refused.status == 403
    expect(page.locator("h1")).to_contain_text("access token")
    errors.clear()  # the browser reports the 403 itself as a console error

    # The run list, refreshed from /api/runs while it is open.
    page.goto(server + f"/?token={TOKEN}")
    expect(page.locator("#runs a.rid", has_text="b1")).to_be_visible()
    with Journal(db_path) as j:  # another writer starts a run: no reload needed to see it
        j.create_run("late-arrival", name="ui_browser:tally", status="running")
    expect(page.locator("#runs a.rid", has_text="late-arrival")).to_be_visible()
    page.screenshot(path=tmp_path / "runs.png", full_page=True)

    # A run: its timeline has a row per step; pick step 2 on it.
    page.locator("#runs a.rid", has_text=re.compile(r"^b1$")).click()
    expect(page.locator(".run-head .status")).to_have_text("completed")
    bars = page.locator("svg.track a[data-step]")
    expect(bars).to_have_count(4)  # add#1..3 and the run's end
    bars.nth(1).click()
    page.wait_for_url(re.compile(r"step=2"))
    expect(page.locator("h2#selected")).to_contain_text("Step #2")
    state = page.locator("#state")
    expect(state).to_contain_text("count: 1")
    expect(state).to_contain_text(XSS)  # shown as text...
    assert page.locator("#state script").count() == 0  # ...and not as an element
    assert page.evaluate("document.scripts.length") == 1  # only the UI's own
    page.screenshot(path=tmp_path / "run.png", full_page=True)

    # Fork from step 2 with the factor edited: the steps after it use the new value.
    area = page.locator("#fork-form textarea")
    values = json.loads(area.input_value())
    assert values == {"note": XSS, "factor": 1, "count": 1}
    values["factor"] = 100
    area.fill(json.dumps(values, indent=2))
    page.locator("#fork-form button").click()
    page.wait_for_url(re.compile(r"/runs/(?!b1\b)[0-9a-f]{32}"))
    fork_id = page.url.rsplit("/", 1)[-1].split("?")[0]
    expect(page.locator(".run-head .status")).to_have_text("completed")
    expect(page.locator(".run-head")).to_contain_text('{"count": 303}')  # 1 + 2 + 3 * 100
    expect(page.locator(".run-head")).to_contain_text("at step 2, edited factor")
    page.screenshot(path=tmp_path / "fork.png", full_page=True)

    page.goto(server + "/")
    row = page.locator(f'#runs tr[data-run="{fork_id}"]')
    expect(row).to_contain_text("fork of b1")
    expect(row.locator(".status")).to_have_text("completed")

    # A run page follows its run: another writer cancels it, the page shows it.
    page.goto(server + "/runs/late-arrival")
    expect(page.locator(".run-head .status")).to_have_text("running")
    expect(page.locator("#cancel-form")).to_be_visible()
    with Engine(db_path) as other:
        other.cancel("late-arrival")
    expect(page.locator(".run-head .status")).to_have_text("cancelled")
    expect(page.locator("#cancel-form")).to_be_hidden()  # nothing left to cancel

    assert dialogs == [], dialogs  # no alert() ever ran
    assert errors == [], errors
    print(f"screenshots in {tmp_path}")
