"""``modelhost up``: the API, local workers and serving in one process tree."""

from __future__ import annotations

import logging
import os
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from modelhost.api.app import create_app
from modelhost.cli.output import console
from modelhost.config import Settings
from modelhost.errors import InvalidInput

log = logging.getLogger("modelhost")


@dataclass(frozen=True)
class TlsFiles:
    """A PEM private key and its certificate (chain): uvicorn then speaks HTTPS itself."""

    keyfile: Path
    certfile: Path


def tls_files(keyfile: Path | None, certfile: Path | None) -> TlsFiles | None:
    """Both files or neither; InvalidInput (before anything starts) if one is missing, unreadable,
    or the pair does not load as a key and its certificate."""
    if keyfile is None and certfile is None:
        return None
    if keyfile is None or certfile is None:
        raise InvalidInput("give both --ssl-keyfile and --ssl-certfile, or neither")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as e:
        reason = getattr(e, "strerror", None) or getattr(e, "reason", None) or str(e)
        raise InvalidInput(
            f"--ssl-keyfile/--ssl-certfile: cannot load the key and certificate ({reason})"
        ) from e
    return TlsFiles(keyfile.resolve(), certfile.resolve())


def _announce(app: FastAPI, server: uvicorn.Server, settings: Settings, demo: bool, url: str) -> None:
    """Once the server listens: the URL and (on a new home) the admin key first, so a demo
    that fails can never hide the key; then the demo and its curl line."""
    from modelhost.cli.demo import DEMO_INSTANCE, run_demo

    while not server.started:
        if server.should_exit:
            return
        threading.Event().wait(0.05)
    created = app.state.first_admin_key
    console.print(f"\n[bold green]modelhost is up[/bold green] at {url}  (API docs: {url}/docs)")
    if created is not None:
        shown = f"admin API key (shown once, stored hashed): [bold]{created.key}[/bold]"
        console.print(shown, soft_wrap=True)
        console.print(f"  export MODELHOST_URL={url} MODELHOST_API_KEY={created.key}", soft_wrap=True)
    else:
        console.print("admin API key: the one shown on first start (export MODELHOST_API_KEY=...)")
    if not demo:
        return
    try:
        run_demo(app)
    except Exception:  # the platform keeps serving; the demo is an extra
        log.exception("the digits demo failed")
        return
    console.print("try a prediction:")
    console.print(
        f"  curl -s -H \"Authorization: Bearer $MODELHOST_API_KEY\" -H 'Content-Type: application/json' "
        f"-d '{{\"instances\": [{DEMO_INSTANCE}]}}' {url}/v1/models/digits:predict",
        highlight=False,
        soft_wrap=True,
    )


def serve(settings: Settings, demo: bool = False, tls: TlsFiles | None = None) -> None:
    """Run the server until interrupted; HTTPS when ``tls`` is given (see SECURITY.md)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if tls is None and settings.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "binding %s: modelhost speaks plain HTTP; put TLS in front of it before exposing it",
            settings.host,
        )
    from modelhost.serving.runtimes.torch import set_threads

    set_threads(settings.torch_threads or max(1, (os.cpu_count() or 2) - 1))
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        proxy_headers=False,  # X-Forwarded-* from clients is not trusted by default
        server_header=False,
        log_level="warning",
        access_log=False,
        ssl_keyfile=str(tls.keyfile) if tls else None,
        ssl_certfile=str(tls.certfile) if tls else None,
    )
    server = uvicorn.Server(config)
    url = f"{'https' if tls else 'http'}://{settings.host}:{settings.port}"
    threading.Thread(target=_announce, args=(app, server, settings, demo, url), daemon=True).start()
    server.run()
