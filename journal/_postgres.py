"""The PostgreSQL backend: a journal in a PostgreSQL database, through psycopg 3.

Selected by a ``postgresql://`` URL. The journal's tables live in one schema of the
database (``durable`` unless the URL says ``?schema=name``), beside whatever else the
database holds. psycopg's errors are turned into the journal's tree here and nowhere
else.

Writers of different runs do not exclude each other here (in a journal file one
writer holds the whole file): every write locks the rows it depends on (``FOR
UPDATE``), and an append stores the run's last seq in its row so that the lock and
the guard are one read.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import urllib.parse
from collections.abc import Sequence
from typing import Any

from .extras import install_hint

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg import pq, sql
    from psycopg.conninfo import conninfo_to_dict
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"a postgresql:// journal needs psycopg: {install_hint('postgres')}") from exc

from ._backend import CommitUnknown, Cursor, Listener, redact
from ._ddl import create, upgrade
from ._integrity import entry_rows
from ._recorder import Recorder
from ._schema import (
    ENTRY_COLUMNS,
    RUN_FIELDS,
    SCHEMA_VERSION,
    SEALED_COLUMNS,
    reseal_runs,
)
from .errors import (
    BadJournalURL,
    ConnectionLost,
    DatabaseUnavailable,
    JournalBusy,
    JournalError,
    JournalFull,
    NotAJournalError,
    SchemaVersionError,
)
from .records import NewEntry

__all__ = ["DEFAULT_SCHEMA", "PostgresBackend", "split_url"]

DEFAULT_SCHEMA = "durable"
APPLICATION = "durable-journal"
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
CONNECT_TIMEOUT = 10
"""Seconds to wait for the server when neither the URL (``?connect_timeout=``) nor
``$PGCONNECT_TIMEOUT`` says: an unreachable host is an error, not a hang."""
# How long settle() waits for the session of a dropped connection to exit.
_SETTLE_TIMEOUT_MS = 10_000
# One advisory lock key for schema creation and upgrades ("DRB1", as in a file's header).
_SCHEMA_LOCK = 0x44524231

DDL = create("postgresql")
"""The statements creating a new journal's tables (declared once, in ``_ddl.py``)."""

MIGRATIONS: dict[int, tuple[str, ...]] = {
    version: upgrade("postgresql", version) for version in range(3, SCHEMA_VERSION + 1)
}
"""Statements taking a PostgreSQL journal to each version (the first one was 2)."""

_BUSY = (
    pg_errors.LockNotAvailable,
    pg_errors.DeadlockDetected,
    pg_errors.SerializationFailure,
    pg_errors.QueryCanceled,
)


def split_url(url: str) -> tuple[str, str, str]:
    """``(conninfo for libpq, schema, the URL without its password)``.

    ``schema`` is this project's parameter, not libpq's: it is taken out of the query.
    The password is hidden wherever the URL gives it: after the user name, or as a
    ``password=`` parameter.
    """
    shown = redact(url)
    if _RAW_PERCENT.search(url):
        raise BadJournalURL(
            f"the journal URL {shown!r} has a '%' not followed by two hex digits:"
            " write a literal % as %25 (in a password too)",
            location=shown,
        )
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - parsed on access: a bad port raises here
    except ValueError as exc:
        # urllib's message may quote a piece of a mis-parsed password: say it in our words.
        text = str(exc).lower()
        reason = (
            "a bad port (a number from 1 to 65535)"
            if "port" in text
            else "a bad IPv6 address (write it in brackets: [::1]:5432)"
            if "ipv" in text
            else "it is malformed"
        )
        raise BadJournalURL(
            f"the journal URL {shown!r} does not parse: {reason}", location=shown
        ) from None
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    schemas = [v for k, v in query if k == "schema"]
    schema = schemas[-1] if schemas else DEFAULT_SCHEMA
    if not _IDENTIFIER.fullmatch(schema):
        raise BadJournalURL(
            f"schema={schema!r} in the journal URL: use lower-case letters, digits and _ "
            "(at most 63, not starting with a digit)",
            location=shown,
        )
    rest = urllib.parse.urlencode([(k, v) for k, v in query if k != "schema"])
    conninfo = urllib.parse.urlunsplit(parts._replace(query=rest))
    try:
        conninfo_to_dict(conninfo)  # libpq's own parse: unknown parameters, bad values
    except psycopg.Error as exc:
        message = _scrub(_quoted_names_only(_first_line(exc), url), url)
        raise BadJournalURL(
            f"the journal URL {shown!r} is not valid for libpq: {message}", location=shown
        ) from None
    return conninfo, schema, shown


_RAW_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _quoted_names_only(message: str, url: str) -> str:
    """libpq quotes the token it choked on: keep it only if it is a plain parameter name
    that cannot be a piece of the password (it is not found before the URL's last ``@``)."""
    _, _, rest = url.partition("://")
    before_at = rest[: max(rest.rfind("@"), 0)]

    def keep(match: re.Match[str]) -> str:
        name = match.group(1)
        plain = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name) and name not in before_at
        return f'"{name}"' if plain else '"…"'

    return re.sub(r'"([^"]*)"', keep, message)


def _scrub(message: str, url: str) -> str:
    """``message`` with any password the URL holds (as written or decoded) hidden."""
    secrets: set[str] = set()
    _, _, rest = url.partition("://")
    at = rest.rfind("@")
    if at >= 0 and ":" in rest[:at]:
        secrets.add(rest[:at].split(":", 1)[1])
    secrets.update(m.group(1) for m in re.finditer(r"(?i)[?&]password=([^&#]*)", rest))
    for secret in sorted(secrets | {urllib.parse.unquote(x) for x in secrets}, key=len)[::-1]:
        if secret:
            message = message.replace(secret, "***")
    return message


class PostgresBackend(Recorder):
    """A journal in a PostgreSQL schema, on one connection (autocommit; explicit
    ``BEGIN``/``COMMIT`` so the store spells its transactions as it does for SQLite)."""

    kind = "postgresql"
    errors = (psycopg.Error,)
    stores_last_seq = True
    for_update = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"
    blob_length = "octet_length"
    no_limit = None
    last_seq = "runs.last_seq"
    guard = "SELECT last_seq, epoch, status FROM runs WHERE run_id = ? FOR UPDATE"
    sealed_guard = (
        f"SELECT last_seq, epoch, {SEALED_COLUMNS}, checksum FROM runs WHERE run_id = ? FOR UPDATE"
    )
    run_select = ", ".join(f"runs.{f}" for f in (*RUN_FIELDS, "checksum"))

    def __init__(self, url: str, *, durability: str, busy_timeout_ms: int, readonly: bool) -> None:
        self.conninfo, self.schema, self.location = split_url(url)
        self.readonly = readonly
        self._settings = {
            "search_path": self.schema,
            # Both levels flush the commit's WAL before it is acknowledged: a commit
            # survives the server's crash. "off" (WAL written later by the server) lost
            # acknowledged commits when the server was killed, weaker than "process"
            # means on SQLite. "local" does not wait for synchronous standbys.
            "synchronous_commit": "on" if durability == "full" else "local",
            "lock_timeout": f"{int(busy_timeout_ms)}ms",
            # The journal never leaves a transaction waiting on anything but itself: one
            # idle that long belongs to a client that stalled or lost the network, and
            # the server ends it so the row and advisory locks it holds (a claim's turn)
            # do not hold up every other worker until TCP gives up on it.
            "idle_in_transaction_session_timeout": f"{int(busy_timeout_ms)}ms",
            "default_transaction_read_only": "on" if readonly else "off",
        }
        self._sql: dict[str, str] = {}
        self._last: Any = None
        self._session: tuple[int, Any] = (0, None)
        self._farewell = False
        self._poller: Any = None
        self._connect_options: dict[str, Any] = {}
        if "connect_timeout" not in conninfo_to_dict(self.conninfo) and not os.environ.get(
            "PGCONNECT_TIMEOUT"
        ):
            self._connect_options["connect_timeout"] = CONNECT_TIMEOUT
        self.conn = self._connect()
        try:
            self._check_schema()
        except psycopg.Error as exc:
            self.conn.close()
            raise self.translate(exc, f"opening the journal at {self.location!r}") from exc
        except BaseException:
            self.conn.close()
            raise

    # -- connection ---------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self.conninfo, autocommit=True, **self._connect_options)
        except psycopg.Error as exc:
            raise DatabaseUnavailable(
                f"cannot connect to the PostgreSQL journal at {self.location!r}: "
                f"{_first_line(exc)}",
                where=self.location,
            ) from exc
        try:
            # One round trip: the settings, and who this session is (see settle()).
            settings = ", ".join(f"set_config('{name}', %s, false)" for name in self._settings)
            row = conn.execute(
                f"SELECT {settings}, pg_backend_pid(),"
                " (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())",
                list(self._settings.values()),
            ).fetchone()
            self._session = (row[-2], row[-1]) if row else (0, None)
            self._farewell = False
            conn.add_notice_handler(self._on_notice)
            self._poller = None
            if hasattr(select, "poll"):  # not on Windows
                self._poller = select.poll()
                self._poller.register(conn.fileno(), select.POLLIN)
        except psycopg.Error as exc:
            conn.close()
            raise DatabaseUnavailable(
                f"cannot configure the connection to the PostgreSQL journal at "
                f"{self.location!r}: {_first_line(exc)}",
                where=self.location,
            ) from exc
        return conn

    def _lost(self) -> bool:
        return bool(self.conn.closed or self.conn.broken)

    def _usable(self) -> psycopg.Connection[Any]:
        # A connection that dropped between transactions is replaced: nothing was in
        # flight. One that dropped inside a transaction is reported (ConnectionLost).
        if self._lost() or self._hung_up():
            self.conn.close()
            self.conn = self._connect()
        return self.conn

    def _hung_up(self) -> bool:
        """Whether the server ended the idle connection (a restart, a terminated or
        timed-out session): its FATAL, sent before it hung up, is waiting to be read.
        One readiness poll, no round trip; an idle connection that never LISTENs reads
        nothing else but notices."""
        conn = self.conn
        try:
            if self._poller is not None:
                if not self._poller.poll(0):
                    return False
            elif not select.select([conn.fileno()], [], [], 0)[0]:
                return False
            conn.pgconn.consume_input()  # raises at the end of the stream
            conn.pgconn.is_busy()  # parses it: a FATAL while idle is passed on as a notice
        except (OSError, ValueError, psycopg.Error):
            return True
        return self._farewell or conn.pgconn.status == pq.ConnStatus.BAD

    def _on_notice(self, diag: psycopg.errors.Diagnostic) -> None:
        if diag.severity_nonlocalized in ("FATAL", "PANIC"):
            self._farewell = True

    def _outside_transaction(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run ``sql`` with no transaction open (a BEGIN, or a statement that is its own
        transaction and only reads). A connection found dead by it was idle, so
        nothing was in flight: reconnect and run it once more."""
        try:
            return self._usable().execute(sql, params)
        except psycopg.OperationalError:
            if not self._lost():
                raise
        return self._usable().execute(sql, params)

    def _check_schema(self) -> None:
        conn = self.conn
        row = conn.execute(
            "SELECT (SELECT count(*) FROM information_schema.tables WHERE table_schema = %s),"
            " to_regclass(%s) IS NOT NULL",
            (self.schema, f"{self.schema}.journal_meta"),
        ).fetchone()
        tables, marked = row if row else (0, False)
        if not marked:
            if tables:
                raise NotAJournalError(
                    f"schema {self.schema!r} of {self.location!r} holds {tables} tables but "
                    "is not a durable journal; refusing to touch it (name another with "
                    "?schema=...)",
                    path=self.location,
                )
            if self.readonly:
                raise NotAJournalError(
                    f"{self.location!r} has no journal in schema {self.schema!r} "
                    "(opened read-only)",
                    path=self.location,
                )
            self._create_schema()
            return
        version = self._version()
        if version > SCHEMA_VERSION or version < 1:
            raise SchemaVersionError(
                f"{self.location!r} (schema {self.schema!r}) has journal schema version "
                f"{version}; this code reads up to {SCHEMA_VERSION}: upgrade the package",
                path=self.location,
                found=version,
                supported=SCHEMA_VERSION,
            )
        if version < SCHEMA_VERSION and not self.readonly:
            self._migrate()
        elif version < 3:  # read-only, not upgraded: its rows carry no checksum yet
            self.sealed = False
            self.run_select = ", ".join(f"runs.{f}" for f in RUN_FIELDS) + ", NULL"
        if version < SCHEMA_VERSION and self.readonly:
            self.schema_version = version

    def _version(self) -> int:
        row = self.conn.execute(
            "SELECT value FROM journal_meta WHERE key = 'schema_version'"
        ).fetchone()
        app = self.conn.execute(
            "SELECT value FROM journal_meta WHERE key = 'application'"
        ).fetchone()
        if row is None or app is None or app[0] != APPLICATION:
            raise NotAJournalError(
                f"schema {self.schema!r} of {self.location!r} has a journal_meta table that "
                "this project did not write; refusing to touch it",
                path=self.location,
            )
        try:
            return int(row[0])
        except ValueError:
            raise SchemaVersionError(
                f"{self.location!r} (schema {self.schema!r}) has journal schema version "
                f"{row[0]!r}, which this code does not know",
                path=self.location,
                found=row[0],
                supported=SCHEMA_VERSION,
            ) from None

    def _create_schema(self) -> None:
        with self.transaction(f"creating the journal schema in {self.location!r}"):
            # Workers starting together: one creates, the others wait and find it made.
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            # Asked of the catalog tables, read afresh after the wait: to_regclass goes
            # through this session's name caches, which an advisory lock does not
            # refresh, so it could miss the tables the holder just committed.
            made = self.conn.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n"
                " ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = 'journal_meta')",
                (self.schema,),
            ).fetchone()
            if made and made[0]:
                return
            self.conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
            for statement in DDL:
                self.conn.execute(statement)
            self.conn.execute(
                "INSERT INTO journal_meta (key, value) VALUES ('application', %s),"
                " ('schema_version', %s)",
                (APPLICATION, str(SCHEMA_VERSION)),
            )

    def _migrate(self) -> None:
        with self.transaction(f"upgrading the journal schema in {self.location!r}"):
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for target in range(self._version() + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[target]:
                    self.conn.execute(statement)
                if target == 3:
                    reseal_runs(self.execute)
            self.conn.execute(
                "UPDATE journal_meta SET value = %s WHERE key = 'schema_version'",
                (str(SCHEMA_VERSION),),
            )

    # -- statements ---------------------------------------------------------------------

    def _spell(self, sql: str) -> str:
        spelled = self._sql.get(sql)
        if spelled is None:
            spelled = self._sql[sql] = sql.replace("%", "%%").replace("?", "%s")
        return spelled

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        if self.conn.info.transaction_status == pq.TransactionStatus.ACTIVE:
            # Between our statements nothing may be in progress: a connection left
            # mid-command (a result never read) cannot be trusted with the next one.
            self.conn.close()
            raise ConnectionLost(
                f"the connection to {self.location!r} was left mid-command; it was closed "
                "(an open transaction is rolled back by the server): retry",
                where=self.location,
            )
        if self._in_transaction():
            cur = self.conn.execute(self._spell(sql), params)
        elif sql.startswith("SELECT"):
            cur = self._outside_transaction(self._spell(sql), params)
        else:  # a write on its own may have applied before the connection went: no retry
            cur = self._usable().execute(self._spell(sql), params)
        self._last = cur
        return cur

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        cur = self.conn.cursor()
        cur.executemany(self._spell(sql), rows)
        self._last = cur

    def append_entries(
        self, run_id: str, entries: Sequence[NewEntry], expected: int, epoch: int | None, now: float
    ) -> int | None:
        # A server round trip per statement dominates a PostgreSQL append: guard, run
        # update and inserts go as one statement, its own transaction.
        rows = entry_rows(run_id, entries, expected, now)
        values = ",".join(
            ["(%s,%s::bigint,%s,%s,%s,%s::bytea,%s,%s::float8,%s::bigint)"] * len(rows)
        )
        statement = (
            "WITH g AS (UPDATE runs SET last_seq = %s, updated_at = %s WHERE run_id = %s"
            " AND last_seq = %s AND (%s::bigint IS NULL OR epoch = %s)"
            " AND status NOT IN ('completed', 'failed', 'cancelled') RETURNING run_id)"
            f" INSERT INTO entries ({ENTRY_COLUMNS}) SELECT v.* FROM (VALUES {values})"
            f" AS v({ENTRY_COLUMNS}) CROSS JOIN g"
        )
        params = [expected + len(rows), now, run_id, expected, epoch, epoch]
        for row in rows:
            params.extend(row)
        conn = self._usable()
        try:
            cur = conn.execute(statement, params)
        except psycopg.OperationalError as exc:
            if conn.closed or conn.broken:
                # The statement was its own transaction: it may have committed.
                raise CommitUnknown(
                    f"appending to run {run_id!r}: the connection to {self.location!r} "
                    f"failed ({_first_line(exc)}); outcome unknown",
                    where=self.location,
                ) from exc
            raise self.translate(exc, f"appending to run {run_id!r}") from exc
        except self.errors as exc:
            raise self.translate(exc, f"appending to run {run_id!r}") from exc
        self._last = cur
        return expected + len(rows) if cur.rowcount == len(rows) else None

    def changes(self) -> int:
        return int(self._last.rowcount) if self._last is not None else 0

    def _in_transaction(self) -> bool:
        return self.conn.info.transaction_status in (
            pq.TransactionStatus.INTRANS,
            pq.TransactionStatus.INERROR,
        )

    def settle(self) -> bool:
        # The server may still be running the session whose connection died (a cut
        # line is noticed late), and a COMMIT it received may yet apply. Ending that
        # session, and waiting until it has exited, makes what a re-read sees final.
        if not self._lost():
            return False
        pid, started = self._session
        if started is None:
            return False
        try:
            conn = self._usable()
            if conn.info.server_version < 140000:  # no pg_terminate_backend(pid, timeout)
                return False
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid, %s) FROM pg_stat_activity"
                " WHERE pid = %s AND backend_start = %s",
                (_SETTLE_TIMEOUT_MS, pid, started),
            ).fetchall()
        except psycopg.Error:
            return False  # not allowed to end it, or the server is gone too: unknown
        return all(ended for (ended,) in rows)

    def begin(self) -> None:
        self._outside_transaction("BEGIN")

    def commit(self, where: str) -> None:
        try:
            self.conn.execute("COMMIT")
        except psycopg.Error as exc:
            if self._lost():
                # The COMMIT may have reached the server before the connection went.
                raise CommitUnknown(
                    f"{where}: the connection to {self.location!r} failed during COMMIT "
                    f"({_first_line(exc)}); outcome unknown",
                    where=where,
                ) from exc
            # The server answered: it rolled the transaction back.
            self.rollback()
            raise self.translate(exc, where) from exc

    def rollback(self) -> None:
        if self.conn.closed or self.conn.broken:
            return  # the server rolled back when the connection went
        with contextlib.suppress(psycopg.Error):
            if self._in_transaction():
                self.conn.execute("ROLLBACK")

    def translate(self, exc: BaseException, where: str) -> JournalError:  # noqa: PLR0911 - one return per kind of error
        if isinstance(exc, JournalError):
            return exc
        if isinstance(exc, pg_errors.DiskFull):  # SQLSTATE 53100
            return JournalFull(
                f"{where}: the PostgreSQL server at {self.location!r} is out of disk space "
                f"({_first_line(exc)}); nothing was written. Free space on the server, then "
                "resume the run: its lease was given up, so `durable recover` or a worker "
                "takes it",
                where=where,
            )
        if isinstance(exc, _BUSY):
            return JournalBusy(
                f"{where}: rows stayed locked by another writer past busy_timeout "
                f"({_first_line(exc)}); retry, or raise busy_timeout",
                where=where,
            )
        if isinstance(exc, psycopg.OperationalError) and (self.conn.closed or self.conn.broken):
            return ConnectionLost(
                f"{where}: the connection to {self.location!r} was lost before COMMIT "
                f"({_first_line(exc)}); the server rolled back, nothing was written",
                where=where,
            )
        if isinstance(exc, psycopg.OperationalError):
            return DatabaseUnavailable(f"{where}: {_first_line(exc)}", where=where)
        if isinstance(exc, pg_errors.ReadOnlySqlTransaction):
            return JournalError(f"{where}: the journal was opened read-only", where=where)
        return JournalError(f"{where}: {type(exc).__name__}: {_first_line(exc)}", where=where)

    def close(self) -> None:
        self.conn.close()

    def size_bytes(self) -> int:
        # Every table of the journal's schema, with its indexes and TOAST.
        row = self.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ?"
            " AND c.relkind = 'r'",
            (self.schema,),
        ).fetchone()
        return int(row[0])

    def reclaim(self, max_pages: int | None) -> int:
        # Autovacuum returns dead rows' space for reuse; a plain VACUUM does it now.
        self._usable().execute("VACUUM runs, entries, snapshots")
        return 0

    def query(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        try:
            self._outside_transaction("BEGIN READ ONLY")
            conn = self.conn
            try:
                cur = conn.execute(self._spell(sql), params)
                if cur.description is None:
                    return []
                names = [d.name for d in cur.description]
                return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
            finally:
                self.rollback()
        except psycopg.OperationalError as exc:
            raise self.translate(exc, "running a query") from exc
        except psycopg.Error as exc:
            raise JournalError(f"query failed: {_first_line(exc)}", sql=sql) from exc

    def clock(self) -> float:
        # The server's clock, as it is now (not the transaction's start): every host
        # sharing the journal measures leases by this one clock, so a host whose own
        # clock is off neither steals live leases nor writes leases that last too long.
        row = self.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8").fetchone()
        return float(row[0])

    def take_turns(self, key: int) -> bool:
        # Never wait: a claimer stalled inside its claim (SIGSTOP, GC) would hold up
        # every other one, and with them anything else waiting on their connection.
        row = self.execute("SELECT pg_try_advisory_xact_lock(?)", (key,)).fetchone()
        return bool(row and row[0])

    def notify(self, channel: str, payload: str) -> None:
        """Send a NOTIFY (delivered when the current transaction, if any, commits)."""
        self.execute("SELECT pg_notify(?, ?)", (self._channel(channel), payload))

    def listener(self, channel: str) -> Listener:
        return PgListener(self.conninfo, self._channel(channel), self.location)

    def _channel(self, channel: str) -> str:
        # Journals in different schemas of one database must not wake each other.
        return f"{self.schema}.{channel}"


class PgListener(Listener):
    """``LISTEN`` on a dedicated connection (a pooled or busy one would miss or delay
    notifications); reconnects if the connection drops."""

    def __init__(self, conninfo: str, channel: str, location: str) -> None:
        super().__init__()
        self.conninfo, self.channel, self.location = conninfo, channel, location
        self._conn: psycopg.Connection[Any] | None = None

    def _listening(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            try:
                self._conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=10)
                self._conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            except psycopg.Error as exc:
                raise DatabaseUnavailable(
                    f"cannot listen on the PostgreSQL journal at {self.location!r}: "
                    f"{_first_line(exc)}",
                    where=self.location,
                ) from exc
        return self._conn

    def wait(self, timeout: float) -> list[str]:
        if self._closed.is_set():
            return []
        conn = self._listening()
        payloads: list[str] = []
        try:
            for note in conn.notifies(timeout=timeout, stop_after=1):
                payloads.append(note.payload)
            # Drain what else arrived with it, without waiting.
            for note in conn.notifies(timeout=0):
                payloads.append(note.payload)
        except psycopg.OperationalError:
            self._conn = None  # reconnect on the next wait; a poll covers the gap
        return payloads

    def close(self) -> None:
        super().close()
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
