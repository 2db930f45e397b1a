"""The web UI in a real browser: Debian's Chromium, headless, driven by Playwright.

The server is uvicorn in a thread on 127.0.0.1; the browser is refused without the
access token, then opens the address with it (a cookie carries it on), the run list, a
run, picks a step on the timeline, reads the state, forks from it with an edit, and
checks that a ``<script>`` payload shows as text and runs nothing. Screenshots go to
the test's tmp_path. Skipped when /usr/bin/chromium is missing (CI installs it);
``playwright install`` is never needed: the system browser is launched.
"""

from __future__ import annotations

import contextlib
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
from _children import PROCS

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
    with serving(db_path) as url:
        yield url


@contextlib.contextmanager
def serving(db_path: Path) -> Iterator[str]:
    """The UI over ``db_path`` in a uvicorn thread on a free loopback port."""
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


# -- the run's story, at two widths --------------------------------------------------------

sys.path.insert(0, str(PROCS))
import ui_story_workload as story_wl  # noqa: E402 - lives in tests/_procs, beside its child

WIDTHS = (1400, 800)

# The part of an element that is really on screen: inside the viewport and inside every
# ancestor that clips (overflow other than visible). A clipped id would be cut here.
VISIBLE_JS = """el => {
  let r = el.getBoundingClientRect();
  let box = {left: r.left, right: r.right, top: r.top, bottom: r.bottom};
  for (let a = el.parentElement; a; a = a.parentElement) {
    const s = getComputedStyle(a);
    if (s.overflowX !== "visible" || s.overflowY !== "visible") {
      const c = a.getBoundingClientRect();
      box = {left: Math.max(box.left, c.left), right: Math.min(box.right, c.right),
             top: Math.max(box.top, c.top), bottom: Math.min(box.bottom, c.bottom)};
    }
  }
  box.left = Math.max(box.left, 0);
  box.right = Math.min(box.right, document.documentElement.clientWidth);
  return {shown: Math.max(box.right - box.left, 0), width: r.width, height: r.height,
          scroll: el.scrollWidth, client: el.clientWidth};
}"""


def artefacts(tmp_path: Path) -> Path:
    """Where screenshots go: ``$DURABLE_TEST_ARTIFACTS`` if set, else the test's tmp_path."""
    folder = Path(os.environ.get("DURABLE_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def assert_fully_shown(page: Any, selector: str) -> int:
    """Every element ``selector`` matches is on screen whole (not clipped, not cut).
    Measured in one script call: the list's live refresh may replace rows meanwhile."""
    boxes = page.evaluate(
        "sel => Array.from(document.querySelectorAll(sel),"
        f" el => [el.innerText, ({VISIBLE_JS})(el)])",
        selector,
    )
    assert boxes, f"nothing matches {selector}"
    for i, (text, box) in enumerate(boxes):
        where = f"{selector} #{i} ({text!r}) at {page.viewport_size}"
        assert box["width"] > 0 and box["height"] > 0, where
        assert box["shown"] >= box["width"] - 0.5, f"{where} is cut: {box}"
        assert box["scroll"] <= box["client"] + 1 or box["client"] == 0, f"{where}: {box}"
    return len(boxes)


def assert_no_sideways_scroll(page: Any) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], f"the page is {width}px wide"


@pytest.mark.slow
def test_the_run_story_at_two_widths(db_path: Path, tmp_path: Path) -> None:
    """A run crashed by SIGKILL and taken over by another process shows the owner change
    and the lease wait on its timeline; a failed run shows its traceback; the step page
    reads inputs, result, changes, entries in that order; the run list pages, counts and
    searches. At 1400 and 800 px wide, every id is on screen whole."""
    crash = story_wl.crash_and_recover(db_path, "crashed-1", lease=1.0)
    eng = configure(db_path, lease_seconds=1.0)
    try:
        with pytest.raises(Exception, match="no stock"):
            story_wl.broken.run(XSS, run_id="broken-1")
        for i in range(3):
            tally.run(1, run_id=f"t{i}-{'0123456789abcdef' * 2}")  # 34-character ids
    finally:
        eng.close()
    assert crash["result"] == 60
    out = artefacts(tmp_path)
    errors: list[str] = []
    expect = playwright.expect
    with serving(db_path) as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            for width in WIDTHS:
                page = browser.new_page(viewport={"width": width, "height": 900})
                page.set_default_timeout(15_000)
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

                # The list: 5 runs over pages of 2, with totals, counts and a pager.
                page.goto(url + f"/?token={TOKEN}&limit=2")
                expect(page.locator("#total")).to_have_text("5")
                expect(page.locator('#counts [data-status="completed"] .n')).to_have_text("4")
                expect(page.locator('#counts [data-status="failed"] .n')).to_have_text("1")
                expect(page.locator(".runs-pager").first).to_contain_text("page 1 of 3")
                assert_fully_shown(page, "#runs a.rid")
                assert_fully_shown(page, "#runs td.dur")
                assert_fully_shown(page, "#runs .status")
                for box in page.evaluate(
                    "Array.from(document.querySelectorAll('#runs a.rid, #runs .status'),"
                    " e => e.getClientRects().length)"
                ):
                    assert box == 1, "an id or a status is broken over lines"
                assert_no_sideways_scroll(page)
                page.screenshot(path=out / f"runs-{width}.png", full_page=True)
                page.locator(".runs-pager a.next").first.click()
                expect(page.locator(".runs-pager").first).to_contain_text("page 2 of 3")
                assert page.locator("#runs a.rid").count() == 2

                # Search by id.
                page.goto(url + "/")
                page.locator('input[name="q"]').fill("crashed")
                page.locator('.filters button[type="submit"]').click()
                expect(page.locator("#total")).to_have_text("1")
                expect(page.locator("#runs a.rid")).to_have_text("crashed-1")

                # The crashed run: the owner change on the timeline, the last step selected.
                page.locator("#runs a.rid", has_text="crashed-1").click()
                takeover = page.locator(".gantt .row.k-takeover")
                expect(takeover).to_have_count(1)
                expect(takeover).to_contain_text("owner changed")
                expect(takeover).to_contain_text("epoch 1 → 2")
                expect(takeover.locator("rect.bar.takeover")).to_be_visible()
                expect(page.locator("#takeovers")).to_contain_text("before #3")
                expect(page.locator("#owners")).to_contain_text(f":{crash['pid']}:")
                expect(page.locator("h2#selected")).to_contain_text("Step #4")
                labels = page.locator(".gantt .row .what").all_inner_texts()
                assert labels.index("owner changed") == labels.index("fetch#3") - 1
                assert_fully_shown(page, ".run-head h1 .rid")
                assert_no_sideways_scroll(page)
                page.screenshot(path=out / f"run-crashed-{width}.png", full_page=True)

                # Its step page, from the selected step.
                page.locator("a.step-link").click()
                expect(page.locator("h1#step-title")).to_contain_text("Step #4")
                tops = [page.locator(f"#{s}").bounding_box()["y"]
                        for s in ("inputs", "result", "mutations", "entries")]  # fmt: skip
                assert tops == sorted(tops), tops
                expect(page.locator("#result")).to_contain_text("30")
                assert_fully_shown(page, ".crumbs a.rid")
                assert_no_sideways_scroll(page)
                page.screenshot(path=out / f"step-{width}.png", full_page=True)

                # The failed run: its traceback in view, as text.
                page.goto(url + "/runs/broken-1")
                trace = page.locator("#failure pre.traceback")
                expect(trace).to_be_visible()
                expect(trace).to_contain_text("Traceback (most recent call last)")
                expect(page.locator("#failure")).to_contain_text(f"ValueError: no stock for {XSS}")
                assert page.evaluate("document.scripts.length") == 1
                assert_fully_shown(page, ".run-head h1 .rid")
                assert_no_sideways_scroll(page)
                page.screenshot(path=out / f"run-failed-{width}.png", full_page=True)
                page.close()
        finally:
            browser.close()
    assert errors == [], errors
    for width in WIDTHS:
        for name in ("runs", "run-crashed", "step", "run-failed"):
            assert (out / f"{name}-{width}.png").stat().st_size > 0
    print(f"screenshots in {out}")
