"""``durable ui``: a local web UI over a journal (runs, timelines, time travel).

Server-rendered pages (Starlette + Jinja2, autoescaped) and a small JSON API, served
by uvicorn on loopback. It needs the ``ui`` extra: ``pip install -e 'PATH[ui]'``.
See ``docs/ui.md``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from journal.extras import install_hint

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = ["create_app", "serve"]

_MISSING = f"the web UI needs the 'ui' extra: {install_hint('ui')}"


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
    """The UI as an ASGI app over the journal at ``db``; every request must carry
    ``token`` (fresh if not given: ``app.state.token``). See
    :func:`engine.ui.app.create_app`."""
    try:
        from .app import create_app as make  # noqa: PLC0415 - the extra is optional
    except ImportError as exc:
        raise ImportError(f"{_MISSING} ({exc})") from exc
    return make(
        db,
        readonly=readonly,
        imports=imports,
        allowed_hosts=allowed_hosts,
        token=token,
        port=port,
        trust_pickle=trust_pickle,
        hmac_key=hmac_key,
    )


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
    """Serve the UI until interrupted, printing its address with the access token
    (``token``, else a fresh one). See :func:`engine.ui.app.serve`."""
    try:
        from .app import serve as run  # noqa: PLC0415 - the extra is optional
    except ImportError as exc:
        raise ImportError(f"{_MISSING} ({exc})") from exc
    run(
        db,
        host=host,
        port=port,
        readonly=readonly,
        imports=imports,
        token=token,
        trust_pickle=trust_pickle,
        hmac_key=hmac_key,
    )
