"""The web view tells a run's story: who executed it (a takeover after a real SIGKILL),
why it failed (its traceback), what each step took and gave (the step page), and the
run list's pages, totals, counts, durations and search.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _children import PROCS
from starlette.testclient import TestClient

from engine import configure
from engine.timetravel import Checkpoint
from engine.ui import create_app
from engine.ui.story import MIN_SILENCE, find_takeovers
from journal import EntryKind, Journal

sys.path.insert(0, str(PROCS))
import ui_story_workload as wl

K = EntryKind
XSS = "<script>alert(1)</script>"
LEASE = 1.0


def ui_client(db: Path) -> TestClient:
    app = create_app(db, readonly=True)
    return TestClient(
        app, base_url="http://127.0.0.1", headers={"Authorization": f"Bearer {app.state.token}"}
    )


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A journal with a run crashed (SIGKILL) and recovered by another process, and a run
    that failed; made once for the module (the crash costs a lease)."""
    db = tmp_path_factory.mktemp("story") / "story.db"
    crash = wl.crash_and_recover(db, "crashed-1", lease=LEASE)
    eng = configure(db, lease_seconds=LEASE)
    try:
        with pytest.raises(Exception, match="no stock"):
            wl.broken.run(XSS, run_id="broken-1")
    finally:
        eng.close()
    yield {"db": db, **crash}


@pytest.fixture
def client(story: dict[str, Any]) -> Iterator[TestClient]:
    with ui_client(story["db"]) as c:
        yield c


def _section(html: str, ident: str) -> str:
    match = re.search(rf'<section[^>]*id="{ident}".*?</section>', html, re.S)
    assert match, f"no section {ident}"
    return match.group(0)


class TestTakeover:
    def test_the_timeline_marks_the_owner_change(self, client: TestClient, story: Any) -> None:
        assert story["result"] == 0 + 10 + 20 + 30
        html = client.get("/runs/crashed-1").text
        # The first owner is the killed child (owner names are host:pid:random).
        owners = re.search(r'<dd id="owners">(.*?)</dd>', html, re.S)
        assert owners and f":{story['pid']}:" in owners.group(1)
        assert "epoch 2" in owners.group(1)
        # One takeover, before step 3 (fetch#3, which the child died in), epoch 1 → 2.
        notes = re.findall(r'class="takeover-note">(.*?)</div>', html, re.S)
        assert len(notes) == 1 and "#3</a> (epoch 1 → 2)" in notes[0]
        rows = re.findall(r'<li class="row k-(\w+)[^"]*">.*?<span class="what">([^<]*)', html, re.S)
        assert rows[:5] == [
            ("step", "fetch#1"),
            ("step", "fetch#2"),
            ("takeover", "owner changed"),
            ("step", "fetch#3"),
            ("step", "fetch#4"),
        ]

    def test_the_lease_wait_is_the_silence_between_owners(self, story: Any) -> None:
        from engine import Engine, iter_history

        with Engine(Journal(str(story["db"]), readonly=True)) as eng:
            run = eng.journal.get_run("crashed-1")
            cps = list(iter_history("crashed-1", engine=eng))
        (t,) = find_takeovers(run, cps)
        step2 = next(c for c in cps if c.step == "fetch#2")
        step3 = next(c for c in cps if c.step == "fetch#3")
        assert t.since == step2.ended_at and t.resumed == step3.started_at
        # The silence spans the kill, which came inside step 3; the new owner started after
        # the lease ran out (its length after the kill depends on the last renewal).
        assert t.since < story["killed"] < t.resumed
        assert t.wait >= MIN_SILENCE and t.epoch == 2

    def test_a_slow_body_without_a_new_claim_is_no_takeover(self) -> None:
        run = _run(epoch=1)
        cps = [_cp(1, 0.0, 0.1), _cp(2, 0.1 + 60, 0.2 + 60)]
        assert find_takeovers(run, cps) == []

    def test_one_mark_per_claim_at_the_longest_silences(self) -> None:
        run = _run(epoch=2)
        gaps = [5.0, 2.0, MIN_SILENCE / 2]
        cps, t = [], 0.0
        for n, gap in enumerate(gaps, 1):
            cps.append(_cp(n, t + gap, t + gap + 0.1))
            t += gap + 0.1
        (only,) = find_takeovers(run, cps)
        assert only.number == 1 and only.wait == pytest.approx(5.0) and only.epoch == 2
        # More claims than silences: each silence is marked, without guessing its epoch.
        marks = find_takeovers(_run(epoch=5), cps)
        assert [m.number for m in marks] == [1, 2] and {m.epoch for m in marks} == {None}


def test_an_expired_lease_is_said_on_the_in_progress_row() -> None:
    """A running run whose owner stopped renewing: the next worker takes it over."""
    from dataclasses import replace

    from engine.ui.story import Owners
    from engine.ui.views import build_timeline

    now = 1000.0
    run = replace(_run(epoch=1), status="running", owner="host:42:abc", lease_expires_at=now - 5)
    owners = Owners("host:42:abc", run.owner, 1, run.lease_expires_at, ())
    assert owners.lease_expired(now)
    live = build_timeline(run, [], now=now, owners=owners).rows[-1]
    assert live.kind == "live" and "lease of host:42:abc expired" in live.note
    held = replace(owners, lease_expires_at=now + 5)
    assert not held.lease_expired(now)
    assert "lease of" not in build_timeline(run, [], now=now, owners=held).rows[-1].note


def _run(epoch: int) -> Any:
    from journal import Run

    return Run("r", "function", "f", "completed", "json", None, None, None, 0.0, 100.0, 9, epoch)


def _cp(number: int, started: float, ended: float) -> Checkpoint:
    return Checkpoint(number, "r", number, number, K.STEP_COMPLETED, f"s#{number}", "s",
                      1, started, ended)  # fmt: skip


class TestFailure:
    def test_the_traceback_is_on_the_run_page(self, client: TestClient) -> None:
        html = client.get("/runs/broken-1").text
        failure = re.search(r'<div class="failure" id="failure">(.*?)</div>', html, re.S)
        assert failure, "no failure block"
        text = failure.group(1)
        assert "ValueError: no stock for &lt;script&gt;alert(1)&lt;/script&gt;" in text
        trace = re.search(r'<pre class="traceback">(.*?)</pre>', text, re.S)
        assert trace and "Traceback (most recent call last)" in trace.group(1)
        assert "ui_story_workload.py" in trace.group(1) and "in broken" in trace.group(1)
        assert "<script>alert" not in html

    def test_the_step_page_of_the_failure(self, client: TestClient) -> None:
        html = client.get("/runs/broken-1/steps/2").text
        result = _section(html, "result")
        assert "ValueError: no stock" in result and 'class="traceback"' in result


class TestDefaultStep:
    def test_the_last_step_is_selected(self, client: TestClient) -> None:
        html = client.get("/runs/crashed-1").text
        assert re.search(r'<h2 id="selected">Step #4 .*?fetch#4', html, re.S)
        # Its diff shows what the run last changed, not an empty one.
        assert 'id="diff"' in html and "No change" not in html

    def test_a_run_without_steps_opens_on_its_last_checkpoint(self, tmp_path: Path) -> None:
        db = tmp_path / "j.db"
        with Journal(db) as j:
            j.create_run("bare", name="n", entries=[j.entry(K.RUN_STARTED)])
        with ui_client(db) as c:
            assert "Start <span" in c.get("/runs/bare").text


class TestStepPage:
    def test_inputs_result_mutations_then_entries(self, client: TestClient) -> None:
        html = client.get("/runs/crashed-1/steps/3").text
        order = [html.index(f'id="{s}"') for s in ("inputs", "result", "mutations", "entries")]
        assert order == sorted(order)
        inputs = _section(html, "inputs")
        assert 'class="digest"' in inputs  # arguments are journaled as a digest only
        assert 'total</span>: <span class="v t-num">0</span>' in inputs  # state after #2
        assert '<span class="v t-num">20</span>' in _section(html, "result")  # fetch(2)
        mutations = _section(html, "mutations")
        body = mutations.split("Inside this step")[0]
        assert '<td>set</td><td class="path">total</td>' in body and 't-num">10<' in body
        entries = _section(html, "entries")
        assert entries.count("<tr>") == 3  # head row, state.set, step.completed
        assert "step.completed" in entries and "fetch#3" in entries
        assert 'id="prev-step" href="/runs/crashed-1/steps/2"' in html
        assert 'id="next-step" href="/runs/crashed-1/steps/4"' in html

    def test_unknown_steps(self, client: TestClient) -> None:
        for n in (0, 99):
            resp = client.get(f"/runs/crashed-1/steps/{n}")
            assert resp.status_code == 400 and f"no step {n}" in resp.text
        resp = client.get("/runs/crashed-1/steps/two")
        assert resp.status_code == 400 and "step must be an integer" in resp.text
        assert client.get("/runs/ghost/steps/1").status_code == 404

    def test_run_page_links_to_it(self, client: TestClient) -> None:
        html = client.get("/runs/crashed-1?step=2").text
        assert 'class="step-link" href="/runs/crashed-1/steps/2"' in html


# -- the run list ------------------------------------------------------------------------


@pytest.fixture
def many(tmp_path: Path) -> Path:
    """24 runs: 21 completed, 2 failed, 1 running; names a:job, b:other and c:tie."""
    db = tmp_path / "many.db"
    with Journal(db) as j:
        for i in range(23):
            status = "failed" if i in (3, 17) else "running" if i == 22 else "completed"
            name = "a:job" if i % 2 else "b:other"
            team = {"team": "payments" if i % 3 == 0 else "search"}
            j.create_run(f"run-{i:02d}", name=name, status=status, tags=team)
        j.create_run("tie-x", name="c:tie", status="completed")
    return db


def _ids(c: TestClient, query: str) -> list[str]:
    resp = c.get(f"/api/runs?{query}")
    assert resp.status_code == 200, resp.text
    return [r["run_id"] for r in resp.json()["runs"]]


class TestRunList:
    def test_pages_cover_every_run_once_newest_first(self, many: Path) -> None:
        with ui_client(many) as c:
            seen: list[str] = []
            offset: int | None = 0
            while offset is not None:
                doc = c.get(f"/api/runs?limit=5&offset={offset}").json()
                assert doc["total"] == 24
                seen += [r["run_id"] for r in doc["runs"]]
                offset = doc["next_offset"]
            assert len(seen) == len(set(seen)) == 24
            assert seen == _ids(c, "limit=1000")
            assert seen[0] == "tie-x" and seen[-1] == "run-00"

    def test_ties_in_creation_time_order_by_id(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        db = tmp_path / "ties.db"
        with Journal(db) as j, monkeypatch.context() as m:
            m.setattr(time, "time", lambda: 1_700_000_000.0)  # one instant for all three
            for rid in ("m", "z", "a"):
                j.create_run(rid, name="n")
        with ui_client(db) as c:
            assert _ids(c, "limit=1") + _ids(c, "limit=1&offset=1") + _ids(
                c, "limit=1&offset=2"
            ) == ["z", "m", "a"]

    def test_totals_counts_and_links(self, many: Path) -> None:
        with ui_client(many) as c:
            doc = c.get("/api/runs?status=failed").json()
            assert doc["total"] == 2 and doc["counts"]["completed"] == 21
            assert doc["counts"] == {"pending": 0, "running": 1, "waiting": 0,
                                     "completed": 21, "failed": 2, "cancelled": 0}  # fmt: skip
            html = c.get("/?limit=10&offset=10").text
            assert '<span id="total">24</span>' in html
            assert 'data-status="failed" href="/?limit=10&amp;status=failed"' in html
            assert "page 2 of 3 · runs 11\N{EN DASH}20 of 24" in html
            assert 'rel="prev" href="/?limit=10&amp;offset=0"' in html
            assert 'rel="next" href="/?limit=10&amp;offset=20"' in html
            last = c.get("/?limit=10&offset=20").text
            assert 'rel="next"' not in last and "runs 21\N{EN DASH}24 of 24" in last

    def test_durations(self, many: Path) -> None:
        with Journal(many) as j:
            run = j.get_run("run-01")
        with ui_client(many) as c:
            html = c.get("/?q=run-01").text
            row = re.search(r'<tr data-run="run-01">(.*?)</tr>', html, re.S)
            assert row and '<td class="dur">' in row.group(1)
            running = re.search(r'<tr data-run="run-22">(.*?)</tr>', c.get("/?q=run-22").text, re.S)
            assert running and "so far" in running.group(1)
            assert run.updated_at >= run.created_at

    def test_search_by_id_and_name(self, many: Path) -> None:
        with ui_client(many) as c:
            assert _ids(c, "q=run-1") == [f"run-{i}" for i in range(19, 9, -1)]
            assert _ids(c, "q=RUN-05") == ["run-05"]  # case-insensitive
            assert set(_ids(c, "q=tie")) == {"tie-x"}  # by name c:tie and id
            assert set(_ids(c, "q=name:a:job")) == {f"run-{i:02d}" for i in range(1, 23, 2)}
            assert _ids(c, "q=id:job") == []  # job is in names, not ids
            assert _ids(c, "q=run-0 name:a:job&status=failed") == ["run-03"]
            assert _ids(c, "q=%25") == [] and _ids(c, "q=_") == []  # wildcards are literal
            doc = c.get("/api/runs?q=run-2").json()
            assert doc["total"] == 3 and doc["filters"]["q"] == "run-2"

    def test_search_by_tag(self, many: Path) -> None:
        with ui_client(many) as c:
            payments = {f"run-{i:02d}" for i in range(0, 23, 3)}
            assert set(_ids(c, "q=team%3Dpayments")) == payments
            doc = c.get("/api/runs?q=team%3Dpayments&status=failed").json()
            assert [r["run_id"] for r in doc["runs"]] == ["run-03"]
            assert doc["counts"]["failed"] == 1 and doc["counts"]["completed"] == 7
            assert _ids(c, "q=team%3Dpayments run-1") == ["run-18", "run-15", "run-12"]
            assert _ids(c, "q=team%3Dnobody") == []
            assert "team=payments" in c.get("/?q=team%3Dpayments").text  # kept in the box
            two = c.get("/api/runs?q=team%3Da team%3Db")
            assert two.status_code == 400 and "twice" in two.json()["error"]
            assert c.get("/api/runs?q=id%3A").status_code == 400

    def test_bad_pages(self, many: Path) -> None:
        with ui_client(many) as c:
            assert c.get("/api/runs?offset=99999999999999999999").status_code == 400
            assert c.get("/api/runs?offset=-1").status_code == 400
            assert _ids(c, "offset=1000") == []
            assert "no runs past 1000 (of 24)" in c.get("/?offset=1000").text

    def test_the_search_box_is_text(self, many: Path) -> None:
        with ui_client(many) as c:
            html = c.get(f"/?q={XSS}").text
            assert "<script>alert" not in html and "&lt;script&gt;" in html


def test_counts_follow_new_runs(many: Path) -> None:
    with ui_client(many) as c:
        before = c.get("/api/runs").json()["counts"]["pending"]
        with Journal(many) as j:
            j.create_run("late", name="n", status="pending")
        time.sleep(0.01)
        assert c.get("/api/runs").json()["counts"]["pending"] == before + 1


@pytest.mark.postgres
def test_the_list_reads_the_same_on_postgres(many: Path, pg_schema_url: str) -> None:
    """Search (case, wildcards), counts and pages on PostgreSQL match the file's."""
    from journal import copy_journal

    with Journal(many, readonly=True) as src, Journal(pg_schema_url) as dst:
        assert copy_journal(src, dst).ok
    app = create_app(pg_schema_url, readonly=True)
    token = {"Authorization": f"Bearer {app.state.token}"}
    with TestClient(app, base_url="http://127.0.0.1", headers=token) as pg, ui_client(many) as f:
        queries = [
            "q=run-1", "q=RUN-05", "q=name:a:job", "q=%25", "q=_", "q=id:job",
            "limit=5&offset=5", "status=failed", "q=run-0+name:a:job&status=failed",
        ]  # fmt: skip
        for query in queries:
            on_pg, on_file = pg.get(f"/api/runs?{query}"), f.get(f"/api/runs?{query}")
            assert on_pg.status_code == on_file.status_code == 200, (query, on_pg.text)
            assert on_pg.json() == on_file.json(), query
        assert pg.get("/?q=run-1&limit=3").status_code == 200
