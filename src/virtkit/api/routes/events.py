"""``/api/v1/events``: a server-sent-events stream of VM lifecycle events and task changes, so
that the web UI never polls."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from virtkit.api.context import ApiContext, context
from virtkit.api.errors import COMMON
from virtkit.api.security import Principal, require
from virtkit.errors import VirtkitError
from virtkit.services.vmscope import restricted

router = APIRouter(tags=["events"], responses=COMMON)

_KEEPALIVE = 15.0  # seconds: a comment line keeps proxies from closing an idle stream
_POLL = 0.25


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "The event stream."}},
)
async def events(
    request: Request,
    ctx: Annotated[ApiContext, Depends(context)],
    who: Annotated[Principal, Depends(require("event.read"))],
    kinds: Annotated[
        str, Query(pattern=r"^(vm|task)(,(vm|task))?$", description="vm, task or both.")
    ] = "vm,task",
    timeout: Annotated[
        float | None, Query(gt=0, le=86400, description="Close the stream after this long.")
    ] = None,
) -> StreamingResponse:
    """Each event is ``event: vm`` (``{"vm", "uuid", "event", "detail", "kind", "detail_name",
    "host", "data"}``: a lifecycle, metadata, job, block-job, migration or io-error event;
    ``detail`` is libvirt's number, ``detail_name`` its name) or ``event: task`` (the task as
    ``GET /tasks/{id}`` shows it), with an ``id``."""
    wanted = set(kinds.split(","))
    sub = ctx.events.subscribe()
    own_only = restricted(who.role, ctx.settings.api_vm_scope)

    def theirs(kind: str, data: dict[str, Any]) -> bool:
        """With ``api_vm_scope = own``: an operator hears of their own tasks and VMs only."""
        if kind == "task":
            return bool(data.get("user") == who.user)
        try:
            return ctx.client.vms.owner(str(data.get("vm", ""))) == who.user
        except VirtkitError:  # gone already (undefined): it was not theirs to see go
            return False

    async def stream() -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        started = idle = loop.time()
        try:
            yield "retry: 2000\n\n"
            while timeout is None or loop.time() - started < timeout:
                if await request.is_disconnected():
                    return
                event = await asyncio.to_thread(sub.get, _POLL)
                if event is None:
                    if loop.time() - idle >= _KEEPALIVE:
                        idle = loop.time()
                        yield ": keepalive\n\n"
                    continue
                if event.kind in wanted:
                    if own_only and not await asyncio.to_thread(theirs, event.kind, event.data):
                        continue
                    idle = loop.time()
                    yield f"id: {event.id}\nevent: {event.kind}\ndata: {json.dumps(event.data)}\n\n"
        finally:
            sub.close()

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)
