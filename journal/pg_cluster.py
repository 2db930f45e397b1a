"""A throwaway PostgreSQL cluster for tests, benchmarks and CI.

``TempCluster`` runs ``initdb`` and ``pg_ctl`` from the local PostgreSQL install into
a private directory, listens on a free port of 127.0.0.1 with trust authentication
(or, given a ``password``, password authentication on 127.0.0.1), and creates one
database. It is test tooling, not part of the journal's API::

    with TempCluster() as cluster:
        Journal(cluster.url)
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path
from types import TracebackType

from .errors import JournalError

__all__ = ["ClusterUnavailable", "TempCluster", "find_bindir", "wait_for_sessions_to_end"]

_TOOLS = ("initdb", "pg_ctl", "postgres", "createdb")
# A throwaway cluster needs no fsync at init; trust is safe on 127.0.0.1 and its own socket.
_INITDB_FLAGS = ("--auth-local=trust", "--encoding=UTF8", "--locale=C", "--no-sync")
# Settings for tests: enough connections for pools and worker processes, little memory.
_SETTINGS = {"max_connections": "200", "shared_buffers": "32MB", "listen_addresses": "'127.0.0.1'"}


class ClusterUnavailable(JournalError, RuntimeError):
    """PostgreSQL could not be found or started; the message says why."""


def find_bindir() -> Path:
    """The directory holding ``initdb``, ``pg_ctl``, ``postgres`` and ``createdb``.

    PATH first, then Debian's ``/usr/lib/postgresql/<version>/bin``, highest version.
    """
    on_path = shutil.which("pg_ctl")
    # Debian keeps the server tools off PATH; a PATH entry may be a symlink into them.
    candidates = [Path(os.path.realpath(on_path)).parent] if on_path else []
    versioned = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted(
        (Path(d) for d in versioned if Path(d).parent.name.isdigit()),
        key=lambda d: int(d.parent.name),
        reverse=True,
    )
    for bindir in candidates:
        if all(os.access(bindir / tool, os.X_OK) for tool in _TOOLS):
            return bindir
    raise ClusterUnavailable(
        f"PostgreSQL server binaries ({', '.join(_TOOLS)}) not found on PATH or under "
        "/usr/lib/postgresql/*/bin; install the 'postgresql' package"
    )


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TempCluster:
    """A private PostgreSQL server, started on construction; use ``url``, then ``stop()``.

    With ``password``, connections over TCP (``url``) must give it (scram-sha-256), so
    tests can see a login refused; the private socket stays trusted.
    """

    def __init__(
        self,
        directory: Path | None = None,
        *,
        dbname: str = "durable_test",
        password: str | None = None,
    ) -> None:
        self.bindir = find_bindir()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres and shutil.which("runuser") is None:
            raise ClusterUnavailable("running as root needs runuser to start PostgreSQL")
        self._owned = directory is None
        self._running = False
        # mkdtemp under /tmp, not pytest's tmp_path: its root-only parents would stop
        # the postgres user from reaching the data directory.
        if directory is None:
            directory = Path(tempfile.mkdtemp(prefix="durable-pg-", dir="/tmp"))
        self.base = directory
        self.base.mkdir(parents=True, exist_ok=True)
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self.user = "postgres"
        self.port = 0
        try:
            if self._as_postgres:
                # initdb and postgres refuse to run as root.
                shutil.chown(self.base, "postgres", "postgres")
            auth = ["--auth-host=trust"]
            if password is not None:
                pwfile = self.base / "pwfile"
                pwfile.write_text(password + "\n")
                if self._as_postgres:
                    shutil.chown(pwfile, "postgres", "postgres")
                auth = ["--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
            self._run("initdb", "-D", str(self.data), "-U", self.user, *_INITDB_FLAGS, *auth)
            with (self.data / "postgresql.conf").open("a") as conf:
                settings = {**_SETTINGS, "unix_socket_directories": f"'{self.base}'"}
                conf.writelines(f"{k} = {v}\n" for k, v in settings.items())
            self._start()
            # Through the private socket: trusted even when TCP wants a password.
            self._run(
                "createdb", "-h", str(self.base), "-p", str(self.port), "-U", self.user, dbname
            )
        except BaseException:
            self.stop()
            raise
        login = self.user
        if password is not None:
            login += ":" + urllib.parse.quote(password, safe="")
        self.url = f"postgresql://{login}@127.0.0.1:{self.port}/{dbname}"

    def _start(self) -> None:
        # A free port can be taken between the probe and the bind: try a few.
        for _ in range(3):
            self.port = _free_port()
            try:
                self._pg_ctl("start", "-l", str(self.log), "-o", f"-p {self.port}")
            except ClusterUnavailable:
                if "could not bind" not in self._log_tail():
                    raise
                continue
            self._running = True
            return
        raise ClusterUnavailable(f"no free port to bind; server log:\n{self._log_tail()}")

    def server_pids(self) -> list[int]:
        """The postmaster's pid and those of all its children (backends, WAL writer...)."""
        try:
            postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        pids = [postmaster]
        for stat in glob.glob("/proc/[0-9]*/stat"):
            try:
                fields = Path(stat).read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # the process ended meanwhile
            if int(fields[1]) == postmaster:
                pids.append(int(Path(stat).parent.name))
        return pids

    def crash(self) -> None:
        """SIGKILL every server process at once (frozen first, so none reacts to another's
        death): a server crash without power loss. ``restart()`` brings it back."""
        pids = self.server_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        # Children forked between the listing and the freeze are found now.
        pids = sorted(set(pids) | set(self.server_pids()))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in pids:
            for _ in range(500):
                if not Path(f"/proc/{pid}").exists() or _zombie(pid):
                    break
                time.sleep(0.01)
        # A dead postmaster left as a zombie (nobody reaps it at once in some
        # containers) still "exists" for the new one's lock-file check: it is dead,
        # so its lock files are stale.
        if pids and _zombie(pids[0]):
            (self.data / "postmaster.pid").unlink(missing_ok=True)
            (self.base / f".s.PGSQL.{self.port}.lock").unlink(missing_ok=True)
        self._running = False

    def restart(self) -> None:
        """Start the server again on the same port (after ``crash()``: crash recovery)."""
        self._pg_ctl("start", "-l", str(self.log), "-o", f"-p {self.port}")
        self._running = True

    def _pg_ctl(self, action: str, *args: str) -> None:
        self._run("pg_ctl", action, "-D", str(self.data), "-w", "-t", "60", *args)

    def _run(self, tool: str, *args: str) -> None:
        argv = [str(self.bindir / tool), *args]
        if self._as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        # cwd: the postgres user may not be able to enter the caller's directory.
        done = subprocess.run(argv, cwd=self.base, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            who = " as the postgres user" if self._as_postgres else ""
            raise ClusterUnavailable(
                f"{tool} failed (exit {done.returncode}){who} in {self.base}:\n"
                f"{done.stdout}{done.stderr}server log:\n{self._log_tail()}"
            )

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove the directory if this made it."""
        if self._running:
            self._running = False
            self._pg_ctl("stop", "-m", "fast")
        if self._owned:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> TempCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def wait_for_sessions_to_end(url: str, application_name: str, timeout: float = 30.0) -> None:
    """Wait until the server holds no session named ``application_name`` (``$PGAPPNAME``).

    A client killed with a COMMIT already sent leaves a server backend that still carries
    it out: what the journal holds "at the kill" is only known once that backend is gone.
    """
    import psycopg  # noqa: PLC0415 - the module imports without the PostgreSQL extra

    from journal._postgres import split_url  # noqa: PLC0415 - psycopg imported on use

    conninfo, _, _ = split_url(url)
    deadline = time.monotonic() + timeout
    with psycopg.connect(conninfo, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                (application_name,),
            ).fetchone()
            if row is None or row[0] == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{row[0]} session(s) named {application_name!r} remain")
            time.sleep(0.01)
