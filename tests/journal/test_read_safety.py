"""Reading a journal runs none of anyone's code and needs none of the user's.

A crafted journal: an ordinary JSON journal in which rows name ``pickle`` as their
codec and hold a pickle that, if loaded, creates a marker file (entry checksums
recomputed, so only the codec decision stops it). Every read path (CLI commands, UI
pages and API, the Python read API) must leave the marker absent, show a placeholder
and succeed. Then the same with an HMAC-keyed journal, with ``--trust-pickle`` (the
control: the pickle does load), and with a journal whose classes lived in a
script (recorded under the script's import name) that the reader cannot import.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from engine import Context, Engine, configure, diff, durable, fork, history, state_at, step
from engine.cli import cli
from engine.ui import create_app
from journal import (
    FOLD_VERSION,
    DecodeError,
    Journal,
    PickleSerializer,
    SerializationError,
    SignatureError,
    Undecoded,
    UntrustedPayload,
    codec_for_name,
    decode_for_reading,
    to_jsonable,
)
from journal._integrity import entry_checksum
from journal._integrity import snapshot_checksum as _snapshot_checksum
from journal._schema import reseal_runs

KEY = b"read-safety-key"
RUN = "crafted-run"
NOT_DECODED = "not decoded"


class Plant:
    """Unpickling it calls ``open(marker, "w")``: the marker file proves code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def planted(marker: Path) -> bytes:
    return pickle.dumps(Plant(marker), protocol=4)


@step
def add_one(n: int) -> int:
    return n + 1


@durable(name="read_safety:job")
def job(ctx: Context, n: int) -> dict[str, int]:
    ctx.state["a"] = n
    ctx.state["b"] = add_one(n)
    ctx.state["c"] = "visible"
    return {"sum": ctx.state["b"]}


def write_run(path: Path, **engine_options: Any) -> None:
    """One finished run of ``job`` with a snapshot in the middle, by an engine then closed."""
    eng = configure(str(path), **engine_options)
    try:
        job.run(3, run_id=RUN)
        eng.journal.write_snapshot(RUN)
    finally:
        eng.close()


def craft(path: Path, marker: Path, *, codec: str = "pickle") -> None:
    """Name ``codec`` on the first state.set entry, the step's completion, the run row
    (input and output) and the last snapshot, each holding the planted pickle."""
    bomb = planted(marker)
    conn = apsw.Connection(str(path))
    try:
        rows = list(
            conn.execute(
                "SELECT seq, kind, step, key, ts FROM entries WHERE run_id = ? AND kind IN"
                " ('state.set', 'step.completed') ORDER BY seq",
                (RUN,),
            )
        )
        first_set = next(r for r in rows if r[1] == "state.set")
        completed = next(r for r in rows if r[1] == "step.completed")
        for seq, kind, step_name, key, ts in (first_set, completed):
            checksum = entry_checksum(RUN, seq, kind, step_name, key, bomb, codec, ts)
            conn.execute(
                "UPDATE entries SET payload = ?, codec = ?, checksum = ? WHERE run_id = ?"
                " AND seq = ?",
                (bomb, codec, checksum, RUN, seq),
            )
        conn.execute(
            "UPDATE runs SET codec = ?, input = ?, output = ? WHERE run_id = ?",
            (codec, bomb, bomb, RUN),
        )
        # The row's checksum is a CRC, not a signature: an attacker recomputes it, so
        # only the readers' codec decision may stop the pickle.
        reseal_runs(conn.execute)
        (snap_seq,) = conn.execute(
            "SELECT max(seq) FROM snapshots WHERE run_id = ?", (RUN,)
        ).fetchone()
        fingerprint = f"fold-v{FOLD_VERSION}/{codec}"
        conn.execute(
            "UPDATE snapshots SET state = ?, codec = ?, fingerprint = ?, checksum = ?"
            " WHERE run_id = ? AND seq = ?",
            (bomb, codec, fingerprint, _snapshot_checksum(RUN, snap_seq, bomb, fingerprint), RUN,
             snap_seq),
        )  # fmt: skip
    finally:
        conn.close()


@pytest.fixture
def crafted(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    path = tmp_path / "crafted.db"
    marker = tmp_path / "PWNED"
    write_run(path)
    craft(path, marker)
    yield path, marker
    assert not marker.exists(), "a planted pickle ran"


# -- every read command of the CLI --------------------------------------------------------

READ_COMMANDS = [
    ["runs"],
    ["runs", "--json"],
    ["show", RUN],
    ["show", RUN, "--json"],
    ["history", RUN],
    ["history", RUN, "--json"],
    ["state", RUN],
    ["state", RUN, "--json"],
    ["state", RUN, "--at", "1"],
    ["state", RUN, "--seq", "2"],
    ["diff", RUN, "0", "2"],
    ["diff", RUN, "0", "2", "--json"],
    ["export", RUN],
    ["export", RUN, "--format", "csv"],
    ["search", "pickled"],
    ["search", "pickled", "--json"],
    ["verify"],
    ["verify", RUN, "--json"],
]
SHOWS_PLACEHOLDER = {"show", "state", "export"}


def _client(app: Any) -> TestClient:
    """A client of the web view that carries its access token."""
    bearer = {"Authorization": f"Bearer {app.state.token}"}
    return TestClient(app, base_url="http://127.0.0.1", headers=bearer)


def invoke(path: Path, args: list[str], **env: str) -> Any:
    return CliRunner().invoke(cli, [*args, "--db", str(path)], env=env, catch_exceptions=False)


@pytest.mark.parametrize("args", READ_COMMANDS, ids=" ".join)
def test_cli_read_commands_never_unpickle(crafted: tuple[Path, Path], args: list[str]) -> None:
    """Each read command exits 0 over the crafted journal; the pickle never loads."""
    path, marker = crafted
    result = invoke(path, args)
    assert result.exit_code == 0, result.output
    assert not marker.exists()
    if args[0] in SHOWS_PLACEHOLDER:
        assert NOT_DECODED in result.output


def test_cli_state_shows_placeholder_and_the_rest(crafted: tuple[Path, Path]) -> None:
    """The state keeps its readable values beside the placeholder of the planted one."""
    path, _ = crafted
    doc = json.loads(invoke(path, ["state", RUN, "--json"]).output)
    values = doc.get("values", doc)
    assert values["c"] == "visible"
    planted_value = values["a"]
    assert planted_value["kind"] == "pickle"
    assert planted_value["$undecoded"].startswith("pickled value, ")
    assert "--trust-pickle" in planted_value["reason"]


def test_cli_trust_pickle_is_the_only_way_in(crafted: tuple[Path, Path]) -> None:
    """The control: with --trust-pickle the same command unpickles (the marker appears),
    so the tests above pass because of the codec decision, not a broken bomb."""
    path, marker = crafted
    result = invoke(path, ["show", RUN, "--trust-pickle", "--json"])
    assert result.exit_code == 0, result.output
    assert marker.exists()
    marker.unlink()


def test_cli_executing_commands_refuse_the_pickle(crafted: tuple[Path, Path]) -> None:
    """fork executes: it refuses the untrusted input with one line and exit 2."""
    path, marker = crafted
    result = CliRunner().invoke(cli, ["fork", RUN, "--at", "1", "--db", str(path)])
    assert result.exit_code == 2, result.output
    assert "trust" in result.output and "Traceback" not in result.output
    assert not marker.exists()


# -- the web view ------------------------------------------------------------------------

UI_GETS = [
    "/",
    f"/runs/{RUN}",
    f"/runs/{RUN}?step=1",
    f"/runs/{RUN}?step=2&a=0&b=2",
    f"/runs/{RUN}/live",
    "/api/runs",
    f"/api/runs/{RUN}",
    f"/api/runs/{RUN}/history",
    f"/api/runs/{RUN}/state",
    f"/api/runs/{RUN}/state?step=1",
    f"/api/runs/{RUN}/diff?a=0&b=2",
]


def test_ui_pages_and_api_never_unpickle(crafted: tuple[Path, Path]) -> None:
    """Every page and API read answers 200 over the crafted journal; nothing loads."""
    path, marker = crafted
    with _client(create_app(path, readonly=True)) as client:
        for url in UI_GETS:
            response = client.get(url)
            assert response.status_code == 200, (url, response.text[:500])
            assert not marker.exists(), url
        run = client.get(f"/api/runs/{RUN}").json()
        assert run["input"]["kind"] == "pickle" and NOT_DECODED in run["input"]["$undecoded"]
        assert NOT_DECODED in client.get(f"/runs/{RUN}?step=1").text
        state = client.get(f"/api/runs/{RUN}/state").json()["values"]
        assert state["c"] == "visible" and state["a"]["kind"] == "pickle"


def test_ui_trust_pickle(crafted: tuple[Path, Path]) -> None:
    """create_app(trust_pickle=True) is the UI's opt-in."""
    path, marker = crafted
    app = create_app(path, readonly=True, trust_pickle=True)
    with _client(app) as client:
        assert client.get(f"/api/runs/{RUN}").status_code == 200
    assert marker.exists()
    marker.unlink()


# -- the Python read API -------------------------------------------------------------------


def test_python_read_api_never_unpickles(crafted: tuple[Path, Path]) -> None:
    """state_at, diff, history, export, verify and Journal.state_at(strict=False)."""
    path, marker = crafted
    with Engine(str(path)) as eng:
        view = state_at(RUN, engine=eng)
        assert isinstance(view.values["a"], Undecoded) and view.values["c"] == "visible"
        assert view.values["a"].kind == "pickle" and view.values["a"].size == len(planted(marker))
        assert view.values["b"] == 4
        assert "a" in diff(RUN, 0, 2, engine=eng).added
        assert [cp.kind for cp in history(RUN, engine=eng)][-1] == "run.completed"
        doc = json.loads(eng.journal.export_run(RUN))
        assert doc["run"]["input"]["kind"] == "pickle"
        assert eng.journal.verify().ok
        assert isinstance(eng.journal.state_at(RUN, strict=False).values["a"], Undecoded)
    assert not marker.exists()


def test_strict_decoding_refuses_without_running(crafted: tuple[Path, Path]) -> None:
    """What executes decodes strictly: UntrustedPayload, the pickle never loaded."""
    path, marker = crafted
    with Journal(str(path), readonly=True) as j:
        run = j.get_run(RUN)
        with pytest.raises(UntrustedPayload, match="does not trust pickle"):
            j.decode(run.input, run.codec, where="input")
        with pytest.raises(UntrustedPayload):
            j.state_at(RUN)
    with Engine(str(path)) as eng, pytest.raises(SerializationError, match="trust_pickle"):
        fork(RUN, at=1, engine=eng).wait()
    assert not marker.exists()


def test_codec_for_name_pickle_alone_does_not_unpickle(tmp_path: Path) -> None:
    """The column's name alone: codec_for_name('pickle') refuses; trust or a key decide."""
    marker = tmp_path / "m"
    with pytest.raises(UntrustedPayload):
        codec_for_name("pickle").decode(planted(marker))
    with pytest.raises(SignatureError):
        codec_for_name("pickle", hmac_key=KEY).decode(planted(marker))
    assert not marker.exists()
    codec_for_name("pickle", trust_pickle=True).decode(planted(marker))
    assert marker.exists()


def test_journal_configured_with_pickle_reads_its_own(tmp_path: Path) -> None:
    """A journal whose own codec is pickle decodes its payloads, strict or not."""
    path = tmp_path / "own.db"
    with Journal(str(path), codec=PickleSerializer()) as j:
        j.create_run("r", name="m:f", input={1, 2})
        assert j.decode(j.get_run("r").input, "pickle", where="t") == {1, 2}
    with Journal(str(path)) as j:  # the JSON default: the pickle is not its own
        value = j.decode(j.get_run("r").input, "pickle", where="t", strict=False)
        assert isinstance(value, Undecoded) and value.label.endswith(NOT_DECODED)
    with Journal(str(path), trust_pickle=True) as j:
        assert j.decode(j.get_run("r").input, "pickle", where="t") == {1, 2}


def test_function_codec_is_trusted_by_its_engine(tmp_path: Path) -> None:
    """A function with its own pickle codec runs on a JSON engine: the code configured it."""
    path = tmp_path / "fn.db"

    @durable(name="read_safety:pickled", codec=PickleSerializer())
    def pickled(ctx: Context, n: int) -> set[int]:
        ctx.state["s"] = {n}
        return {n, n + 1}

    eng = configure(str(path))
    try:
        assert pickled.run(1, run_id="p") == {1, 2}
        run = eng.journal.get_run("p")
        assert run.codec == "pickle"
        assert eng.journal.state_at("p").values == {"s": {1}}
    finally:
        eng.close()
    with Journal(str(path), readonly=True) as j, pytest.raises(UntrustedPayload):
        j.state_at("p")  # another reader, which never ran the function, does not trust it


def test_function_codec_is_trusted_for_its_own_runs_only(tmp_path: Path) -> None:
    """The engine trusts a function's pickle codec for that function's runs, not for every
    row whose codec column says ``pickle``: a run planted beside them is not unpickled."""
    path = tmp_path / "fn.db"
    marker = tmp_path / "PWNED"

    @durable(name="read_safety:pickled_own", codec=PickleSerializer())
    def pickled(ctx: Context, n: int) -> int:
        ctx.state["s"] = {n}
        return n

    eng = configure(str(path))
    try:
        assert pickled.run(1, run_id="p") == 1
        eng.journal.create_run("planted", name="m:other", input={})
        with pytest.raises(UntrustedPayload):
            eng.journal.decode(planted(marker), "pickle", where="t", run_id="planted")
        value = eng.journal.decode(planted(marker), "pickle", where="t", strict=False)
        assert isinstance(value, Undecoded)
        assert eng.journal.state_at("p").values == {"s": {1}}  # its own run still reads
    finally:
        eng.close()
    assert not marker.exists()


# -- an HMAC-keyed journal -------------------------------------------------------------------


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A journal written with the signed pickle codec; one crafted unsigned entry."""
    path = tmp_path / "keyed.db"
    marker = tmp_path / "PWNED"
    write_run(path, codec=PickleSerializer(hmac_key=KEY), hmac_key=KEY)
    bomb = planted(marker)
    conn = apsw.Connection(str(path))
    seq, kind, step_name, key, ts = next(
        iter(
            conn.execute(
                "SELECT seq, kind, step, key, ts FROM entries WHERE run_id = ? AND kind ="
                " 'state.set' AND key = 'a'",
                (RUN,),
            )
        )
    )
    checksum = entry_checksum(RUN, seq, kind, step_name, key, bomb, "pickle", ts)
    conn.execute(
        "UPDATE entries SET payload = ?, codec = 'pickle', checksum = ? WHERE run_id = ?"
        " AND seq = ?",
        (bomb, checksum, RUN, seq),
    )
    conn.execute("DELETE FROM snapshots")  # the state then comes from the entries
    conn.close()
    yield path, marker
    assert not marker.exists(), "a planted pickle ran"


def test_keyed_journal_with_key_decodes_signed_refuses_unsigned(keyed: tuple[Path, Path]) -> None:
    """With the key: signed payloads verify and decode; the unsigned planted one is a
    placeholder when reading and a SignatureError when executing, never loaded."""
    path, _ = keyed
    with Engine(str(path), hmac_key=KEY) as eng:
        values = state_at(RUN, engine=eng).values
        assert values["b"] == 4 and values["c"] == "visible"
        assert isinstance(values["a"], Undecoded) and "not signed" in values["a"].reason
        with pytest.raises(SignatureError):
            eng.journal.state_at(RUN)


@pytest.mark.parametrize("args", READ_COMMANDS, ids=" ".join)
def test_keyed_journal_cli_without_key(keyed: tuple[Path, Path], args: list[str]) -> None:
    """The CLI without the key: signed and unsigned pickles alike are placeholders."""
    path, marker = keyed
    result = invoke(path, args)
    assert result.exit_code == 0, result.output
    assert not marker.exists()
    if args[0] in SHOWS_PLACEHOLDER - {"search"}:
        assert NOT_DECODED in result.output


def test_keyed_journal_cli_with_key_from_env(keyed: tuple[Path, Path]) -> None:
    """$DURABLE_HMAC_KEY: signed payloads decode, the unsigned one stays a placeholder."""
    path, _ = keyed
    result = invoke(path, ["state", RUN, "--json"], DURABLE_HMAC_KEY=KEY.decode())
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    values = doc.get("values", doc)
    assert values["b"] == 4 and values["a"]["kind"] == "pickle"


def test_keyed_journal_ui(keyed: tuple[Path, Path]) -> None:
    """The UI over the keyed journal, with and without the key."""
    path, marker = keyed
    for options in ({}, {"hmac_key": KEY}):
        app = create_app(path, readonly=True, **options)
        with _client(app) as client:
            for url in UI_GETS:
                assert client.get(url).status_code == 200, (options, url)
            values = client.get(f"/api/runs/{RUN}/state").json()["values"]
            assert values["a"]["kind"] == "pickle"
            assert (values["b"] == 4) is bool(options)
    assert not marker.exists()


# -- classes the reader cannot import ------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import dataclasses, enum, os, sys
    from typing import NamedTuple
    from pydantic import BaseModel
    from engine import Context, configure, durable, step

    class ReviewEvent(BaseModel):
        text: str
        stars: int

    @dataclasses.dataclass
    class Line:
        sku: str
        qty: int

    class Colour(enum.Enum):
        RED = "red"

    class Point(NamedTuple):
        x: int
        y: int

    @step
    def review(text: str) -> ReviewEvent:
        return ReviewEvent(text=text, stars=5)

    @durable(name="read_safety_main:job")
    def job(ctx: Context, text: str) -> ReviewEvent:
        ctx.state["review"] = review(text)
        ctx.state["lines"] = [Line("a", 2)]
        ctx.state["colour"] = Colour.RED
        ctx.state["point"] = Point(1, 2)
        ctx.state["by_colour"] = {Colour.RED: 1}
        return ctx.state["review"]

    @durable(name="read_safety_main:stuck")
    def stuck(ctx: Context, text: str) -> None:
        ctx.state["review"] = review(text)
        os._exit(0)  # dies mid-run, its step recorded: left for recover

    if __name__ == "__main__":
        configure(sys.argv[1], lease_seconds=0.2)
        job.run("great", run_id="typed-run")
        stuck.run("halted", run_id="stuck-run")
    """
)
TYPED = "typed-run"


@step
def review(text: str) -> Any:
    """The writer's step as the test process knows it; its result class is not here."""
    raise AssertionError("the recorded result was not replayed")


@durable(name="read_safety_main:job")
def same_name_job(ctx: Context, text: str) -> Any:
    """The run's function as the test process knows it; its classes are not here."""
    value = review(text)
    raise AssertionError(f"executed with placeholders: {value!r}")


@pytest.fixture(scope="module")
def typed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("typed")
    script = folder / "writer.py"
    script.write_text(WRITER)
    path = folder / "typed.db"
    subprocess.run([sys.executable, str(script), str(path)], check=True, timeout=120)
    return path


TYPED_COMMANDS = [
    ["show", TYPED],
    ["show", TYPED, "--json"],
    ["history", TYPED],
    ["history", TYPED, "--json"],
    ["state", TYPED],
    ["state", TYPED, "--json"],
    ["state", TYPED, "--at", "2"],
    ["diff", TYPED, "0", "2"],
    ["diff", TYPED, "0", "2", "--json"],
    ["export", TYPED],
    ["export", TYPED, "--format", "csv"],
    ["search", "great"],
    ["verify"],
]


@pytest.mark.parametrize("args", TYPED_COMMANDS, ids=" ".join)
def test_cli_reads_without_the_classes(typed: Path, args: list[str]) -> None:
    """Exit 0; the stored structure with the class name, marked not rebuilt."""
    result = invoke(typed, args)
    assert result.exit_code == 0, result.output
    if args[0] in ("show", "state", "export", "diff"):
        assert "ReviewEvent(writer) model, not rebuilt" in result.output
        assert "great" in result.output


def test_cli_state_values_keep_their_structure(typed: Path) -> None:
    """Each kind of typed value: its label, type and stored fields."""
    values = json.loads(invoke(typed, ["state", TYPED, "--json"]).output)
    values = values.get("values", values)
    assert values["review"]["value"] == {"text": "great", "stars": 5}
    assert values["review"]["type"] == "writer:ReviewEvent"
    assert values["lines"][0]["$undecoded"] == "Line(writer) dataclass, not rebuilt"
    assert values["lines"][0]["value"] == {"sku": "a", "qty": 2}
    assert values["colour"]["$undecoded"] == "Colour(writer) enum, not rebuilt"
    assert values["point"]["value"] == [1, 2]


def test_ui_reads_without_the_classes(typed: Path) -> None:
    with _client(create_app(typed, readonly=True)) as client:
        for url in [u.replace(RUN, TYPED) for u in UI_GETS]:
            response = client.get(url)
            assert response.status_code == 200, (url, response.text[:500])
        page = client.get(f"/runs/{TYPED}?step=1").text
        assert "ReviewEvent(writer) model, not rebuilt" in page
        output = client.get(f"/api/runs/{TYPED}").json()["output"]
        assert output["value"] == {"text": "great", "stars": 5}


def test_python_read_api_without_the_classes(typed: Path) -> None:
    with Engine(str(typed)) as eng:
        review = state_at(TYPED, engine=eng).values["review"]
        assert isinstance(review, Undecoded)
        assert (review.kind, review.type_name) == ("model", "writer:ReviewEvent")
        assert review.value == {"text": "great", "stars": 5}
        assert set(diff(TYPED, 0, 2, engine=eng).added) >= {"review", "lines"}
        assert history(TYPED, engine=eng)
        assert "not rebuilt" in eng.journal.export_run(TYPED)
        assert eng.journal.verify().ok
        assert to_jsonable(review)["value"]["text"] == "great"


def test_executing_paths_still_need_the_classes(typed: Path) -> None:
    """Strict decoding raises; a fork that would execute with placeholders fails instead."""
    with Journal(str(typed), readonly=True) as j, pytest.raises(DecodeError, match="ReviewEvent"):
        j.state_at(TYPED)
    result = CliRunner().invoke(cli, ["fork", TYPED, "--at", "1", "--wait", "--db", str(typed)])
    assert result.exit_code in (1, 2), result.output
    assert "ReviewEvent" in result.output
    assert "executed with placeholders" not in result.output


@durable(name="read_safety_main:stuck")
def same_name_stuck(ctx: Context, text: str) -> Any:
    value = review(text)
    raise AssertionError(f"executed with placeholders: {value!r}")


def test_recover_still_needs_the_classes(typed: Path) -> None:
    """recover resumes the dead run: the recorded result's class is missing here, so it
    fails naming the class instead of handing the code a placeholder."""
    with Journal(str(typed), readonly=True) as j:
        run = j.get_run("stuck-run")
    assert run.status == "running" and run.lease_expires_at is not None
    while time.time() <= run.lease_expires_at:  # the dead writer's lease runs out
        time.sleep(0.05)
    result = CliRunner().invoke(cli, ["recover", "--db", str(typed)])
    assert "recovered stuck-run: failed" in result.output
    with Journal(str(typed), readonly=True) as j:
        run = j.get_run("stuck-run")
    assert run.status == "failed" and run.error is not None
    assert "DecodeError" in run.error and "writer:ReviewEvent" in run.error
    assert "executed with placeholders" not in run.error


def test_import_option_rebuilds(typed: Path, tmp_path: Path, monkeypatch: Any) -> None:
    """--import MODULE on a read command: the classes are found and values rebuilt."""
    # The classes' own module (a script's classes are recorded under its import name),
    # without the script's runs: what a reader imports to see the values rebuilt.
    (tmp_path / "writer.py").write_text(
        "from pydantic import BaseModel\n"
        "class ReviewEvent(BaseModel):\n    text: str\n    stars: int\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        result = invoke(typed, ["state", TYPED, "--json", "--import", "writer"])
        assert result.exit_code == 0, result.output
        values = json.loads(result.output)
        values = values.get("values", values)
        assert values["review"] == {"text": "great", "stars": 5}
    finally:
        sys.modules.pop("writer", None)


def test_marker_helper_is_live(tmp_path: Path) -> None:
    """The planted pickle does create the marker when loaded (the suite's premise)."""
    marker = tmp_path / "m"
    pickle.loads(planted(marker))
    assert marker.exists()
    os.remove(marker)


def test_placeholders_are_for_trust_and_missing_classes_not_corruption() -> None:
    """Reading leaves corrupt data an error: only untrusted pickles and classes that
    cannot be used here become placeholders."""
    json_codec = codec_for_name("json")
    with pytest.raises(DecodeError, match="seq 7"):
        decode_for_reading(json_codec, b'{"a": 1', where="run 'r' seq 7")
    with pytest.raises(DecodeError, match="unknown value tag"):
        decode_for_reading(json_codec, b'{"__t": "nope", "v": 1}', where="run 'r' seq 7")
    missing = b'{"__t": "enum", "c": "gone.module:Colour", "v": "red"}'
    value = decode_for_reading(json_codec, b'{"k": [' + missing + b"]}", where="x")
    placeholder = value["k"][0]
    assert isinstance(placeholder, Undecoded) and placeholder.value == "red"
    assert placeholder.label == "Colour(gone.module) enum, not rebuilt"
    assert {placeholder: 1}[placeholder] == 1  # enum members are dict keys: hashable
    with pytest.raises(DecodeError, match=r"gone\.module:Colour"):
        json_codec.decode(missing, where="x")
    with pytest.raises(SerializationError, match="trust_pickle"):
        codec_for_name("pickle").encode(1)
