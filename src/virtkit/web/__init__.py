"""virtkit's web UI, served by ``virtkit serve`` next to the API: Jinja2 pages, htmx, the
event stream, and noVNC/xterm.js consoles (npm assets in ``settings.ui_assets``)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from virtkit.web.pages import KsmSamples, router
from virtkit.web.render import HERE, LoginFirst, login_redirect

VENDOR_MARKER = "node_modules/htmx.org/dist/htmx.min.js"


def install(app: FastAPI) -> None:
    """The pages, their static files (``static/app``: virtkit's own; ``static/vendor``: npm's),
    and the login redirect. Static files answer without a session: they hold no data."""
    ctx = app.state.ctx
    assets = ctx.settings.ui_assets
    app.state.ui_assets_ok = (assets / VENDOR_MARKER).is_file()
    app.mount("/static/app", StaticFiles(directory=HERE / "static"), name="ui-app")
    app.mount(
        "/static/vendor",
        StaticFiles(directory=assets / "node_modules", check_dir=False),
        name="ui-vendor",
    )
    app.include_router(router)

    def read_saved() -> int | None:
        saved: int | None = ctx.client.ksm.status().saved
        return saved

    app.state.ksm_samples = KsmSamples(read_saved)

    @app.exception_handler(LoginFirst)
    async def login_first(request: Request, exc: LoginFirst) -> Response:
        return login_redirect(request)


def start(app: FastAPI) -> None:
    app.state.ksm_samples.start()


def stop(app: FastAPI) -> None:
    app.state.ksm_samples.stop()


__all__ = ["install", "start", "stop"]
