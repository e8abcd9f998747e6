"""The access log: one record per HTTP request once its response is sent, on the logger
``virtkit.api.access`` at INFO, with the fields ECS users expect of a web server (``http.*``,
``url.path``, ``user.name``, ``event.duration``; docs/monitoring.md). Every record logged while
a request is handled (a VM action's, say) carries its ``http.request.id``."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from virtkit.actionlog import log_context

log = logging.getLogger("virtkit.api.access")

API = "/api/v1"

# A caller's X-Request-ID is kept (to follow a request from the client into these logs) when
# it is a plain token; anything else gets a new id.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def _request_id(headers: dict[bytes, bytes]) -> str:
    given = headers.get(b"x-request-id", b"").decode("latin-1")
    return given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex[:16]


class AccessLog:
    """Plain ASGI (no BaseHTTPMiddleware): streaming responses pass through untouched; the
    outermost middleware, so the duration is the whole request's."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})  # the routes' request.state: who the caller was
        headers = dict(scope.get("headers") or [])
        request_id = _request_id(headers)
        start = time.monotonic_ns()
        status = 500  # unless the app answers: an exception escaped it
        sent = 0

        async def watch(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            with log_context(**{"http.request.id": request_id}):
                await self.app(scope, receive, watch)
        finally:
            self._record(scope, headers, request_id, status, sent, time.monotonic_ns() - start)

    def _record(
        self,
        scope: Scope,
        headers: dict[bytes, bytes],
        request_id: str,
        status: int,
        sent: int,
        took: int,
    ) -> None:
        state = scope.get("state") or {}
        who = state.get("principal")
        user = getattr(who, "user", None) or state.get("audit_user")
        client = scope.get("client")
        method = scope["method"]
        path = scope["path"]
        fields: dict[str, Any] = {
            "event.action": "http.request", "event.kind": "event",
            "event.category": ["web"], "event.type": ["access"],
            "event.outcome": "success" if status < 400 else "failure",
            "event.duration": took,
            "http.request.id": request_id, "http.request.method": method,
            "http.response.status_code": status, "http.response.body.bytes": sent,
            "http.version": scope.get("http_version"), "url.path": path,
        }  # fmt: skip
        if user:
            fields["user.name"] = str(user)[:100]
        if client:
            fields["client.ip"] = client[0]
        agent = headers.get(b"user-agent")
        if agent:
            fields["user_agent.original"] = agent.decode("latin-1")[:500]
        route = getattr(scope.get("route"), "path", None)
        if route:  # the template: what to count requests by (a router's, without its prefix)
            if path.startswith(API + "/") and not route.startswith(API + "/"):
                route = API + route
            fields["virtkit.route"] = route
        log.info(
            '%s %s "%s %s" %d %.1f ms', client[0] if client else "-", user or "-", method,
            path, status, took / 1e6, extra=fields,
        )  # fmt: skip
