"""The web UI's JSON API and pages (Starlette's TestClient) over a real journal.

The workload, run once per test: a @durable function whose steps include a retried
attempt, a durable sleep and a child run, and a workflow parked on wait_for_event.
The engine that ran it is closed before the UI opens the file, as if it had been
another process.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from starlette.testclient import TestClient

from engine import (
    Context,
    Engine,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    RetryPolicy,
    StartEvent,
    StopEvent,
    Workflow,
    configure,
    diff,
    durable,
    history,
    state_at,
    step,
)
from engine.ui import create_app, serve
from engine.ui.views import Row, build_timeline
from journal import EntryKind, Journal, copy_journal

XSS = "<script>alert(1)</script>"
CALLS: Counter[str] = Counter()
LOOPBACK = "http://127.0.0.1"


def ui_client(app: Any, base_url: str = LOOPBACK) -> TestClient:
    """A client that carries the app's access token on every request."""
    token = app.state.token
    return TestClient(app, base_url=base_url, headers={"Authorization": f"Bearer {token}"})


@step
def price(item: str) -> int:
    return len(item) * 10


@step(retry=RetryPolicy(attempts=3, wait_initial=0.001))
def charge(amount: int) -> str:
    CALLS["charge"] += 1
    if CALLS["charge"] == 1:
        raise ConnectionError("card network down")
    return f"charged {amount}"


@durable(name="ui_test:receipt")
def receipt(total: int) -> str:
    return f"receipt for {price('x') + total}"


@durable(name="ui_test:order")
def order(ctx: Context, items: list[str]) -> dict[str, Any]:
    ctx.state["items"] = items
    ctx.state["note"] = XSS
    ctx.state["cart"] = {"lines": [{"item": i, "cost": price(i)} for i in ctx.state["items"]]}
    ctx.state["total"] = sum(line["cost"] for line in ctx.state["cart"]["lines"])
    ctx.state["charged"] = charge(ctx.state["total"])
    ctx.sleep(0.01)
    ctx.state["receipt"] = receipt(ctx.state["total"])
    return {"total": ctx.state["total"], "bonus": ctx.state.get("bonus", 0)}


class Ping(Event):
    n: int


class Approve(Event):
    amount: int


class Approval(Workflow):
    @step
    async def start(self, ctx: Context, ev: StartEvent) -> Ping:
        await ctx.store.set("asked", True)
        return Ping(n=1)

    @step
    async def ask(self, ctx: Context, ev: Ping) -> StopEvent:
        answer = await ctx.wait_for_event(
            HumanResponseEvent, waiter_event=InputRequiredEvent(prefix="ship it?"), timeout=60
        )
        await ctx.store.set("answer", answer.response)
        return StopEvent(result=answer.response)

    @step
    async def approve(self, ctx: Context, ev: Approve) -> StopEvent:
        return StopEvent(result=ev.amount)


def _wait_status(path: Path, run_id: str, status: str) -> None:
    deadline = time.monotonic() + 30
    with Journal(path, readonly=True) as j:
        while j.get_run(run_id).status != status:
            assert time.monotonic() < deadline, f"{run_id} never became {status}"
            time.sleep(0.01)


@pytest.fixture
def workload(db_path: Path) -> Path:
    """o1 (completed, with a child), w1 and w2 (workflows waiting for an answer)."""
    CALLS.clear()
    eng = configure(db_path, lease_seconds=0)
    try:
        order.run(["apple", "fig"], run_id="o1")
        Approval().run(run_id="w1")
        Approval().run(run_id="w2")
        _wait_status(db_path, "w1", "waiting")
        _wait_status(db_path, "w2", "waiting")
        _abandon(eng)
    finally:
        eng.close()  # from here on the file is all the UI has, as if another process ran it
    return db_path


def _abandon(eng: Engine) -> None:
    """Stop the parked workflows' coroutines as a dying process would, without a trace
    in the journal, so none is left to be garbage-collected on a closed loop later."""

    async def cancel_all() -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run_coroutine_threadsafe(cancel_all(), eng.background_loop()).result(timeout=30)


@pytest.fixture
def client(workload: Path) -> Iterator[TestClient]:
    with ui_client(create_app(workload)) as c:
        yield c


@pytest.fixture
def ro_client(workload: Path) -> Iterator[TestClient]:
    with ui_client(create_app(workload, readonly=True)) as c:
        yield c


def _eng(path: Path) -> Engine:
    """An engine to compare against, reading the journal the app serves."""
    return Engine(Journal(str(path), readonly=True))


def _wait_finished(client: TestClient, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        doc: dict[str, Any] = client.get(f"/api/runs/{run_id}").json()
        if doc.get("finished"):
            return doc
        assert time.monotonic() < deadline, doc
        time.sleep(0.02)


def _error(resp: Any, status: int, text: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert text in body["error"], body


# -- reading -------------------------------------------------------------------------------


class TestRunList:
    """GET /api/runs filters by status, name and time."""

    def test_lists_every_run_newest_first(self, client: TestClient) -> None:
        runs = client.get("/api/runs").json()["runs"]
        ids = [r["run_id"] for r in runs]
        assert set(ids) == {"o1", "o1/ui_test:receipt#5", "w1", "w2"}
        created = [r["created_at"] for r in runs]
        assert created == sorted(created, reverse=True)
        child = next(r for r in runs if r["parent_run_id"] == "o1")
        assert child["name"] == "ui_test:receipt" and child["status"] == "completed"

    def test_filters(self, client: TestClient) -> None:
        def ids(query: str) -> set[str]:
            resp = client.get(f"/api/runs?{query}")
            assert resp.status_code == 200, resp.text
            return {r["run_id"] for r in resp.json()["runs"]}

        assert ids("status=waiting") == {"w1", "w2"}
        assert ids("status=completed,waiting") == {"o1", "o1/ui_test:receipt#5", "w1", "w2"}
        assert ids("status=completed&status=failed") == {"o1", "o1/ui_test:receipt#5"}
        assert ids("name=ui_test:order") == {"o1"}
        assert ids("name=nothing") == set()
        assert ids(f"since={time.time() + 60}") == set()
        assert ids("until=2000-01-01T00:00") == set()
        assert ids("since=2000-01-01T00:00:00&until=2999-01-01") == ids("")
        assert len(ids("limit=1")) == 1

    def test_bad_filters(self, client: TestClient) -> None:
        _error(client.get("/api/runs?status=sleepy"), 400, "unknown status 'sleepy'")
        _error(client.get("/api/runs?since=yesterday"), 400, "since must be")
        _error(client.get("/api/runs?limit=0"), 400, "limit must be >= 1")
        _error(client.get("/api/runs?limit=ten"), 400, "limit must be an integer")


class TestRun:
    """GET /api/runs/{id}: the row, input and output, children and forks."""

    def test_detail(self, client: TestClient) -> None:
        doc = client.get("/api/runs/o1").json()
        assert doc["status"] == "completed" and doc["kind"] == "function"
        assert doc["input"] == {"args": [["apple", "fig"]], "kwargs": {}}
        assert doc["output"] == {"total": 80, "bonus": 0}
        assert doc["children"] == ["o1/ui_test:receipt#5"] and doc["forks"] == []

    def test_child_run_ids_with_slash_and_hash(self, client: TestClient) -> None:
        resp = client.get("/api/runs/o1%2Fui_test:receipt%235")
        assert resp.status_code == 200 and resp.json()["parent_run_id"] == "o1"
        assert client.get("/api/runs/o1%2Fui_test:receipt%235/history").status_code == 200

    def test_unknown_run(self, client: TestClient) -> None:
        for url in ("/api/runs/nope", "/api/runs/nope/history", "/api/runs/nope/state",
                    "/api/runs/nope/diff?a=0&b=1"):  # fmt: skip
            _error(client.get(url), 404, "no run 'nope'")


class TestHistory:
    """GET /api/runs/{id}/history: the same checkpoints as engine.history()."""

    def test_matches_the_engine(self, client: TestClient, workload: Path) -> None:
        doc = client.get("/api/runs/o1/history").json()
        with _eng(workload) as eng:
            expected = history("o1", engine=eng)
        got = doc["checkpoints"]
        assert [c["number"] for c in got] == [c.number for c in expected]
        assert [c["kind"] for c in got] == [c.kind for c in expected]
        kinds = {c["kind"] for c in got}
        assert {EntryKind.STEP_FAILED, EntryKind.TIMER_STARTED, EntryKind.CHILD_COMPLETED} <= kinds
        failed = next(c for c in got if c["kind"] == EntryKind.STEP_FAILED)
        assert failed["detail"]["error"] == "card network down" and failed["attempt"] == 1

    def test_paging(self, client: TestClient) -> None:
        page = client.get("/api/runs/o1/history?offset=2&limit=3").json()["checkpoints"]
        assert [c["number"] for c in page] == [3, 4, 5]
        _error(client.get("/api/runs/o1/history?offset=-1"), 400, "offset must be >= 0")

    def test_workflow_events(self, client: TestClient) -> None:
        cps = client.get("/api/runs/w1/history").json()["checkpoints"]
        first = cps[0]
        assert first["step"] == "start" and first["detail"]["emitted"] == ["Ping"]
        assert len(first["consumed"]) == 1 and len(first["emitted"]) == 1


class TestState:
    """GET /api/runs/{id}/state?step=N: the state after checkpoint N."""

    def test_every_step_matches_the_engine(self, client: TestClient, workload: Path) -> None:
        n = len(client.get("/api/runs/o1/history").json()["checkpoints"])
        with _eng(workload) as eng:
            for step_no in range(n + 1):
                doc = client.get(f"/api/runs/o1/state?step={step_no}").json()
                assert doc["values"] == state_at("o1", step=step_no, engine=eng).to_dict()
            latest = client.get("/api/runs/o1/state").json()
            assert latest["step"] is None
            assert latest["values"] == state_at("o1", engine=eng).to_dict()
        assert latest["values"]["note"] == XSS  # JSON carries the payload as it is

    def test_bad_step_numbers(self, client: TestClient) -> None:
        _error(client.get("/api/runs/o1/state?step=99"), 400, "there is no step 99")
        _error(client.get("/api/runs/o1/state?step=-1"), 400, "step must be >= 0")
        _error(client.get("/api/runs/o1/state?step=two"), 400, "step must be an integer")


class TestDiff:
    """GET /api/runs/{id}/diff?a=N&b=M."""

    def test_matches_the_engine(self, client: TestClient, workload: Path) -> None:
        doc = client.get("/api/runs/o1/diff?a=0&b=4").json()
        with _eng(workload) as eng:
            expected = diff("o1", 0, 4, engine=eng)
        assert doc["added"] == expected.added and doc["removed"] == expected.removed
        assert doc["added"]["cart"] == {"lines": [{"item": "apple", "cost": 50},
                                                  {"item": "fig", "cost": 30}]}  # fmt: skip
        changed = client.get("/api/runs/o1/diff?a=4&b=9").json()["changed"]
        assert (
            changed == {} and "receipt" in client.get("/api/runs/o1/diff?a=4&b=9").json()["added"]
        )

    def test_changed_values_and_other_run(self, client: TestClient) -> None:
        doc = client.get("/api/runs/w1/diff?a=1&b=1&other=w2").json()
        assert doc["other_run_id"] == "w2"
        assert doc["added"] == doc["removed"] == doc["changed"] == {}

    def test_bad_input(self, client: TestClient) -> None:
        _error(client.get("/api/runs/o1/diff?a=1"), 400, "give both step numbers")
        _error(client.get("/api/runs/o1/diff?a=1&b=99"), 400, "there is no step 99")
        _error(client.get("/api/runs/o1/diff?a=x&b=1"), 400, "a must be an integer")
        _error(client.get("/api/runs/o1/diff?a=0&b=1&other=ghost"), 404, "no run 'ghost'")


# -- actions -------------------------------------------------------------------------------


class TestFork:
    """POST /api/runs/{id}/fork runs engine.fork in the server's process."""

    def test_fork_with_edited_state(self, client: TestClient) -> None:
        resp = client.post("/api/runs/o1/fork", json={"at": 2, "state": {"bonus": 5}})
        assert resp.status_code == 201, resp.text
        fork_id = resp.json()["run_id"]
        assert resp.json() == {"run_id": fork_id, "forked_from": "o1", "at": 2, "edits": ["bonus"]}
        done = _wait_finished(client, fork_id)
        assert done["status"] == "completed" and done["forked_from"] == "o1"
        assert done["output"] == {"total": 80, "bonus": 5}
        listed = client.get("/api/runs?name=ui_test:order").json()["runs"]
        assert fork_id in {r["run_id"] for r in listed}
        assert client.get("/api/runs/o1").json()["forks"] == [fork_id]
        # The fork's history runs on from its source's first two checkpoints.
        cps = client.get(f"/api/runs/{fork_id}/history").json()["checkpoints"]
        assert [c["run_id"] for c in cps[:2]] == ["o1", "o1"]
        assert cps[2]["kind"] == EntryKind.RUN_FORKED
        # Numbered as its source: the fork point's number, holding the edit.
        assert [c["number"] for c in cps[:4]] == [1, 2, 2, 3]
        assert cps[2]["set_keys"] == ["bonus"]
        # Step 2 of the fork's page is the fork's own checkpoint, with the edit.
        page = client.get(f"/runs/{fork_id}?step=2").text
        assert "<dt>set</dt><dd>bonus</dd>" in page

    def test_fork_with_a_chosen_id(self, client: TestClient) -> None:
        resp = client.post("/api/runs/o1/fork", json={"at": 0, "run_id": "mine"})
        assert resp.status_code == 201 and resp.json()["run_id"] == "mine"
        _wait_finished(client, "mine")
        again = client.post("/api/runs/o1/fork", json={"at": 0, "run_id": "mine"})
        _error(again, 409, "a run with that id exists")

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            ({"state": {}}, '"at" must be a checkpoint number'),
            ({"at": "2"}, '"at" must be a checkpoint number'),
            ({"at": True}, '"at" must be a checkpoint number'),
            ({"at": -1}, '"at" must be a checkpoint number'),
            ({"at": 1, "state": [1, 2]}, '"state" must be a JSON object'),
            ({"at": 1, "state": "x=1"}, '"state" must be a JSON object'),
            ({"at": 1, "edits": {}}, "unknown field(s) edits"),
            ({"at": 1, "run_id": ""}, '"run_id" must be a non-empty string'),
            ([1, 2], "the body must be a JSON object"),
            ({"at": 99}, "there is no step 99"),
        ],
    )
    def test_malformed_requests(self, client: TestClient, body: Any, message: str) -> None:
        _error(client.post("/api/runs/o1/fork", json=body), 400, message)

    def test_not_json(self, client: TestClient) -> None:
        bad = client.post(
            "/api/runs/o1/fork", content=b"{at: 1", headers={"content-type": "application/json"}
        )
        _error(bad, 400, "not valid JSON")
        form = client.post("/api/runs/o1/fork", data={"at": "1"})  # an HTML form's encoding
        _error(form, 415, "JSON body")
        cross = client.post(
            "/api/runs/o1/fork", json={"at": 1}, headers={"origin": "http://evil.example"}
        )
        _error(cross, 403, "cross-origin")

    def test_unknown_run(self, client: TestClient) -> None:
        _error(client.post("/api/runs/ghost/fork", json={"at": 1}), 404, "no run 'ghost'")

    def test_code_not_importable_is_409(self, client: TestClient, workload: Path) -> None:
        with Journal(workload) as j:
            j.create_run(
                "orphan",
                name="nowhere_ui_test:gone",
                status="completed",
                entries=[j.entry(EntryKind.RUN_STARTED), j.entry(EntryKind.RUN_COMPLETED)],
            )
        resp = client.post("/api/runs/orphan/fork", json={"at": 1})
        _error(resp, 409, "cannot import 'nowhere_ui_test:gone'")
        assert resp.json()["type"] == "FunctionNotFound"


class TestSendEvent:
    """POST /api/runs/{id}/events calls engine.send_event."""

    def test_event_reaches_the_waiting_run(self, client: TestClient, workload: Path) -> None:
        resp = client.post("/api/runs/w1/events", json={"type": "HumanResponseEvent",
                                                         "response": "yes"})  # fmt: skip
        assert resp.status_code == 202, resp.text
        assert resp.json()["type"] == "HumanResponseEvent" and resp.json()["key"]
        # Journaled at once; the run is now pending for the next worker to resume.
        with Journal(workload, readonly=True) as j:
            received = [e for e in j.read("w1") if e.kind == EntryKind.EVENT_RECEIVED]
            assert j.get_run("w1").status == "pending"
            assert j.decode_entry(received[-1])["event"].response == "yes"

    @pytest.mark.parametrize(
        ("run_id", "body", "status", "message"),
        [
            ("w1", {"response": "no type"}, 400, 'a "type" naming its Event class'),
            ("w1", ["HumanResponseEvent"], 400, 'a "type" naming its Event class'),
            ("w1", {"type": "Nope"}, 400, "unknown event type 'Nope'"),
            ("w1", {"type": "Approve", "amount": "lots"}, 400, "amount"),
            ("o1", {"type": "HumanResponseEvent"}, 409, "not a workflow run"),
            ("ghost", {"type": "HumanResponseEvent"}, 404, "no run 'ghost'"),
        ],
    )
    def test_bad_events(
        self, client: TestClient, run_id: str, body: Any, status: int, message: str
    ) -> None:
        _error(client.post(f"/api/runs/{run_id}/events", json=body), status, message)

    def test_finished_run_takes_no_events(self, client: TestClient) -> None:
        client.post("/api/runs/w2/cancel", json={})
        resp = client.post("/api/runs/w2/events", json={"type": "HumanResponseEvent"})
        _error(resp, 409, "is cancelled")


class TestCancel:
    """POST /api/runs/{id}/cancel calls Engine.cancel."""

    def test_cancel_then_again(self, client: TestClient) -> None:
        resp = client.post("/api/runs/w2/cancel", json={})
        assert resp.status_code == 200
        assert resp.json() == {"run_id": "w2", "status": "cancelled", "cancelled": True}
        assert client.get("/api/runs/w2").json()["status"] == "cancelled"
        again = client.post("/api/runs/w2/cancel")  # an empty body is fine... with its type
        assert again.status_code == 415
        again = client.post("/api/runs/w2/cancel", json={})
        assert again.json() == {"run_id": "w2", "status": "cancelled", "cancelled": False}
        done = client.post("/api/runs/o1/cancel", json={}).json()
        assert done == {"run_id": "o1", "status": "completed", "cancelled": False}
        _error(client.post("/api/runs/ghost/cancel", json={}), 404, "no run 'ghost'")

    def test_get_on_an_action_is_not_allowed(self, client: TestClient) -> None:
        assert client.get("/api/runs/o1/fork").status_code in (404, 405)
        assert client.put("/api/runs/o1/cancel", json={}).status_code == 405


class TestReadOnly:
    """Read-only: everything reads, nothing writes, no action is offered."""

    @pytest.mark.parametrize(
        ("url", "body"),
        [
            ("/api/runs/o1/fork", {"at": 1}),
            ("/api/runs/w1/events", {"type": "HumanResponseEvent"}),
            ("/api/runs/w1/cancel", {}),
            ("/api/runs/ghost/cancel", {}),
        ],
    )
    def test_actions_are_refused(
        self, ro_client: TestClient, workload: Path, url: str, body: Any
    ) -> None:
        _error(ro_client.post(url, json=body), 403, "read-only")
        with Journal(workload, readonly=True) as j:
            assert j.get_run("w1").status == "waiting"
            assert len(j.list_runs()) == 4

    def test_reads_work_and_no_action_is_offered(self, ro_client: TestClient) -> None:
        assert ro_client.get("/api/runs/o1/state?step=2").status_code == 200
        page = ro_client.get("/runs/w1").text
        assert "read-only" in page
        for form in ("fork-form", "event-form", "cancel-form"):
            assert form not in page

    def test_actions_are_offered_when_writable(self, client: TestClient) -> None:
        page = client.get("/runs/w1").text
        for form in ("fork-form", "event-form", "cancel-form"):
            assert form in page
        assert "HumanResponseEvent" in page  # the event it waits for, prefilled

    def test_default_follows_the_file(self, workload: Path, monkeypatch: Any) -> None:
        import engine.ui.app as ui_app

        monkeypatch.setattr(ui_app, "writable", lambda path: False)
        app = create_app(workload, readonly=None)
        with ui_client(app) as c:
            _error(c.post("/api/runs/w1/cancel", json={}), 403, "read-only")
        monkeypatch.setattr(ui_app, "writable", lambda path: True)
        app = create_app(workload, readonly=None)
        assert app.state.ui.readonly is False
        app.state.ui.engine.close()


# -- pages ---------------------------------------------------------------------------------


class TestPages:
    """Server-rendered pages: escaped payloads, timeline, state, diff."""

    def test_payloads_render_as_text(self, client: TestClient, workload: Path) -> None:
        with Journal(workload) as j:
            j.create_run(XSS, name=XSS, status="failed", entries=[j.entry(EntryKind.RUN_STARTED)])
        for url in ("/", "/runs/o1?step=3", "/runs/o1?step=3&a=0&b=8",
                    f"/runs/{XSS.replace('/', '%2F')}"):  # fmt: skip
            html = client.get(url).text
            assert "<script>alert" not in html, url
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, url
        # The only scripts are the package's own, and the browser is told so.
        resp = client.get("/runs/o1")
        assert resp.text.count("<script") == 1 and 'src="/static/ui.js"' in resp.text
        assert "script-src 'self'" in resp.headers["content-security-policy"]

    def test_run_list_page(self, client: TestClient) -> None:
        html = client.get("/?status=waiting").text
        assert 'href="/runs/w1"' in html and 'href="/runs/o1"' not in html
        assert '<option value="waiting" selected>' in html

    def test_timeline(self, client: TestClient) -> None:
        html = client.get("/runs/o1").text
        assert "charge#" in html and "2 attempts" in html  # a failed attempt, then success
        assert "sleep 10 ms" in html
        assert 'href="/runs/o1%2Fui_test%3Areceipt%235"' in html  # the child run's link
        assert html.count('class="bar fail') == 1
        wf = client.get("/runs/w1").text
        assert "StartEvent → Ping" in wf and "waiting for an event" in wf

    def test_selected_step_state_and_diff(self, client: TestClient) -> None:
        html = client.get("/runs/o1?step=4").text
        assert "State after step 4" in html and "<details>" in html
        assert "&#34;apple&#34;" in html  # a nested value, quoted as JSON
        assert 'id="diff"' in html and "cart" in html
        # Step 3 is charge's failed attempt: it changed nothing.
        assert "No change from step 2 to step 3" in client.get("/runs/o1?step=3").text

    def test_live_fragment(self, client: TestClient) -> None:
        html = client.get("/runs/w1/live?step=1").text
        assert "<html" not in html and "Timeline" in html

    def test_bad_pages(self, client: TestClient) -> None:
        assert client.get("/runs/ghost").status_code == 404
        resp = client.get("/runs/o1?step=99")
        assert resp.status_code == 400 and "no step 99" in resp.text

    def test_decoded_events_for_a_step(self, client: TestClient) -> None:
        html = client.get("/runs/w1?step=1").text
        assert "StartEvent" in html and "Ping" in html


class TestServer:
    """What the app refuses before any route runs, and how it opens the file."""

    def test_foreign_host_header_is_refused(self, workload: Path) -> None:
        with ui_client(create_app(workload), "http://evil.example") as c:
            assert c.get("/api/runs").status_code == 400  # a DNS-rebinding page

    def test_static_files_and_headers(self, client: TestClient) -> None:
        js = client.get("/static/ui.js")
        assert js.status_code == 200 and "textContent" in js.text
        assert client.get("/static/ui.css").status_code == 200
        assert js.headers["x-content-type-options"] == "nosniff"

    def test_missing_file_and_bad_imports(self, tmp_path: Path, workload: Path) -> None:
        with pytest.raises(FileNotFoundError, match="no journal at"):
            create_app(tmp_path / "none.db")
        with pytest.raises(ImportError, match="cannot import 'no_such_module_ui'"):
            create_app(workload, imports=["no_such_module_ui"])


@pytest.mark.postgres
class TestPostgres:
    """The UI over a postgresql:// URL: the workload migrated there reads and acts the same."""

    @pytest.fixture
    def pg_workload(self, workload: Path, pg_schema_url: str) -> str:
        with Journal(workload, readonly=True) as src, Journal(pg_schema_url) as dst:
            assert copy_journal(src, dst).ok
        return pg_schema_url

    def test_reads_match_the_file(self, client: TestClient, pg_workload: str) -> None:
        app = create_app(pg_workload, readonly=None)  # a URL: read-write unless asked
        assert app.state.ui.readonly is False
        with ui_client(app) as pg:
            for url in ("/api/runs", "/api/runs/o1", "/api/runs/o1/history",
                        "/api/runs/o1/state?step=2", "/api/runs/o1/diff?a=0&b=3",
                        "/api/runs/o1%2Fui_test:receipt%235", "/api/runs/w1/history"):  # fmt: skip
                on_pg, on_file = pg.get(url), client.get(url)
                assert on_pg.status_code == on_file.status_code == 200, (url, on_pg.text)
                assert on_pg.json() == on_file.json(), url
            for url in ("/", "/runs/o1?step=3&a=0&b=3", "/runs/w1"):
                assert pg.get(url).status_code == 200, url
            _error(pg.get("/api/runs/nope"), 404, "no run 'nope'")
            cancelled = pg.post("/api/runs/w2/cancel", json={})
            assert cancelled.status_code == 200, cancelled.text
        with Journal(pg_workload, readonly=True) as j:
            assert j.get_run("w2").status == "cancelled"

    def test_read_only_and_no_password_shown(self, pg_workload: str) -> None:
        parts = urlsplit(pg_workload)  # the test server trusts any password
        url = urlunsplit(
            parts._replace(netloc=f"{parts.username}:sekrit@{parts.hostname}:{parts.port}")
        )
        app = create_app(url, readonly=True)
        assert "sekrit" not in app.state.ui.path and ":***@" in app.state.ui.path
        with ui_client(app) as pg:
            _error(pg.post("/api/runs/w1/cancel", json={}), 403, "read-only")
            assert "sekrit" not in pg.get("/").text


class TestServe:
    """serve() binds loopback unless told otherwise, and picks read-only from the file."""

    def test_defaults(self, workload: Path, monkeypatch: Any) -> None:
        import uvicorn

        seen: dict[str, Any] = {}
        monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
        serve(workload)
        assert (seen["host"], seen["port"]) == ("127.0.0.1", 8321)
        app = seen["app"]
        assert app.state.ui.readonly is False  # the file is writable
        with ui_client(app, "http://localhost:8321") as c:
            assert c.get("/api/runs").status_code == 200
        with ui_client(app, "http://192.168.1.10:8321") as c:
            assert c.get("/api/runs").status_code == 400  # not a loopback name

    def test_an_explicit_host(self, workload: Path, monkeypatch: Any) -> None:
        import uvicorn

        seen: dict[str, Any] = {}
        monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
        serve(workload, host="0.0.0.0", port=9000, readonly=True)
        assert (seen["host"], seen["port"]) == ("0.0.0.0", 9000)
        own = socket.gethostname()
        with ui_client(seen["app"], f"http://{own}:9000") as c:
            assert c.get("/api/runs").status_code == 200  # the machine's own name
            _error(c.post("/api/runs/w1/cancel", json={}), 403, "read-only")
        for foreign in ("http://192.0.2.200:9000", "http://evil.example:9000"):
            with ui_client(seen["app"], foreign) as c:  # never any Host: DNS rebinding
                assert c.get("/api/runs").status_code == 400


def test_timeline_layout_shortens_idle_gaps(workload: Path) -> None:
    """A fork made long after its source does not squash the bars into a sliver."""
    with _eng(workload) as eng:
        run = eng.journal.get_run("o1")
        cps = history("o1", engine=eng)
    shifted = [c if c.number < 4 else _shift(c, 86_400) for c in cps]
    timeline = build_timeline(run, shifted, now=time.time())
    assert timeline.compressed
    bars = [b for row in timeline.rows for b in row.bars]
    assert all(b.x >= 0 and b.x + b.width <= 1000.01 for b in bars)
    sleep: list[Row] = [r for r in timeline.rows if r.kind == "sleep"]
    # The 10 ms sleep is a good part of the busy time: drawn to scale, a day away would
    # have made it a sliver.
    assert sleep[0].bars[0].width > 100


def _shift(cp: Any, seconds: float) -> Any:
    from dataclasses import replace

    started = None if cp.started_at is None else cp.started_at + seconds
    return replace(cp, started_at=started, ended_at=cp.ended_at + seconds)
