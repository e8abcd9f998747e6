"""The REST API: ``create_app(settings)`` builds the FastAPI application that ``virtkit serve``
runs. Routes are thin (parse, call the same service the CLI calls, render); long work is a task.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from virtkit import web
from virtkit._version import __version__
from virtkit.actionlog import host_name
from virtkit.api import errors
from virtkit.api.accesslog import AccessLog
from virtkit.api.context import ApiContext
from virtkit.services.eventhub import EventHub
from virtkit.services.tasks import TaskRunner
from virtkit.settings import Settings

if TYPE_CHECKING:
    from virtkit.client import Client

log = logging.getLogger("virtkit.api")

API = "/api/v1"

DESCRIPTION = """virtkit's REST API: the same operations as the `virtkit` CLI, on the same
service functions. Authenticate with `Authorization: Bearer <token>` (`virtkit user token
create`) or a browser session (`POST /api/v1/login`; then send the `X-CSRF-Token` header with
every POST, PUT, PATCH and DELETE). Long work answers `202` with a task: follow it at
`/api/v1/tasks/{id}` or on the event stream `/api/v1/events`. Errors are always
`{"code", "message", "detail"}`; the codes are listed in docs/errors.md."""


class BodyLimit:
    """Refuse a request body over ``limit`` bytes with ``413``, by its Content-Length or, for a
    chunked body, as soon as it grows past the limit (before a route reads it)."""

    def __init__(self, app: ASGIApp, limit: int, exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        self.limit = limit
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = errors.error_response(
            413,
            "body_too_large",
            f"the request body is larger than the {self.limit} bytes this API accepts",
        )
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


class ServerTiming:
    """``Server-Timing: app;dur=<ms>`` on every answer: the time from the request's arrival to
    the response's start, what ``bench/api.py`` compares with the library's own time."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                took = (time.perf_counter() - start) * 1000
                headers = list(message.get("headers") or [])
                headers.append((b"server-timing", f"app;dur={took:.2f}".encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, timed)


def create_app(settings: Settings, *, client: Client | None = None) -> FastAPI:
    """The application; ``client`` lets tests pass one (e.g. with a fault-injecting host)."""
    if client is None:
        from virtkit.client import Client

        client = Client(settings=settings)
    ctx = ApiContext(
        client=client,
        settings=settings,
        tasks=TaskRunner(
            client.store, workers=settings.api_workers, host=host_name(client.host.uri)
        ),
        events=EventHub(),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx.start()
        web.start(app)
        # What start-up made (modules, the app, the schemas) lives as long as the service:
        # frozen, the cyclic collector stops walking it on every full pass, which otherwise
        # stalls whatever request is running (tens of ms at the tail of bench/api.py).
        gc.freeze()
        try:
            yield
        finally:
            web.stop(app)
            ctx.stop()

    app = FastAPI(
        title="virtkit",
        version=__version__,
        description=DESCRIPTION,
        openapi_url=f"{API}/openapi.json",
        docs_url=f"{API}/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    errors.install(app)

    from virtkit.api import security
    from virtkit.api.routes import (
        backups,
        consoles,
        devices,
        doctor,
        events,
        fleet,
        host,
        metrics,
        networks,
        snapshots,
        storage,
        tasks,
        vms,
    )

    security.install(app)
    for module in (
        vms,
        backups,
        devices,
        snapshots,
        consoles,
        storage,
        networks,
        host,
        fleet,
        doctor,
        tasks,
        events,
    ):
        app.include_router(module.router, prefix=API)
    app.include_router(metrics.router)  # where Prometheus looks: /metrics

    @app.get("/healthz", tags=["service"], include_in_schema=True)
    def healthz() -> dict[str, Any]:
        """Whether the service runs (no authentication): ``libvirt`` says if it is reachable."""
        try:
            ctx.client.connection.get()
            reachable = True
        except Exception:
            reachable = False
        return {"status": "ok", "version": __version__, "libvirt": reachable}

    web.install(app)  # the web UI: pages at /, static files under /static
    app.add_middleware(BodyLimit, limit=settings.api_max_body, exempt=(f"{API}/upload/",))
    app.add_middleware(ServerTiming)
    app.add_middleware(AccessLog)  # the last added is the outermost: it times everything
    _document_errors(app)
    return app


_EVERYWHERE = {
    "400": "The request is not readable (e.g. its body is not UTF-8 JSON).",
    "409": "The object exists already, is in use, or is in the wrong state for this.",
    "422": "Invalid input: the message names each problem.",
}
_WITH_PATH = {"404": "No such object."}
_WITH_BODY = {"413": "The request body is larger than the API accepts (api_max_body)."}


def _document_errors(app: FastAPI) -> None:
    """Every error answer in the OpenAPI document as it is on the wire: JSON ``ErrorBody``
    (FastAPI would give a text route's errors its text media type), plus the statuses any
    route can give: 400 for an unreadable request, 413 for a body over the limit."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        schema.setdefault("components", {}).setdefault("schemas", {})["ErrorBody"] = (
            errors.ErrorBody.model_json_schema()
        )
        for item in schema.get("paths", {}).values():
            for op in item.values():
                responses = op.setdefault("responses", {})
                extra = {**_EVERYWHERE, **(_WITH_BODY if "requestBody" in op else {})}
                if any(p.get("in") == "path" for p in op.get("parameters", [])):
                    extra.update(_WITH_PATH)
                for status, text in extra.items():
                    responses.setdefault(status, {"description": text})
                for status, response in responses.items():
                    if status.isdigit() and int(status) >= 400:
                        response["content"] = error
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
