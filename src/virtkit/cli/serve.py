"""``virtkit serve``: the REST API (and the web UI) on uvicorn."""

from __future__ import annotations

import logging
import sys

import click

from virtkit.cli.state import State, pass_state

log = logging.getLogger("virtkit.api")


@click.command()
@click.option("--listen", help="Address to bind (default 127.0.0.1; api_listen).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default 8470; api_port).")
@click.option("--cert", type=click.Path(exists=True, dir_okay=False), help="TLS certificate (PEM).")
@click.option("--key", type=click.Path(exists=True, dir_okay=False), help="TLS private key (PEM).")
@click.option("--root-path", default="", help="The sub-path a reverse proxy serves it under.")
@pass_state
def serve(
    state: State,
    listen: str | None,
    port: int | None,
    cert: str | None,
    key: str | None,
    root_path: str,
) -> None:
    """Run the REST API and the web UI (https with --cert/--key), until Ctrl+C or SIGTERM."""
    if bool(cert) != bool(key):
        raise click.UsageError("--cert and --key go together")
    try:
        import uvicorn

        from virtkit.api.app import create_app
    except ImportError as exc:
        raise click.ClickException(
            f"the API needs the 'api' extra ({exc.name} is missing): pip install 'virtkit[api]'"
        ) from None
    settings = state.client.settings
    host = listen or settings.api_listen
    bind_port = port or settings.api_port
    app = create_app(settings, client=state.client)
    scheme = "https" if cert else "http"
    shown = f"[{host}]" if ":" in host else host
    click.echo(
        f"virtkit API on {scheme}://{shown}:{bind_port}{root_path}/ (libvirt {settings.uri})"
    )
    sys.stdout.flush()
    config = uvicorn.Config(
        app,
        host=host,
        port=bind_port,
        ssl_certfile=cert,
        ssl_keyfile=key,
        root_path=root_path,
        log_config=None,  # virtkit's own logging (plain, or JSON with --log-json)
        access_log=False,
        proxy_headers=True,
        ws="websockets",
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run()
