"""Consoles in the browser: one-shot tickets, the VNC and serial websockets, SPICE ``.vv`` files.

A websocket carries no ``Authorization`` header and needs no cookie: its credential is a ticket
from ``POST /vms/{name}/console/ticket`` (an authenticated caller with the ``console``
permission), good for one connection to that VM's console of that kind within 30 s. Every URL
handed out is relative to the API root, so it works behind a reverse proxy under a sub-path.

Websocket close codes: 4403 (before the handshake, i.e. HTTP 403) for a missing, used, expired
or foreign ticket; after the handshake ``4000 + HTTP status`` of the error (4404 no such VM,
4409 the VM is not running, has no such console, or, for serial, another client holds it).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, WebSocket
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from virtkit.api.context import ApiContext, context
from virtkit.api.errors import COMMON, CONFLICT, NOT_FOUND
from virtkit.api.routes.vms import VmName
from virtkit.api.security import Principal, require
from virtkit.api.wsbridge import close_quietly, pump_command, pump_serial, pump_tcp
from virtkit.errors import InvalidState, VirtkitError
from virtkit.services.consoletickets import Ticket
from virtkit.specs.common import validate_name

log = logging.getLogger(__name__)

router = APIRouter(prefix="/vms", tags=["consoles"], responses=COMMON)

Ctx = Annotated[ApiContext, Depends(context)]
Console = Annotated[Principal, Depends(require("console"))]
ERR = {**NOT_FOUND, **CONFLICT}
VNC_PASSWORD_LIFETIME = 30.0
SPICE_PASSWORD_LIFETIME = 60.0
VV_TYPE = "application/x-virt-viewer"
BUSY_REASON = "the console is in use by another client; connect with force=true to take it over"


class TicketIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["vnc", "serial"] = Field(description="Which console the ticket opens.")


class TicketOut(BaseModel):
    ticket: str
    kind: str
    expires: float = Field(description="Seconds since the epoch; one use before then.")
    path: str = Field(description="The websocket path, relative to the API root (/api/v1/).")
    password: str | None = Field(
        None, description="vnc: the one-time VNC password (valid about 30 s) for the client."
    )


@router.post("/{name}/console/ticket", responses=ERR)
def console_ticket(ctx: Ctx, name: VmName, body: TicketIn, who: Console) -> TicketOut:
    """A one-shot ticket for the VM's VNC or serial console websocket. For ``vnc`` the VM's
    graphics also get a fresh one-time password (returned as ``password``); ``409 no_vnc``
    when the VM has no VNC graphics."""
    password = None
    if body.kind == "vnc":
        password = ctx.client.graphics.one_time_password(
            name, "vnc", VNC_PASSWORD_LIFETIME
        ).password
    else:
        ctx.client.consoles.check(name)
    ticket = ctx.tickets.issue(who.user, name, body.kind)
    path = f"vms/{name}/console/{body.kind}?ticket={ticket.secret}"
    return TicketOut(
        ticket=ticket.secret, kind=body.kind, expires=ticket.expires, path=path, password=password
    )


@router.get(
    "/{name}/console/spice.vv",
    response_class=Response,
    responses={**ERR, 200: {"content": {VV_TYPE: {}}, "description": "A remote-viewer file."}},
)
def spice_file(ctx: Ctx, name: VmName, who: Console) -> Response:
    """A remote-viewer (virt-viewer) file for the VM's SPICE graphics, with a one-time password
    valid for about 60 s; ``409 no_spice`` when the VM has no SPICE graphics."""
    access = ctx.client.graphics.one_time_password(name, "spice", SPICE_PASSWORD_LIFETIME)
    lines = [
        "[virt-viewer]",
        "type=spice",
        f"host={access.host}",
        f"port={access.port}",
        f"password={access.password}",
        "delete-this-file=1",
        f"title={name} (virtkit)",
    ]
    ctx.client.audit.record(who.user, "GET console/spice.vv", name, "issued")
    return Response(
        "\n".join(lines) + "\n",
        media_type=VV_TYPE,
        headers={
            "Content-Disposition": f'attachment; filename="{name}.vv"',
            "Cache-Control": "no-store",
        },
    )


# -- websockets --------------------------------------------------------------------------------


def _ws_ctx(ws: WebSocket) -> ApiContext:
    ctx: ApiContext = ws.app.state.ctx
    return ctx


async def _admit(ws: WebSocket, name: str, kind: str, ticket: str | None) -> Ticket | None:
    """The redeemed ticket, or ``None`` after refusing the handshake (HTTP 403)."""
    try:
        validate_name(name)
        return _ws_ctx(ws).tickets.redeem(ticket, name, kind)
    except VirtkitError as exc:
        log.info("console websocket for %s refused: %s", name, exc)
        await ws.close(4403, exc.code)
        return None


async def _accept(ws: WebSocket) -> None:
    wanted = ws.scope.get("subprotocols") or []
    await ws.accept(subprotocol="binary" if "binary" in wanted else None)


async def _fail(ws: WebSocket, ticket: Ticket, exc: VirtkitError) -> None:
    """After the handshake: audit the error's code, close with 4000 + its HTTP status."""
    await _audit(ws, ticket, exc.code)
    code = 4409 if exc.code == "console_busy" else 4000 + exc.http_status
    reason = BUSY_REASON if exc.code == "console_busy" else exc.message
    await close_quietly(ws, code, reason)


async def _audit(ws: WebSocket, ticket: Ticket, result: str = "opened") -> None:
    client = ws.client
    await run_in_threadpool(
        _ws_ctx(ws).client.audit.record,
        ticket.user,
        f"WS console/{ticket.kind}",
        ticket.vm,
        result,
        source=client.host if client else None,
    )


@router.websocket("/{name}/console/vnc")
async def vnc_socket(ws: WebSocket, name: str, ticket: str | None = None) -> None:
    """Websocket <-> the VM's VNC port (binary frames; subprotocol ``binary`` if asked)."""
    admitted = await _admit(ws, name, "vnc", ticket)
    if admitted is None:
        return
    await _accept(ws)
    try:
        access = await run_in_threadpool(_ws_ctx(ws).client.graphics.endpoint, name, "vnc")
        if access.tunnel:  # a host reached over SSH: the display through ssh -W, as libvirt goes
            await _audit(ws, admitted)
            await pump_command(ws, access.tunnel, f"the VNC server of VM {name!r}")
            return
        try:
            reader, writer = await asyncio.open_connection(access.host, access.port)
        except OSError as exc:
            raise InvalidState(
                f"cannot reach the VNC server of VM {name!r} at {access.host}:{access.port}: "
                f"{exc.strerror or exc}",
                code="vnc_unreachable",
            ) from None
    except VirtkitError as exc:
        await _fail(ws, admitted, exc)
        return
    await _audit(ws, admitted)
    await pump_tcp(ws, reader, writer)


@router.websocket("/{name}/console/serial")
async def serial_socket(
    ws: WebSocket,
    name: str,
    ticket: str | None = None,
    force: Annotated[bool, Query(description="Take the console from another client.")] = False,
) -> None:
    """Websocket <-> the VM's serial console through libvirt (works for remote hosts too)."""
    admitted = await _admit(ws, name, "serial", ticket)
    if admitted is None:
        return
    await _accept(ws)
    try:
        stream = await run_in_threadpool(_ws_ctx(ws).client.consoles.open, name, force=force)
    except VirtkitError as exc:
        await _fail(ws, admitted, exc)
        return
    await _audit(ws, admitted)
    await pump_serial(ws, stream)
