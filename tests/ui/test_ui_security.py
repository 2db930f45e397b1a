"""The web UI is no way around the journal's file permissions.

Every route needs the launch's access token (the routes are enumerated from the app,
so a new one is covered); with a wildcard bind the Host must be one of the machine's
own names; a request body is refused as soon as it passes the limit, not after it
has been read. The last tests start a real ``durable ui`` process.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from engine.ui import create_app
from engine.ui.app import MAX_BODY, BadToken, machine_names
from journal import Journal

LOOPBACK = "http://127.0.0.1"
TOKEN = "fixed-token-for-the-tests_0123456789"


@pytest.fixture
def journal_file(db_path: Path) -> Path:
    with Journal(db_path) as j:
        j.create_run("o1", name="demo:job", status="running")
    return db_path


@pytest.fixture
def app(journal_file: Path) -> Iterator[Any]:
    app = create_app(journal_file, token=TOKEN)
    yield app
    app.state.ui.engine.close()


def concrete_paths(app: Any) -> list[tuple[str, str]]:
    """(method, path) of every route the app has, its parameters filled in."""
    out = []
    for route in app.routes:
        if isinstance(route, Mount):
            out.append(("GET", route.path + "/ui.css"))
        else:
            assert isinstance(route, Route), route
            path = re.sub(r"\{[^}]+\}", "o1", route.path)
            out += [(m, path) for m in sorted(route.methods or ()) if m != "HEAD"]
    return out


class TestToken:
    def test_the_routes_are_all_found(self, app: Any) -> None:
        found = concrete_paths(app)
        assert ("GET", "/") in found and ("POST", "/api/runs/o1/fork") in found
        assert ("GET", "/static/ui.css") in found
        assert len(found) == len(app.routes)  # one method each today; a new route adds one

    @pytest.mark.parametrize(
        "credentials",
        [
            {},
            {"headers": {"Authorization": "Bearer wrong-token-0123456789"}},
            {"headers": {"Authorization": f"Basic {TOKEN}"}},
            {"params": {"token": "wrong-token-0123456789"}},
            {"params": {"token": ""}},
            {"cookies": {"durable_ui_80": "wrong-token-0123456789"}},
        ],
        ids=["none", "wrong-bearer", "not-bearer", "wrong-query", "empty-query", "wrong-cookie"],
    )
    def test_every_route_refuses_a_request_without_the_token(
        self, app: Any, credentials: dict[str, Any]
    ) -> None:
        with TestClient(app, base_url=LOOPBACK) as c:
            for method, path in concrete_paths(app):
                c.cookies.clear()
                for name, value in credentials.get("cookies", {}).items():
                    c.cookies.set(name, value)
                resp = c.request(
                    method,
                    path,
                    params=credentials.get("params"),
                    headers={**credentials.get("headers", {}), "content-type": "application/json"},
                    content=b"{}" if method == "POST" else None,
                )
                assert resp.status_code == 403, (method, path, resp.text)
                assert "set-cookie" not in resp.headers
                if path.startswith("/api/"):
                    assert resp.json()["type"] == "Forbidden"
                else:
                    assert "?token=" in resp.text and "printed" in resp.text
                assert "content-security-policy" in resp.headers

    def test_token_in_the_url_gives_the_page_and_a_cookie(self, app: Any) -> None:
        with TestClient(app, base_url=LOOPBACK) as c:
            resp = c.get("/", params={"token": TOKEN})
            assert resp.status_code == 200 and "o1" in resp.text
            cookie = resp.headers["set-cookie"]
            assert cookie.startswith(f"durable_ui_80={TOKEN};")
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
            # From then on the cookie alone opens every read route (a 400 is a missing
            # parameter: past the gate).
            for method, path in concrete_paths(app):
                if method == "GET":
                    assert c.get(path).status_code in (200, 400), path
            assert c.get("/api/runs").json()["runs"][0]["run_id"] == "o1"
            c.cookies.clear()
            assert c.get("/api/runs").status_code == 403

    def test_a_wrong_token_in_the_url_is_refused_even_with_the_cookie(self, app: Any) -> None:
        with TestClient(app, base_url=LOOPBACK) as c:
            assert c.get("/", params={"token": TOKEN}).status_code == 200
            assert c.get("/", params={"token": TOKEN + "x"}).status_code == 403

    def test_bearer_for_scripts(self, app: Any) -> None:
        with TestClient(app, base_url=LOOPBACK) as c:
            ok = c.get("/api/runs/o1", headers={"Authorization": f"Bearer {TOKEN}"})
            assert ok.status_code == 200 and ok.json()["run_id"] == "o1"
            assert "set-cookie" not in ok.headers
            cancel = c.post(
                "/api/runs/o1/cancel", json={}, headers={"Authorization": f"bearer {TOKEN}"}
            )
            assert cancel.status_code == 200 and cancel.json()["cancelled"] is True

    def test_a_fresh_token_per_app(self, journal_file: Path) -> None:
        a, b = create_app(journal_file), create_app(journal_file)
        try:
            assert a.state.token != b.state.token and len(a.state.token) >= 40
            with TestClient(a, base_url=LOOPBACK) as c:
                bearer = {"Authorization": f"Bearer {b.state.token}"}
                assert c.get("/api/runs", headers=bearer).status_code == 403
        finally:
            a.state.ui.engine.close()
            b.state.ui.engine.close()

    @pytest.mark.parametrize(
        "bad", ["short", "x" * 15, "has space in it 0123", "a;b=c0123456789012"]
    )
    def test_a_weak_or_unsafe_fixed_token_is_refused(self, journal_file: Path, bad: str) -> None:
        with pytest.raises(BadToken, match="16 to 256 characters"):
            create_app(journal_file, token=bad)


class TestHost:
    def test_wildcard_bind_takes_the_machines_own_names_only(self, journal_file: Path) -> None:
        own = sorted(machine_names())
        assert {"127.0.0.1", "localhost", "::1"} <= set(own)
        assert socket.gethostname().lower() in own
        app = create_app(journal_file, token=TOKEN, allowed_hosts=own, port=9000)
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        try:
            with TestClient(app, base_url=LOOPBACK) as c:
                for host, status in [
                    ("127.0.0.1:9000", 200),
                    ("[::1]:9000", 200),
                    (f"{socket.gethostname()}:9000", 200),
                    ("LOCALHOST:9000", 200),
                    ("evil.example:9000", 400),  # a page that rebound its name to us
                    ("127.0.0.1:9001", 400),  # not the port served
                    ("127.0.0.1", 400),  # port 80 then
                    ("::1:9000", 400),  # IPv6 without brackets
                    ("", 400),
                ]:
                    resp = c.get("/api/runs", headers={**bearer, "host": host})
                    assert resp.status_code == status, host
        finally:
            app.state.ui.engine.close()

    def test_any_host_is_never_accepted(self, journal_file: Path) -> None:
        with pytest.raises(ValueError, match="'\\*'"):
            create_app(journal_file, allowed_hosts=["*"])

    def test_the_host_check_comes_before_the_token(self, app: Any) -> None:
        with TestClient(app, base_url="http://evil.example") as c:
            assert c.get("/api/runs", params={"token": TOKEN}).status_code == 400


def asgi_call(
    app: Any, method: str, path: str, headers: dict[str, str], chunks: Iterator[bytes]
) -> tuple[int, int]:
    """Call the app as a server would, the body streamed from ``chunks``: (status, body
    bytes the app pulled from the stream)."""
    consumed = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal consumed
        chunk = next(chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        consumed += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], consumed


def huge_body(total: int, chunk: int = 64 << 10) -> Iterator[bytes]:
    piece = b" " * chunk
    for _ in range(total // chunk):
        yield piece


class TestBodyLimit:
    HEADERS = {
        "host": "127.0.0.1",
        "authorization": f"Bearer {TOKEN}",
        "content-type": "application/json",
    }

    def test_a_streamed_body_is_cut_off_at_the_limit(self, app: Any) -> None:
        status, consumed = asgi_call(
            app, "POST", "/api/runs/o1/fork", self.HEADERS, huge_body(300 << 20)
        )
        assert status == 413
        assert MAX_BODY < consumed <= MAX_BODY + (64 << 10)  # not 300 MiB

    def test_a_declared_length_past_the_limit_is_refused_unread(self, app: Any) -> None:
        headers = {**self.HEADERS, "content-length": str(300 << 20)}
        status, consumed = asgi_call(
            app, "POST", "/api/runs/o1/fork", headers, huge_body(300 << 20)
        )
        assert (status, consumed) == (413, 0)
        bad = {**self.HEADERS, "content-length": "12x"}
        assert asgi_call(app, "POST", "/api/runs/o1/fork", bad, huge_body(0))[0] == 400

    def test_no_token_is_refused_before_any_body_is_read(self, app: Any) -> None:
        headers = {k: v for k, v in self.HEADERS.items() if k != "authorization"}
        status, consumed = asgi_call(
            app, "POST", "/api/runs/o1/cancel", headers, huge_body(300 << 20)
        )
        assert (status, consumed) == (403, 0)

    def test_a_body_within_the_limit_still_works(self, app: Any) -> None:
        with TestClient(app, base_url=LOOPBACK) as c:
            body = json.dumps({"at": 0, "state": {"pad": "x" * (MAX_BODY - 100)}})
            resp = c.post(
                "/api/runs/o1/fork",
                content=body,
                headers={"Authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
            )
            assert resp.status_code != 413, resp.text


# -- a real `durable ui` -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(journal_file: Path, tmp_path: Path) -> Iterator[tuple[str, int, str]]:
    """``durable ui`` in its own process on a free loopback port: (host, port, URL)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DURABLE_UI_TOKEN"}
    log = tmp_path / "ui.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "ui", "--db", str(journal_file),
             "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=err, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        url = None
        while url is None or not _listening(port):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"durable ui did not start: {log.read_text()}"
            found = re.search(r"http://\S+", log.read_text())
            url = found.group() if found else None
            time.sleep(0.05)
        yield "127.0.0.1", port, url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _get(host: str, port: int, target: str, headers: dict[str, str] | None = None) -> Any:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("GET", target, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read().decode()
    finally:
        conn.close()


def test_durable_ui_prints_a_url_that_works_and_nothing_works_without_it(
    served: tuple[str, int, str],
) -> None:
    host, port, url = served
    match = re.fullmatch(rf"http://127\.0\.0\.1:{port}/\?token=([A-Za-z0-9_-]{{40,}})", url)
    assert match, url
    token = match.group(1)
    status, headers, body = _get(host, port, url.split(str(port), 1)[1])
    assert status == 200 and "o1" in body
    assert "HttpOnly" in headers["set-cookie"]
    assert _get(host, port, "/")[0] == 403  # another local user, without the URL
    assert _get(host, port, "/api/runs")[0] == 403
    assert _get(host, port, "/api/runs", {"Authorization": f"Bearer {token}"})[0] == 200
    assert _get(host, port, "/?token=" + "A" * len(token))[0] == 403


def test_a_real_server_refuses_a_huge_upload_while_it_streams(
    served: tuple[str, int, str],
) -> None:
    """300 MiB offered in chunks: the 413 comes back long before the sender is done."""
    host, port, url = served
    token = url.rsplit("=", 1)[1]
    sock = socket.create_connection((host, port), timeout=30)
    sent = 0
    with sock:
        sock.sendall(
            (
                f"POST /api/runs/o1/fork HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                "Transfer-Encoding: chunked\r\n\r\n"
            ).encode()
        )
        chunk = b"%x\r\n%s\r\n" % (64 << 10, b" " * (64 << 10))
        sock.settimeout(0.5)
        reply = b""
        while sent < (300 << 20) and not reply:
            try:
                sock.sendall(chunk)
                sent += 64 << 10
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                break
            sock.setblocking(False)
            try:
                reply = sock.recv(65536)
            except BlockingIOError:
                pass
            except ConnectionResetError:
                break
            finally:
                sock.settimeout(0.5)
        sock.settimeout(30)
        while b"\r\n" not in reply:
            more = sock.recv(65536)
            if not more:
                break
            reply += more
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    print(f"413 after {sent} bytes sent")
    assert sent < 64 << 20, sent  # the server stopped reading at 1 MiB; buffers hold the rest
