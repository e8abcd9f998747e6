"""``/metrics``: the exporter's Prometheus metrics of this service's host, from the service
itself (a bearer token with ``host.read``, a viewer's, unless ``metrics_public``)."""

from __future__ import annotations

import gzip

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from virtkit.api.context import ApiContext
from virtkit.api.errors import COMMON
from virtkit.api.security import principal
from virtkit.errors import PermissionDenied
from virtkit.metrics.http import CONTENT_TYPE
from virtkit.metrics.prometheus import VirtkitCollector
from virtkit.services.roles import allowed
from virtkit.services.tasks import count_by_state

router = APIRouter(tags=["service"], responses=COMMON)


def collector(ctx: ApiContext) -> VirtkitCollector:
    """The service's one collector (made on first use: a scrape keeps what the next reuses)."""
    if ctx.metrics is None:
        store = ctx.client.store
        ctx.metrics = VirtkitCollector([ctx.client.metrics], tasks=lambda: count_by_state(store))
    made: VirtkitCollector = ctx.metrics
    return made


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                     "description": "Prometheus text format 0.0.4."}},
)  # fmt: skip
async def metrics(request: Request) -> Response:
    """Prometheus metrics of every VM, the host, KSM and virtkit's tasks (docs/monitoring.md).
    Needs a token or session with ``host.read`` unless the setting ``metrics_public`` is on."""
    ctx: ApiContext = request.app.state.ctx
    if not ctx.settings.metrics_public:
        who = await principal(request)
        if not allowed(who.role, "host.read"):
            raise PermissionDenied(
                f"role {who.role!r} of user {who.user!r} lacks the permission 'host.read'",
                code="forbidden",
            )
    body = await run_in_threadpool(collector(ctx).render)
    if "gzip" in request.headers.get("accept-encoding", ""):
        return Response(
            gzip.compress(body, compresslevel=1),
            media_type=CONTENT_TYPE,
            headers={"Content-Encoding": "gzip"},
        )
    return Response(body, media_type=CONTENT_TYPE)
