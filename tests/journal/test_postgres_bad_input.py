"""A PostgreSQL journal given bad input: each is a clear error or a clean retry.

An unreachable server, a refused login, a journal schema from a newer version, a schema
that is not a journal, and a connection that drops: inside a transaction (the server
rolls back: ``ConnectionLost``, nothing written), between transactions (reconnect and
carry on), or during COMMIT (outcome unknown: the journal re-reads to decide, and never
applies an append twice). Connections are cut for real: ``pg_terminate_backend`` from a
second connection, or a relay (:class:`CuttingRelay`) between the journal and the server
that cuts the line at a COMMIT, before or after the server has answered it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from engine import Engine, durable, step
from engine.cli import cli
from journal import (
    AppendRequest,
    ConflictError,
    ConnectionLost,
    DatabaseUnavailable,
    EntryKind,
    Journal,
    JournalError,
    NotAJournalError,
    SchemaVersionError,
)
from journal._postgres import CONNECT_TIMEOUT, split_url
from journal._schema import SCHEMA_VERSION
from journal.pg_cluster import ClusterUnavailable, TempCluster

pytestmark = pytest.mark.postgres

SECRET = "s3cret-Pa55"


def _set(j: Journal, key: str, value: Any) -> Any:
    return j.entry(EntryKind.STATE_SET, value, key=key)


def closed_port() -> int:
    """A port of 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def admin(url: str) -> psycopg.Connection[Any]:
    """A plain autocommit connection to the server of a journal URL."""
    conninfo, _, _ = split_url(url)
    return psycopg.connect(conninfo, autocommit=True)


def schema_of(url: str) -> str:
    return split_url(url)[1]


def snapshot(url: str) -> dict[str, Any]:
    """Everything in the URL's schema: each table's name and rows."""
    schema = schema_of(url)
    with admin(url) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s"
                " ORDER BY table_name",
                (schema,),
            )
        ]
        return {
            t: sorted(map(repr, conn.execute(f'SELECT * FROM {schema}."{t}"').fetchall()))
            for t in tables
        }


def wait_for(condition: Any, what: str, timeout: float = 10.0) -> None:
    """Poll ``condition()`` (a server-side state: nothing to be notified by) until true."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


# -- unreachable ------------------------------------------------------------------------


class TestUnreachable:
    """No server where the URL points: DatabaseUnavailable, quickly, password hidden."""

    def test_closed_port(self) -> None:
        """A refused connection names the URL without its password."""
        port = closed_port()
        url = f"postgresql://bob:{SECRET}@127.0.0.1:{port}/nowhere"
        began = time.monotonic()
        with pytest.raises(DatabaseUnavailable) as info:
            Journal(url)
        assert time.monotonic() - began < 5
        shown = f"postgresql://bob:***@127.0.0.1:{port}/nowhere"
        message = str(info.value)
        assert shown in message and "refused" in message
        assert info.value.where == shown
        assert SECRET not in message
        assert not isinstance(info.value, ConnectionLost)

    def test_password_as_a_parameter_is_hidden_too(self) -> None:
        """``?password=`` is libpq's other spelling: hidden in messages as well."""
        port = closed_port()
        url = f"postgresql://bob@127.0.0.1:{port}/nowhere?password={SECRET}&schema=s1"
        with pytest.raises(DatabaseUnavailable) as info:
            Journal(url)
        assert SECRET not in str(info.value)
        assert "password=***" in str(info.value)
        assert (
            split_url(url)[2] == f"postgresql://bob@127.0.0.1:{port}/nowhere?password=***&schema=s1"
        )

    def test_silent_server_times_out_at_the_urls_connect_timeout(self) -> None:
        """A host that accepts but never answers fails after ``?connect_timeout=``
        seconds (the URL's value is kept; the default applies only without one)."""
        with socket.create_server(("127.0.0.1", 0)) as silent:
            port = silent.getsockname()[1]
            url = f"postgresql://bob@127.0.0.1:{port}/x?connect_timeout=1"
            began = time.monotonic()
            with pytest.raises(DatabaseUnavailable, match="timeout"):
                Journal(url)
            took = time.monotonic() - began
        # libpq waits connect_timeout per attempt; sslmode=prefer may make two.
        assert took < min(CONNECT_TIMEOUT, 5), f"took {took:.1f}s"

    def test_engine_and_cli_say_so_in_one_line(self) -> None:
        """The engine raises the same error; the CLI prints one line and exits 2."""
        url = f"postgresql://bob:{SECRET}@127.0.0.1:{closed_port()}/nowhere"
        with Engine(url) as eng, pytest.raises(DatabaseUnavailable, match="cannot connect"):
            _ = eng.journal
        result = CliRunner().invoke(cli, ["--db", url, "runs"])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: cannot connect"), result.output
        assert SECRET not in result.output

    def test_cli_hides_a_password_parameter(self) -> None:
        url = f"postgresql://bob@127.0.0.1:{closed_port()}/nowhere?password={SECRET}"
        result = CliRunner().invoke(cli, ["--db", url, "runs"])
        assert result.exit_code == 2
        assert SECRET not in result.output


# -- credentials ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def locked_url() -> Iterator[str]:
    """A server of its own that wants a password over TCP (the session's trusts all)."""
    try:
        cluster = TempCluster(password=SECRET)
    except ClusterUnavailable as exc:
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    with cluster:
        yield cluster.url


class TestCredentials:
    """A refused login is DatabaseUnavailable with the server's reason, never the password."""

    def test_wrong_password(self, locked_url: str) -> None:
        wrong = locked_url.replace(SECRET, "not-the-" + SECRET)
        with pytest.raises(DatabaseUnavailable) as info:
            Journal(wrong)
        message = str(info.value)
        assert 'password authentication failed for user "postgres"' in message
        assert SECRET not in message
        assert ":***@127.0.0.1" in message

    def test_unknown_user(self, locked_url: str) -> None:
        intruder = locked_url.replace("postgres:", "mallory:", 1)
        with pytest.raises(DatabaseUnavailable, match='user "mallory"') as info:
            Journal(intruder)
        assert SECRET not in str(info.value)

    def test_right_password_opens_and_is_never_shown(self, locked_url: str) -> None:
        with Journal(f"{locked_url}?schema=auth_ok") as j:
            j.create_run("r", name="f")
            assert SECRET not in j.where and SECRET not in repr(j)
            assert j.get_run("r").status == "pending"


class TestDatabase:
    """The server answers, but the database or the role's rights are wrong."""

    def test_missing_database(self, pg_url: str) -> None:
        base = pg_url.split("?", maxsplit=1)[0].rsplit("/", 1)[0]
        with pytest.raises(DatabaseUnavailable, match='database "no_such_db" does not exist'):
            Journal(f"{base}/no_such_db")

    def test_role_that_may_not_create_the_schema(self, pg_schema_url: str) -> None:
        """A role without CREATE on the database: the server's refusal, nothing made."""
        role = f"r_{schema_of(pg_schema_url)}"
        with admin(pg_schema_url) as conn:
            conn.execute(f"CREATE ROLE {role} LOGIN")  # CREATE on a database: owners only
        try:
            as_role = pg_schema_url.replace("://postgres@", f"://{role}@", 1)
            with pytest.raises(JournalError, match="permission denied") as info:
                Journal(as_role)
            assert "creating the journal schema" in str(info.value)
            assert snapshot(pg_schema_url) == {}
        finally:
            with admin(pg_schema_url) as conn:
                conn.execute(f"DROP ROLE {role}")


# -- what is in the schema --------------------------------------------------------------


class TestSchema:
    """A schema the code cannot read is refused before anything is written to it."""

    def test_newer_schema_version(self, pg_schema_url: str) -> None:
        """SchemaVersionError with .found and .supported; the schema is left as it was."""
        with Journal(pg_schema_url) as j:
            j.create_run("r", name="f")
            j.append("r", [_set(j, "k", 1)], expected_seq=0)
        with admin(pg_schema_url) as conn:
            conn.execute(
                f"UPDATE {schema_of(pg_schema_url)}.journal_meta SET value = '99'"
                " WHERE key = 'schema_version'"
            )
        before = snapshot(pg_schema_url)
        for readonly in (False, True):
            with pytest.raises(SchemaVersionError) as info:
                Journal(pg_schema_url, readonly=readonly)
            assert (info.value.found, info.value.supported) == (99, SCHEMA_VERSION)
            assert "upgrade the package" in str(info.value)
            assert schema_of(pg_schema_url) in str(info.value)
        with pytest.raises(SchemaVersionError):
            _ = Engine(pg_schema_url).journal
        assert snapshot(pg_schema_url) == before

    def test_unreadable_schema_version(self, pg_schema_url: str) -> None:
        """A version that is not a number is not guessed at."""
        Journal(pg_schema_url).close()
        with admin(pg_schema_url) as conn:
            conn.execute(
                f"UPDATE {schema_of(pg_schema_url)}.journal_meta SET value = 'two'"
                " WHERE key = 'schema_version'"
            )
        with pytest.raises(SchemaVersionError, match="'two'") as info:
            Journal(pg_schema_url)
        assert info.value.found == "two"

    def test_foreign_schema(self, pg_schema_url: str) -> None:
        """A schema holding other tables is refused; nothing is added to it."""
        schema = schema_of(pg_schema_url)
        with admin(pg_schema_url) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
            conn.execute(f"CREATE TABLE {schema}.users (id INT PRIMARY KEY, name TEXT)")
            conn.execute(f"INSERT INTO {schema}.users VALUES (1, 'ada')")
        before = snapshot(pg_schema_url)
        with pytest.raises(NotAJournalError, match=r"holds 1 tables but is not a durable journal"):
            Journal(pg_schema_url)
        assert snapshot(pg_schema_url) == before == {"users": ["(1, 'ada')"]}

    def test_foreign_journal_meta(self, pg_schema_url: str) -> None:
        """A journal_meta table another program wrote is not taken for ours."""
        schema = schema_of(pg_schema_url)
        with admin(pg_schema_url) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
            conn.execute(f"CREATE TABLE {schema}.journal_meta (key TEXT, value TEXT)")
            conn.execute(
                f"INSERT INTO {schema}.journal_meta VALUES ('schema_version', '2'),"
                " ('application', 'someone-else')"
            )
        with pytest.raises(NotAJournalError, match="did not write"):
            Journal(pg_schema_url)

    def test_read_only_open_of_a_missing_journal(self, pg_schema_url: str) -> None:
        """Read-only, an empty schema is not created: NotAJournalError."""
        with pytest.raises(NotAJournalError, match="no journal"):
            Journal(pg_schema_url, readonly=True)
        assert snapshot(pg_schema_url) == {}


# -- dropped connections ----------------------------------------------------------------


def backend_pid(j: Journal) -> int:
    return int(j.backend.conn.info.backend_pid)  # type: ignore[attr-defined]


def gone(conn: psycopg.Connection[Any], pid: int) -> bool:
    row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return bool(row and row[0] == 0)


def waiting_on_a_lock(conn: psycopg.Connection[Any], pid: int) -> bool:
    row = conn.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,))
    return row.fetchone() == ("Lock",)


def last_seq(url: str, run_id: str) -> int:
    """The run's last seq as a fresh connection sees it."""
    with Journal(url, readonly=True) as other:
        return other.get_run(run_id).last_seq


class TestConnectionDropped:
    """The connection dies mid-transaction, between transactions, or during COMMIT."""

    def test_inside_append(self, pg_schema_url: str) -> None:
        """Killed while the append waits on a row lock: ConnectionLost, nothing written;
        the next append on the same Journal reconnects and succeeds."""
        j = Journal(pg_schema_url)
        try:
            j.create_run("r", name="f")
            assert j.append("r", [_set(j, "a", 1)], expected_seq=0) == 1
            pid = backend_pid(j)
            outcome: dict[str, Any] = {}

            def append() -> None:
                try:
                    outcome["seq"] = j.append("r", [_set(j, "b", 2)], expected_seq=1)
                except BaseException as exc:
                    outcome["error"] = exc

            with admin(pg_schema_url) as control, admin(pg_schema_url) as locker:
                with locker.transaction():
                    locker.execute(
                        f"SELECT 1 FROM {schema_of(pg_schema_url)}.runs"
                        " WHERE run_id = 'r' FOR UPDATE"
                    )
                    appender = threading.Thread(target=append)
                    appender.start()
                    wait_for(lambda: waiting_on_a_lock(control, pid), "the append to block")
                    control.execute("SELECT pg_terminate_backend(%s)", (pid,))
                    appender.join(10)
                assert not appender.is_alive()
            error = outcome.get("error")
            assert isinstance(error, ConnectionLost), outcome
            assert "'r'" in str(error) and "nothing was written" in str(error)
            assert last_seq(pg_schema_url, "r") == 1
            assert j.append("r", [_set(j, "b", 2)], expected_seq=1) == 2
            assert backend_pid(j) != pid
            assert j.state_at("r").values == {"a": 1, "b": 2}
        finally:
            j.close()

    def test_between_transactions(self, pg_schema_url: str) -> None:
        """A connection that died while idle is replaced on next use: nothing was in
        flight, so reads and appends just carry on."""
        with Journal(pg_schema_url) as j, admin(pg_schema_url) as control:
            j.create_run("r", name="f")
            uses = {
                "append": lambda: j.append("r", [_set(j, "a", 1)], expected_seq=0),
                "read": lambda: j.get_run("r").last_seq,
                "query": lambda: len(j.query("SELECT * FROM entries")),
                "update": lambda: j.append("r", [], expected_seq=None, status="running") and 1,
            }
            for name, use in uses.items():
                pid = backend_pid(j)
                control.execute("SELECT pg_terminate_backend(%s)", (pid,))
                wait_for(lambda pid=pid: gone(control, pid), "the backend to exit")
                assert use() == 1, name
                assert backend_pid(j) != pid, name
            assert j.get_run("r").status == "running"


class CuttingRelay:
    """A TCP relay between a journal and the server that cuts the line at the next
    request holding ``marker`` (some of its SQL): ``"before"`` the server sees it (so
    it never runs) or ``"after"`` the server has finished it and is ready for the next
    (so it committed); the client sees only the line go dead.

    The marker is found in the statement's text, so it must be one psycopg has not yet
    prepared (it prepares a statement on its fifth use): tests keep to a few commits.
    """

    _READY = b"Z\x00\x00\x00\x05"  # ReadyForQuery: the server finished the request

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        self.mode: str | None = None
        self.marker = b""
        self.cut = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, mode: str, marker: bytes) -> None:
        """Cut the line at the next request holding ``marker`` (once)."""
        self.cut.clear()
        self.marker, self.mode = marker, mode

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            with self._lock:
                self._sockets += [client, upstream]
            pair = {"finishing": False}
            for pump in (self._pump_up, self._pump_down):
                threading.Thread(target=pump, args=(client, upstream, pair), daemon=True).start()

    def _pump_up(
        self, client: socket.socket, upstream: socket.socket, pair: dict[str, bool]
    ) -> None:
        tail = b""
        while data := self._recv(client):
            seen = self.mode is not None and self.marker in tail + data
            tail = (tail + data)[-len(self.marker) - 1 :]
            if seen and self.mode == "before":
                self.mode = None
                self._close(client, upstream)
                return
            if seen and self.mode == "after":
                self.mode = None
                pair["finishing"] = True
            with contextlib.suppress(OSError):
                upstream.sendall(data)
        self._close(client, upstream)

    def _pump_down(
        self, client: socket.socket, upstream: socket.socket, pair: dict[str, bool]
    ) -> None:
        tail = b""
        while data := self._recv(upstream):
            if pair["finishing"]:
                # Swallow the answer; once the server is ready again, it has committed.
                tail = (tail + data)[-64:]
                if self._READY in tail:
                    self._close(client, upstream)
                    return
                continue
            with contextlib.suppress(OSError):
                client.sendall(data)
        self._close(client, upstream)

    @staticmethod
    def _recv(sock: socket.socket) -> bytes:
        try:
            return sock.recv(65536)
        except OSError:
            return b""

    def _close(self, *socks: socket.socket) -> None:
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self.cut.set()

    def cut_all(self) -> None:
        """Cut every line now, whatever is in flight."""
        with self._lock:
            socks = list(self._sockets)
        self._close(*socks)

    def close(self) -> None:
        self.server.close()
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.close()


@pytest.fixture
def relay(pg_url: str) -> Iterator[CuttingRelay]:
    conninfo = psycopg.conninfo.conninfo_to_dict(split_url(pg_url)[0])
    r = CuttingRelay(str(conninfo.get("host", "127.0.0.1")), int(conninfo.get("port", 5432)))
    yield r
    r.close()


@pytest.fixture
def relayed(relay: CuttingRelay, pg_schema_url: str) -> str:
    """``pg_schema_url`` through the relay."""
    return pg_schema_url.replace(f":{_port(pg_schema_url)}/", f":{relay.port}/", 1)


def _port(url: str) -> int:
    return int(psycopg.conninfo.conninfo_to_dict(split_url(url)[0])["port"])


def entries_of(url: str, run_id: str) -> list[tuple[int, Any]]:
    with Journal(url, readonly=True) as other:
        return [(e.seq, other.decode_entry(e)) for e in other.read(run_id)]


class TestCommitOutcomeUnknown:
    """The line goes dead while the server holds a write whose outcome the client cannot
    know: the journal settles it (ends the server's session) and re-reads. The append
    returns its seq if it landed, raises ConnectionLost if it did not, and never lands
    twice or late."""

    def test_append_committed_before_the_cut(
        self, relay: CuttingRelay, relayed: str, pg_schema_url: str
    ) -> None:
        """The server committed the append, then the line went: append returns its seq,
        the entries are there once, and the journal carries on after them."""
        with Journal(relayed) as j:
            j.create_run("r", name="f")
            assert j.append("r", [_set(j, "a", 1)], expected_seq=0) == 1
            relay.arm("after", b"INSERT INTO entries")
            assert j.append("r", [_set(j, "b", 2), _set(j, "c", 3)], expected_seq=1) == 3
            assert relay.cut.is_set()
            assert j.append("r", [_set(j, "d", 4)], expected_seq=3) == 4
            assert j.state_at("r").values == {"a": 1, "b": 2, "c": 3, "d": 4}
        assert [seq for seq, _ in entries_of(pg_schema_url, "r")] == [1, 2, 3, 4]

    def test_append_the_server_never_saw(
        self, relay: CuttingRelay, relayed: str, pg_schema_url: str
    ) -> None:
        """Cut before the append reached the server: ConnectionLost, nothing written; the
        same append again applies once."""
        with Journal(relayed) as j:
            j.create_run("r", name="f")
            assert j.append("r", [_set(j, "a", 1)], expected_seq=0) == 1
            relay.arm("before", b"INSERT INTO entries")
            with pytest.raises(ConnectionLost, match="nothing was written") as info:
                j.append("r", [_set(j, "b", 2)], expected_seq=1)
            assert info.value.run_id == "r" and relay.cut.is_set()
            assert last_seq(pg_schema_url, "r") == 1
            assert j.append("r", [_set(j, "b", 2)], expected_seq=1) == 2
        assert [seq for seq, _ in entries_of(pg_schema_url, "r")] == [1, 2]

    def test_append_stuck_on_the_server_never_lands_late(
        self, relay: CuttingRelay, relayed: str, pg_schema_url: str
    ) -> None:
        """Cut while the server runs the append, blocked on a row lock: without the
        settling the server would apply it once the lock is released, after the
        journal had re-read and reported it absent. It is ended instead: ConnectionLost,
        and nothing appears when the lock goes."""
        with Journal(relayed) as j, admin(pg_schema_url) as control:
            j.create_run("r", name="f")
            assert j.append("r", [_set(j, "a", 1)], expected_seq=0) == 1
            pid = backend_pid(j)
            outcome: dict[str, Any] = {}

            def append() -> None:
                try:
                    outcome["seq"] = j.append("r", [_set(j, "b", 2)], expected_seq=1)
                except BaseException as exc:
                    outcome["error"] = exc

            with admin(pg_schema_url) as locker, locker.transaction():
                locker.execute(
                    f"SELECT 1 FROM {schema_of(pg_schema_url)}.runs WHERE run_id = 'r' FOR UPDATE"
                )
                appender = threading.Thread(target=append)
                appender.start()
                wait_for(lambda: waiting_on_a_lock(control, pid), "the append to block")
                relay.cut_all()
                appender.join(30)
                assert not appender.is_alive()
                assert gone(control, pid), "the stuck session was left running"
            assert isinstance(outcome.get("error"), ConnectionLost), outcome
            assert last_seq(pg_schema_url, "r") == 1  # the lock is free: still nothing
            assert j.append("r", [_set(j, "b", 2)], expected_seq=1) == 2
        assert [seq for seq, _ in entries_of(pg_schema_url, "r")] == [1, 2]

    @pytest.mark.parametrize("mode", ["after", "before"])
    def test_commit_of_a_transaction(
        self, relay: CuttingRelay, relayed: str, pg_schema_url: str, mode: str
    ) -> None:
        """An append that also moves the run (BEGIN ... COMMIT), cut at its COMMIT:
        applied once, or not at all and said so."""
        with Journal(relayed) as j:
            j.create_run("r", name="f")
            relay.arm(mode, b"COMMIT\x00")
            if mode == "after":
                assert j.append("r", [_set(j, "a", 1)], expected_seq=0, status="running") == 1
            else:
                with pytest.raises(ConnectionLost):
                    j.append("r", [_set(j, "a", 1)], expected_seq=0, status="running")
                assert j.get_run("r").status == "pending"
                assert j.append("r", [_set(j, "a", 1)], expected_seq=0, status="running") == 1
            assert relay.cut.is_set()
            assert j.get_run("r").status == "running"
        assert [seq for seq, _ in entries_of(pg_schema_url, "r")] == [1]

    def test_run_update_without_entries(self, relay: CuttingRelay, relayed: str) -> None:
        """A status change with no entries whose COMMIT went unanswered cannot be told
        from one that did not apply by a re-read: a clear ConflictError, and the row
        says what happened."""
        with Journal(relayed) as j:
            j.create_run("r", name="f")
            relay.arm("after", b"COMMIT\x00")
            with pytest.raises(ConflictError, match="outcome stays unknown"):
                j.append("r", [], expected_seq=None, status="running")
            assert j.get_run("r").status == "running"

    def test_batch(self, relay: CuttingRelay, relayed: str, pg_schema_url: str) -> None:
        """A group commit whose COMMIT was applied: every request resolves to its seq."""
        with Journal(relayed) as j:
            for rid in ("a", "b"):
                j.create_run(rid, name="f")
            relay.arm("after", b"COMMIT\x00")
            results = j.append_batch(
                [
                    AppendRequest("a", [_set(j, "x", 1)], 0),
                    AppendRequest("b", [_set(j, "y", 1), _set(j, "y", 2)], 0),
                ]
            )
            assert results == [1, 2]
            assert relay.cut.is_set()
        assert len(entries_of(pg_schema_url, "a")) == 1
        assert len(entries_of(pg_schema_url, "b")) == 2


# -- the engine over a lost connection ----------------------------------------------------

ENGINE_CALLS: list[int] = []
CUT_AT_STEP: dict[int, CuttingRelay] = {}


@step
def counted(i: int) -> int:
    ENGINE_CALLS.append(i)
    relay = CUT_AT_STEP.pop(i, None)
    if relay is not None:  # this step's completion is the append whose line is cut
        relay.arm("before", b"INSERT INTO entries")
    return i * i


@durable(name="test_postgres_bad_input:squares")
def squares(n: int) -> int:
    return sum(counted(i) for i in range(n))


def test_a_connection_lost_at_a_step_commit_does_not_fail_the_run(
    relay: CuttingRelay, relayed: str, pg_schema_url: str
) -> None:
    """The journal says nothing was written; the run must still complete, each step
    run at most twice, once the connection is back (in process, or by recovery)."""
    ENGINE_CALLS.clear()
    CUT_AT_STEP[1] = relay
    with Engine(relayed, lease_seconds=0.2) as eng, contextlib.suppress(Exception):
        eng.start(squares, (3,), {}, run_id="sq").result(timeout=30)
    with Journal(pg_schema_url) as j:
        wait_for(lambda: j.get_run("sq").owner is None or bool(j.claimable()), "the lease")
    with Engine(pg_schema_url) as other:
        other.recover(timeout=30)
    with Journal(pg_schema_url) as j:
        run = j.get_run("sq")
        assert run.status == "completed", run.error
        assert j.decode(run.output, run.codec, where="t") == 0 + 1 + 4
    assert sorted(set(ENGINE_CALLS)) == [0, 1, 2] and ENGINE_CALLS.count(1) <= 2
