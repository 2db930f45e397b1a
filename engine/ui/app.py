"""The UI's web app: server-rendered pages and a JSON API over one journal (file or URL).

Reads go through the same time-travel functions as the CLI (``history``,
``state_at``, ``diff``); actions call the same engine functions (``fork``,
``send_event``, ``Engine.cancel``). Forks execute in this process, on the app's
engine, so their code must be importable here (``imports=``).
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import itertools
import json
import os
import re
import secrets
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote, urlencode, urlsplit

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from journal import (
    ConflictError,
    CorruptionError,
    DecodeError,
    EntryKind,
    HorizonError,
    Journal,
    JournalBusy,
    JournalError,
    Run,
    RunNotFound,
    SeqOutOfRange,
    is_url,
    to_jsonable,
)
from journal import payloads as P
from journal.kinds import RUN_STATUSES

from ..errors import (
    BadRequest,
    BadToken,
    BodyTooLarge,
    EngineError,
    FunctionNotFound,
    NotResumable,
    ReadOnly,
    StepNotFound,
    UnsupportedMedia,
    WrongFunction,
)
from ..registry import import_user_modules
from ..runtime import Engine
from ..timetravel import Checkpoint, diff, fork, iter_history, state_at
from ..workflow import RunFinished, send_event
from . import graph, runlist, steps, story, views

__all__ = [
    "LOOPBACK_HOSTS",
    "TOKEN_ENV",
    "BadToken",
    "BodyTooLarge",
    "ReadOnly",
    "create_app",
    "machine_names",
    "new_token",
    "serve",
]

K = EntryKind
T = TypeVar("T")

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
"""Host names accepted by default: a page on another site that rebinds its own
DNS name to 127.0.0.1 still sends that name, and is turned away."""

WILDCARDS = ("0.0.0.0", "::", "")
"""Bind addresses that listen on every interface (the Host rule then takes the
machine's own names and addresses: :func:`machine_names`)."""

TOKEN_ENV = "DURABLE_UI_TOKEN"
"""The environment variable ``durable ui`` takes a fixed token from (``--token``)."""

TOKEN_SHAPE = re.compile(r"[A-Za-z0-9._~-]{16,256}")
"""A token given by the user: long enough to guess at no rate, and safe in a URL and
a cookie as it is."""

MAX_ROWS = 300
"""Checkpoints drawn on one timeline page; longer runs page through theirs."""

MAX_BODY = 1 << 20
"""Largest action body accepted, in bytes (a fork's edited state is the big one)."""

STATIC = Path(__file__).parent / "static"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
"""Only the package's own script and stylesheet run: even an escaping bug could not
load or inline a script."""


def new_token() -> str:
    """A fresh access token (256 random bits), as each launch of the UI makes one."""
    return secrets.token_urlsafe(32)


def check_token(token: str) -> str:
    """``token`` if it may be used: 16 to 256 of ``A-Z a-z 0-9 . _ ~ -``."""
    if not TOKEN_SHAPE.fullmatch(token):
        raise BadToken(
            f"a UI token takes 16 to 256 characters from A-Z a-z 0-9 . _ ~ - "
            f"(got {len(token)} characters); leave it out to get a random one"
        )
    return token


class UI:
    """What every request needs: the journal's engine, the mode and the templates."""

    def __init__(self, path: str, engine: Engine, readonly: bool, templates: Jinja2Templates):
        self.path = path
        self.engine = engine
        self.readonly = readonly
        self.templates = templates

    @property
    def journal(self) -> Journal:
        return self.engine.journal


# -- opening -----------------------------------------------------------------------------


def writable(path: str) -> bool:
    """Can this process write the journal (the file, and its folder for -wal/-shm)?"""
    folder = os.path.dirname(os.path.abspath(path))
    return os.access(path, os.W_OK) and os.access(folder, os.W_OK)


def import_modules(names: Sequence[str]) -> None:
    """Import the user's modules (forks and events need them), as the CLI does."""
    import_user_modules(names)


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,  # every payload is untrusted text: never markup
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        ts=views.fmt_time,
        dur=views.fmt_duration,
        preview=views.preview,
        jsontext=views.as_json_text,
    )
    env.globals.update(run_url=run_url, api_url=api_url)
    return Jinja2Templates(env=env)


def run_url(run_id: str, suffix: str = "", **params: Any) -> str:
    """The page of a run; ids may hold ``/``, ``#`` and ``:`` (child runs), so quote all."""
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f"/runs/{quote(run_id, safe='')}{suffix}" + (f"?{query}" if query else "")


def api_url(run_id: str, suffix: str = "") -> str:
    """The API address of a run (see :func:`run_url`)."""
    return f"/api/runs/{quote(run_id, safe='')}{suffix}"


def create_app(
    db: str | os.PathLike[str],
    *,
    readonly: bool | None = False,
    imports: Sequence[str] = (),
    allowed_hosts: Sequence[str] | None = None,
    token: str | None = None,
    port: int | None = None,
    trust_pickle: bool = False,
    hmac_key: bytes | str | None = None,
) -> Starlette:
    """The UI over the journal at ``db`` (a file, which must exist: the UI never creates
    one, or a ``postgresql://`` URL).

    ``readonly=None`` picks read-only when the file is not writable (read-write for a
    URL). ``imports`` names
    modules to import first (the code of runs to fork or send events to).
    ``allowed_hosts`` are the Host names served (default: loopback names only; never
    ``*``). Every request must carry ``token`` (a fresh one when not given; it is
    ``app.state.token``). ``port``, if given, must be the one in the Host header.
    Pages show pickled payloads only with ``hmac_key`` (verified) or ``trust_pickle``,
    and values of classes not imported as their stored fields (see ``Undecoded``).
    """
    token = new_token() if token is None else check_token(token)
    hosts = list(LOOPBACK_HOSTS if allowed_hosts is None else allowed_hosts)
    if "*" in hosts or any(not str(h).strip() for h in hosts):
        raise ValueError("allowed_hosts names hosts; '*' (any Host) is not accepted")
    path = os.fspath(db)
    journal: Journal
    if is_url(path):
        # PostgreSQL: there is no file whose permissions say whether it can be written.
        readonly = bool(readonly)
        import_modules(imports)
        journal = Journal(path, readonly=readonly, trust_pickle=trust_pickle, hmac_key=hmac_key)
    else:
        if not os.path.exists(path):
            raise FileNotFoundError(f"no journal at {path}")
        if os.path.isdir(path):
            raise IsADirectoryError(f"{path} is a directory, not a journal")
        if readonly is None:
            readonly = not writable(path)
        import_modules(imports)
        journal = Journal(path, readonly=readonly, trust_pickle=trust_pickle, hmac_key=hmac_key)
    ui = UI(journal.where, Engine(journal), readonly, _templates())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        ui.engine.close()

    routes = [
        Route("/", runs_page),
        Route("/runs/{run_id:path}/live", live_fragment),
        Route("/runs/{run_id:path}/steps/{number}", step_page),
        Route("/runs/{run_id:path}", run_page),
        Route("/api/runs", api_runs),
        Route("/api/runs/{run_id:path}/history", api_history),
        Route("/api/runs/{run_id:path}/state", api_state),
        Route("/api/runs/{run_id:path}/diff", api_diff),
        Route("/api/runs/{run_id:path}/fork", api_fork, methods=["POST"]),
        Route("/api/runs/{run_id:path}/events", api_events, methods=["POST"]),
        Route("/api/runs/{run_id:path}/cancel", api_cancel, methods=["POST"]),
        Route("/api/runs/{run_id:path}/resume", api_resume, methods=["POST"]),
        Route("/api/runs/{run_id:path}", api_run),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    errors = (JournalError, EngineError, ValueError, LookupError, ImportError)
    handlers: dict[Any, Any] = dict.fromkeys(errors, error_response)
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(HostCheck, hosts=hosts, port=port),
            Middleware(TokenGate, token=token),
            Middleware(BodyLimit, limit=MAX_BODY),
        ],
        exception_handlers=handlers,
        lifespan=lifespan,
    )
    app.state.ui = ui
    app.state.token = token
    return app


def serve(
    db: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8321,
    readonly: bool | None = None,
    imports: Sequence[str] = (),
    token: str | None = None,
    trust_pickle: bool = False,
    hmac_key: bytes | str | None = None,
) -> None:
    """Serve the UI with uvicorn until interrupted. Binds to loopback unless ``host``
    says otherwise; with a wildcard host (``0.0.0.0``, ``::``) the Host header must be
    one of the machine's own names or addresses (:func:`machine_names`). Prints the
    address to open, with the access token (``token``, else a fresh one)."""
    import uvicorn  # noqa: PLC0415 - only serving needs the server

    allowed = list(LOOPBACK_HOSTS)
    wildcard = host in WILDCARDS
    if wildcard:
        allowed = sorted(machine_names())
    elif _host_name(host) not in allowed:
        allowed.append(_host_name(host))
    app = create_app(
        db,
        readonly=readonly,
        imports=imports,
        allowed_hosts=allowed,
        token=token,
        port=port,
        trust_pickle=trust_pickle,
        hmac_key=hmac_key,
    )
    ui: UI = app.state.ui
    token = app.state.token
    shown = "127.0.0.1" if wildcard else (f"[{host}]" if ":" in host else host)
    mode = "read-only" if ui.readonly else "read-write"
    print(
        f"durable ui: http://{shown}:{port}/?token={token} ({mode}, journal {ui.path})",
        file=sys.stderr,
    )
    if wildcard:
        print(
            f"  from another machine: http://{socket.getfqdn()}:{port}/?token={token}",
            file=sys.stderr,
        )
    uvicorn.run(app, host=host, port=port, log_level="warning")


# -- who may ask ---------------------------------------------------------------------------


def _host_name(host: str) -> str:
    """A host name or address as compared: lower case, no brackets, no trailing dot."""
    return host.strip().strip("[]").rstrip(".").lower()


def _split_host(header: str) -> tuple[str, int | None]:
    """A Host header's name and port (``None`` if it gives none); ``("", None)`` if
    it is malformed."""
    name, port = header, ""
    if header.startswith("["):
        end = header.find("]")
        if end < 0:
            return "", None
        name, rest = header[1:end], header[end + 1 :]
        if rest and not rest.startswith(":"):
            return "", None
        port = rest[1:]
    elif header.count(":") == 1:
        name, port = header.split(":")
    elif ":" in header:
        return "", None  # an IPv6 address must be in brackets
    if port and not port.isdigit():
        return "", None
    return _host_name(name), int(port) if port else None


def _interface_addresses() -> set[str]:
    """The addresses of this machine's interfaces, as far as the standard library can
    tell without extra packages (Linux: ``/proc`` for IPv6, an ioctl for IPv4)."""
    found: set[str] = set()
    with contextlib.suppress(OSError), open("/proc/net/if_inet6", encoding="ascii") as f:
        for line in f:
            found.add(str(ipaddress.IPv6Address(int(line.split()[0], 16))))
    with contextlib.suppress(OSError, ImportError, AttributeError):
        import fcntl  # noqa: PLC0415 - POSIX only
        import struct  # noqa: PLC0415

        siocgifaddr = 0x8915  # Linux
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _, name in socket.if_nameindex():
                with contextlib.suppress(OSError):
                    packed = struct.pack("256s", name.encode()[:15])
                    answer = fcntl.ioctl(sock.fileno(), siocgifaddr, packed)
                    found.add(socket.inet_ntoa(answer[20:24]))
    return found


def machine_names() -> set[str]:
    """The Host names a UI bound to every interface answers to: loopback names, the
    host name and fully qualified name, their addresses, and the interfaces' addresses."""
    names = set(LOOPBACK_HOSTS)
    hostname = socket.gethostname()
    for name in {hostname, socket.getfqdn()}:
        names.add(name)
        with contextlib.suppress(OSError, UnicodeError):
            for *_, addr in socket.getaddrinfo(name, None):
                names.add(str(addr[0]).split("%")[0])
    names |= _interface_addresses()
    return {_host_name(n) for n in names if n}


# -- security and errors -------------------------------------------------------------------


class HostCheck:
    """Refuses (400) a request whose Host is not one of ``hosts`` (or whose port is
    not ``port``, when given): a page that rebinds its own DNS name to this machine
    still sends that name. Unlike Starlette's TrustedHostMiddleware it reads IPv6
    literals (``[::1]:8321``) and the port."""

    def __init__(self, app: ASGIApp, hosts: Collection[str], port: int | None) -> None:
        self.app = app
        self.hosts = {_host_name(h) for h in hosts}
        self.port = port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            name, port = _split_host(Headers(scope=scope).get("host", ""))
            default = 443 if scope.get("scheme") in ("https", "wss") else 80
            if name not in self.hosts or (self.port is not None and (port or default) != self.port):
                response = PlainTextResponse("Invalid host header", status_code=400)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


FORBIDDEN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>durable ui: access token needed</title></head>
<body><h1>403: this page needs the UI's access token</h1>
<p>Open the address <code>durable ui</code> printed when it started, token included
(<code>http://127.0.0.1:PORT/?token=&hellip;</code>): look in the terminal or log that
started it. A UI started with <code>--token</code> or <code>$DURABLE_UI_TOKEN</code>
takes that token. Scripts may send <code>Authorization: Bearer TOKEN</code>.</p>
</body></html>
"""


class TokenGate:
    """Every request carries the launch's token: as ``?token=`` (answered with an
    HttpOnly, SameSite=Strict cookie that carries it from then on), as that cookie, or
    as ``Authorization: Bearer``. Anything else gets 403. File permissions guard the
    journal; this keeps another local user (or a page in the browser) from reading it
    through the UI."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    def _valid(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token)

    @staticmethod
    def cookie_name(scope: Scope) -> str:
        """Cookies ignore ports: one name per port keeps two UIs on one host apart."""
        server = scope.get("server") or ("", 0)
        return f"durable_ui_{server[1]}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        name = self.cookie_name(scope)
        in_query = request.query_params.get("token")
        scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
        if in_query is not None:
            allowed = self._valid(in_query)  # a wrong token in the URL is refused outright
        else:
            allowed = self._valid(request.cookies.get(name)) or (
                scheme.lower() == "bearer" and self._valid(bearer.strip())
            )
        if not allowed:
            response: Response
            if scope["path"].startswith("/api/"):
                message = "this API needs the UI's access token (Authorization: Bearer TOKEN)"
                response = JSONResponse({"error": message, "type": "Forbidden"}, 403)
            else:
                response = HTMLResponse(FORBIDDEN_PAGE, status_code=403)
            await response(scope, receive, send)
            return
        if in_query is None:
            await self.app(scope, receive, send)
            return
        cookie = f"{name}={in_query}; Path=/; HttpOnly; SameSite=Strict".encode()

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"set-cookie", cookie)]
            await send(message)

        await self.app(scope, receive, send_with_cookie)


class BodyLimit:
    """Refuses a request body past ``limit`` bytes: at once (413) if its Content-Length
    says so, else as soon as the bytes received pass the limit (the rest is not read)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            status = 413 if declared.isdigit() else 400
            response = JSONResponse(
                {"error": f"the body is larger than {self.limit} bytes", "type": "BodyTooLarge"}
                if status == 413
                else {"error": "a bad Content-Length", "type": "BadRequest"},
                status_code=status,
            )
            await response(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(f"the body is larger than {self.limit} bytes")
            return message

        await self.app(scope, counted, send)


class SecurityHeaders:
    """Adds a strict Content-Security-Policy and friends to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cache-control", b"no-store"),
                ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


STATUS: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], int], ...] = (
    (BodyTooLarge, 413),
    (RunNotFound, 404),
    (ReadOnly, 403),
    (UnsupportedMedia, 415),
    ((BadRequest, StepNotFound, SeqOutOfRange), 400),
    (
        (FunctionNotFound, WrongFunction, RunFinished, HorizonError, ConflictError, ImportError),
        409,
    ),
    (NotResumable, 409),
    ((DecodeError, CorruptionError), 422),  # a stored value or row that does not verify
    (JournalBusy, 503),
    (ValueError, 400),  # bad event fields (pydantic's ValidationError) and other bad input
)
"""The HTTP status of each error, first match wins (see docs/ui.md); anything else is 500."""


def status_for(exc: BaseException) -> int:
    """The HTTP status an error is answered with."""
    return next((status for kinds, status in STATUS if isinstance(exc, kinds)), 500)


def error_response(request: Request, exc: Exception) -> Response:
    """JSON ``{"error": ...}`` for the API, a small page for a person."""
    status = status_for(exc)
    message = str(exc) or type(exc).__name__
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": message, "type": type(exc).__name__}, status_code=status)
    ui: UI = request.app.state.ui
    return ui.templates.TemplateResponse(
        request, "error.html", {"status": status, "message": message, "ui": ui}, status_code=status
    )


async def _action_body(request: Request) -> Any:
    """The JSON body of an action, after the checks every write goes through."""
    ui: UI = request.app.state.ui
    if ui.readonly:
        raise ReadOnly(f"the UI is read-only over {ui.path}: actions are disabled")
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        raise ReadOnly(f"cross-origin request from {origin!r} refused")
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise UnsupportedMedia("actions take a JSON body (Content-Type: application/json)")
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise BadRequest(f"the body is larger than {MAX_BODY} bytes")
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None


# -- reading -------------------------------------------------------------------------------


def _ui(request: Request) -> UI:
    ui: UI = request.app.state.ui
    return ui


def _run_id(request: Request) -> str:
    run_id: str = request.path_params["run_id"]
    return run_id


MAX_OFFSET = 10**12
"""Largest list offset accepted: past it a database's integer would overflow."""


def _list_runs(ui: UI, request: Request) -> tuple[runlist.Page, dict[str, Any]]:
    q = request.query_params
    filters: dict[str, Any] = {
        "q": q.get("q") or None,
        "status": views.status_param(q.getlist("status"), RUN_STATUSES),
        "name": q.get("name") or None,
        "since": views.time_param(q.get("since"), "since"),
        "until": views.time_param(q.get("until"), "until"),
        "limit": views.int_param(q.get("limit"), "limit", minimum=1, maximum=1000)
        or runlist.DEFAULT_LIMIT,
        "offset": views.int_param(q.get("offset"), "offset", minimum=0, maximum=MAX_OFFSET) or 0,
    }
    page = runlist.list_page(ui.journal, {**filters, "search": runlist.parse_search(filters["q"])})
    return page, filters


def api_runs(request: Request) -> Response:
    """``GET /api/runs?q=&status=&name=&since=&until=&limit=&offset=``: newest first,
    with the total that matches, counts by status, and the next page's offset."""
    page, filters = _list_runs(_ui(request), request)
    return JSONResponse(
        {
            "runs": [views.run_doc(r) for r in page.runs],
            "filters": filters,
            "total": page.total,
            "counts": page.counts,
            "next_offset": page.next_offset,
        }
    )


def _decoded(journal: Journal, run: Run, field: Literal["input", "output"]) -> Any:
    try:
        return to_jsonable(journal.decode_run_value(run, field, strict=False))
    except DecodeError as exc:
        return {"undecodable": str(exc)}


def _related(journal: Journal, run: Run) -> dict[str, list[str]]:
    """Child runs and forks of ``run``, by id."""
    children = [r.run_id for r in journal.list_runs(parent_run_id=run.run_id, limit=None)]
    return {"children": children, "forks": journal.forks_of(run.run_id)}


def api_run(request: Request) -> Response:
    """``GET /api/runs/{id}``: the run, its input and output, children and forks."""
    journal = _ui(request).journal
    run = journal.get_run(_run_id(request))
    doc = views.run_doc(run)
    doc["input"] = _decoded(journal, run, "input")
    doc["output"] = _decoded(journal, run, "output")
    doc.update(_related(journal, run))
    doc["heartbeats"] = journal.heartbeat_of(run.run_id)
    return JSONResponse(doc)


def api_history(request: Request) -> Response:
    """``GET /api/runs/{id}/history?offset=&limit=``: checkpoints in order."""
    ui = _ui(request)
    run_id = _run_id(request)
    offset = views.int_param(request.query_params.get("offset"), "offset", minimum=0) or 0
    limit = views.int_param(request.query_params.get("limit"), "limit", minimum=1)
    cps = iter_history(run_id, engine=ui.engine)
    window = itertools.islice(cps, offset, None if limit is None else offset + limit)
    return JSONResponse(
        {"run_id": run_id, "checkpoints": [views.checkpoint_doc(c) for c in window]}
    )


def api_state(request: Request) -> Response:
    """``GET /api/runs/{id}/state?step=N``: the state after checkpoint N (latest if none)."""
    ui = _ui(request)
    run_id = _run_id(request)
    step = views.int_param(request.query_params.get("step"), "step", minimum=0)
    view = state_at(run_id, step=step, engine=ui.engine)
    return JSONResponse(
        {
            "run_id": run_id,
            "step": step,
            "seq": view.seq,
            "values": view.to_dict(),
            "pending_events": to_jsonable(dict(view.pending_events)),
        }
    )


def api_diff(request: Request) -> Response:
    """``GET /api/runs/{id}/diff?a=N&b=M[&other=RUN]``: what changed from step a to b."""
    ui = _ui(request)
    run_id = _run_id(request)
    q = request.query_params
    a = views.int_param(q.get("a"), "a", minimum=0)
    b = views.int_param(q.get("b"), "b", minimum=0)
    if a is None or b is None:
        raise BadRequest("give both step numbers: ?a=N&b=M")
    other = q.get("other") or None
    if other is not None:
        ui.journal.get_run(other)
    d = diff(run_id, a, b, other_run_id=other, engine=ui.engine)
    return JSONResponse(
        {
            "run_id": run_id,
            "a": a,
            "b": b,
            "other_run_id": other,
            "added": d.added,
            "removed": d.removed,
            "changed": {k: {"old": old, "new": new} for k, (old, new) in d.changed.items()},
        }
    )


# -- actions -------------------------------------------------------------------------------


async def api_fork(request: Request) -> Response:
    """``POST /api/runs/{id}/fork`` ``{"at": N, "state": {...}, "run_id": optional}``."""
    body = await _action_body(request)
    if not isinstance(body, dict):
        raise BadRequest('the body must be a JSON object: {"at": N, "state": {...}}')
    unknown = sorted(set(body) - {"at", "state", "run_id"})
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(unknown)}; expected at, state, run_id")
    at = body.get("at")
    if not isinstance(at, int) or isinstance(at, bool) or at < 0:
        raise BadRequest(f'"at" must be a checkpoint number (an integer >= 0), got {at!r}')
    edits = body.get("state", {})
    if edits is None:
        edits = {}
    if not isinstance(edits, dict):
        raise BadRequest(
            f'"state" must be a JSON object of key → new value, got {type(edits).__name__}'
        )
    new_id = body.get("run_id")
    if new_id is not None and (not isinstance(new_id, str) or not new_id.strip()):
        raise BadRequest('"run_id" must be a non-empty string')
    ui = _ui(request)
    run_id = _run_id(request)

    def start() -> str:
        handle = fork(run_id, at=at, state=edits, new_run_id=new_id, engine=ui.engine)
        return handle.run_id

    new_run = await run_in_threadpool(start)
    return JSONResponse(
        {"run_id": new_run, "forked_from": run_id, "at": at, "edits": sorted(edits)},
        status_code=201,
    )


async def api_events(request: Request) -> Response:
    """``POST /api/runs/{id}/events`` ``{"type": "EventClass", ...fields}``."""
    body = await _action_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("type"), str):
        raise BadRequest('the event must be a JSON object with a "type" naming its Event class')
    ui = _ui(request)
    run_id = _run_id(request)
    key = await run_in_threadpool(send_event, run_id, body, engine=ui.engine)
    return JSONResponse({"run_id": run_id, "key": key, "type": body["type"]}, status_code=202)


async def api_cancel(request: Request) -> Response:
    """``POST /api/runs/{id}/cancel``: cancel; a finished run is left as it is."""
    await _action_body(request)
    ui = _ui(request)
    run_id = _run_id(request)

    def cancel() -> tuple[str, str]:
        before = ui.journal.get_run(run_id).status
        return before, ui.engine.cancel(run_id)

    before, status = await run_in_threadpool(cancel)
    cancelled = before != "cancelled" and status == "cancelled"
    return JSONResponse({"run_id": run_id, "status": status, "cancelled": cancelled})


async def api_resume(request: Request) -> Response:
    """``POST /api/runs/{id}/resume``: resume a failed run from its failing step (409 and
    nothing written for any other run, or one resumed meanwhile)."""
    await _action_body(request)
    ui = _ui(request)
    run_id = _run_id(request)

    def resume() -> str:
        ui.engine.resume(run_id, by="durable ui")
        return ui.journal.get_run(run_id).status

    status = await run_in_threadpool(resume)
    return JSONResponse({"run_id": run_id, "resumed": True, "status": status}, status_code=202)


# -- pages ---------------------------------------------------------------------------------


def runs_page(request: Request) -> Response:
    """The run list; a script refreshes its rows from ``/api/runs`` every second."""
    ui = _ui(request)
    page, filters = _list_runs(ui, request)
    names = ui.journal.function_names()
    q = request.query_params
    form = {k: q.get(k, "") for k in ("q", "name", "since", "until", "limit")}
    form["status"] = ",".join(filters["status"] or [])

    def page_url(**change: Any) -> str:
        params: dict[str, Any] = {**{k: v for k, v in form.items() if v}, **change}
        return "/?" + urlencode({k: v for k, v in params.items() if v not in (None, "")})

    return ui.templates.TemplateResponse(
        request,
        "runs.html",
        {
            "ui": ui,
            "page": page,
            "runs": page.runs,
            "names": names,
            "statuses": RUN_STATUSES,
            "form": form,
            "page_url": page_url,
            "now": time.time(),
        },
    )


def _describe_event(journal: Journal) -> Callable[[Checkpoint], str]:
    """The type of the event an ``event.received`` checkpoint delivered."""

    def describe(cp: Checkpoint) -> str:
        try:
            payload = journal.decode_entry(journal.read_one(cp.run_id, cp.seq), strict=False)
        except JournalError:
            return ""
        event = payload.get("event") if isinstance(payload, dict) else None
        return views.type_name(event) if event is not None else ""

    return describe


def default_step(cps: Sequence[Checkpoint]) -> int:
    """The checkpoint a run page opens on: the last step's (what the run last did, with
    the state it changed), else the last checkpoint, else the start (0)."""
    ends = (K.STEP_COMPLETED, K.STEP_FAILED)
    last_step = next((c for c in reversed(cps) if c.kind in ends), None)
    if last_step is not None:
        return last_step.number
    return cps[-1].number if cps else 0


def failure(cps: Sequence[Checkpoint]) -> dict[str, Any] | None:
    """A failed run's error and traceback, as its ``run.failed`` entry recorded them."""
    end = cps[-1] if cps else None
    if end is None or end.kind != K.RUN_FAILED:
        return None
    read = P.read_run_failed(to_jsonable(dict(end.detail)))
    return {
        "type": read.type or "error",
        "error": read.error or "",
        "traceback": read.traceback,
        "number": end.number,
    }


def _page_context(ui: UI, request: Request, run: Run) -> dict[str, Any]:
    """Header and timeline: what the live fragment re-renders as the run moves on."""
    q = request.query_params
    step = views.int_param(q.get("step"), "step", minimum=0)
    offset = views.int_param(q.get("offset"), "offset", minimum=0)
    cps = list(iter_history(run.run_id, engine=ui.engine))
    if step is None:
        step = default_step(cps)
    if offset is None:  # the page of checkpoints that holds the selected one
        offset = max(0, min(step - 1 - MAX_ROWS // 2, len(cps) - MAX_ROWS))
    window = cps[offset : offset + MAX_ROWS]
    owners = story.owners(ui.journal, run, cps)
    timeline = views.build_timeline(
        run, window, now=time.time(), describe_event=_describe_event(ui.journal), owners=owners
    )
    return {
        "owners": owners,
        "failure": failure(cps),
        "ui": ui,
        "run": run,
        "related": _related(ui.journal, run),
        "checkpoints": cps,
        "timeline": timeline,
        "step": step,
        "offset": offset,
        "window": (offset, offset + len(window)),
        "max_rows": MAX_ROWS,
        "fork_note": next((c for c in cps if c.kind == K.RUN_FORKED), None),
        "input": _decoded(ui.journal, run, "input"),
        "output": _decoded(ui.journal, run, "output"),
        # What its steps last reported (ctx.heartbeat); a damaged value is said, not fatal.
        "heartbeats": _guarded(lambda: ui.journal.heartbeat_of(run.run_id)),
    }


def live_fragment(request: Request) -> Response:
    """The header and timeline alone, swapped in by the page's script as the run moves."""
    ui = _ui(request)
    run = ui.journal.get_run(_run_id(request))
    return ui.templates.TemplateResponse(request, "_live.html", _page_context(ui, request, run))


def _guarded(call: Callable[[], T]) -> tuple[T | None, str | None]:
    """Run a read for the page; a journal or engine error becomes a message on the page."""
    try:
        return call(), None
    except (JournalError, EngineError) as exc:
        return None, str(exc)


def run_page(request: Request) -> Response:
    """A run: header, Gantt timeline, and the selected checkpoint's details, state,
    diff and actions."""
    ui = _ui(request)
    journal = ui.journal
    run = journal.get_run(_run_id(request))
    ctx = _page_context(ui, request, run)
    cps: list[Checkpoint] = ctx["checkpoints"]
    step: int = ctx["step"]
    last = cps[-1].number if cps else 0  # a fork's run.forked shares its fork point's number
    if step > last:
        raise StepNotFound(f"run {run.run_id!r} has {last} checkpoints; there is no step {step}")
    q = request.query_params
    a = views.int_param(q.get("a"), "a", minimum=0)
    b = views.int_param(q.get("b"), "b", minimum=0)
    a = max(step - 1, 0) if a is None else a
    b = step if b is None else b
    # The last checkpoint numbered ``step``: a fork's own, where state_at(step) reads.
    selected = next((c for c in reversed(cps) if c.number == step), None) if step >= 1 else None
    state, state_error = _guarded(lambda: state_at(run.run_id, step=step, engine=ui.engine))
    changes, diff_error = _guarded(lambda: diff(run.run_id, a, b, engine=ui.engine))
    entries, entries_error = (
        ([], None) if selected is None else _guarded(lambda: steps.entries_of(journal, selected))
    )
    consumed, _ = (
        ([], None)
        if selected is None
        else _guarded(lambda: steps.consumed_by(journal, run, selected.consumed))
    )
    values = state.to_dict() if state is not None else {}
    waiting: list[str] = []
    if run.kind == "workflow" and not run.finished:
        latest, _ = _guarded(lambda: state_at(run.run_id, engine=ui.engine).to_dict())
        waiting = views.waiting_for(latest or {})
    ctx.update(
        selected=selected,
        values=values,
        state_error=state_error,
        diff=changes,
        diff_error=diff_error,
        a=a,
        b=b,
        entries=entries or [],
        entries_error=entries_error,
        consumed=consumed or [],
        fork_text=json.dumps(values, indent=2, ensure_ascii=False),
        event_text=json.dumps({"type": waiting[0] if waiting else "HumanResponseEvent"}),
        can_act=not ui.readonly,
        detail=to_jsonable(dict(selected.detail)) if selected is not None else {},
        graph=graph.step_graph(ui.engine, run),
    )
    return ui.templates.TemplateResponse(request, "run.html", ctx)


def step_page(request: Request) -> Response:
    """One checkpoint: its inputs and result, then the state it changed, then the journal
    entries it is made of."""
    ui = _ui(request)
    journal = ui.journal
    run = journal.get_run(_run_id(request))
    number = views.int_param(request.path_params["number"], "step", minimum=0) or 0
    cps = list(iter_history(run.run_id, engine=ui.engine))
    cp = next((c for c in reversed(cps) if c.number == number), None) if number >= 1 else None
    if cp is None:
        last = cps[-1].number if cps else 0
        raise StepNotFound(f"run {run.run_id!r} has {last} checkpoints; there is no step {number}")
    entries, entries_error = _guarded(lambda: steps.entries_of(journal, cp))
    entries = entries or []
    consumed, _ = _guarded(lambda: steps.consumed_by(journal, run, cp.consumed))
    before, before_error = _guarded(
        lambda: state_at(run.run_id, step=number - 1, engine=ui.engine).to_dict()
    )
    output = _decoded(journal, run, "output") if cp.kind == K.RUN_COMPLETED else None
    index = cps.index(cp)
    ctx = {
        "ui": ui,
        "run": run,
        "cp": cp,
        "kinds": {"step": (K.STEP_COMPLETED, K.STEP_FAILED)},
        "consumed": consumed or [],
        "before": before or {},
        "before_error": before_error,
        "outcome": steps.outcome(cp, entries, output),
        "mutations": steps.mutations(cp, entries),
        "emitted": [e for e in entries if e["kind"] == K.EVENT_EMITTED and e["step"]],
        "entries": entries,
        "entries_error": entries_error,
        "digest": next((e["key"] for e in entries if e["seq"] == cp.seq), None),
        "prev": cps[index - 1].number if index > 0 else None,
        "next": cps[index + 1].number if index + 1 < len(cps) else None,
        "detail": to_jsonable(dict(cp.detail)),
    }
    return ui.templates.TemplateResponse(request, "step.html", ctx)
