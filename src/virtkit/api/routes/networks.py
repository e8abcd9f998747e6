"""``/api/v1/networks``: virtual networks, DHCP reservations, DNS entries, leases."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from virtkit.api.context import ApiContext, context
from virtkit.api.errors import COMMON, CONFLICT, NOT_FOUND
from virtkit.api.routes.actions import action_routes
from virtkit.api.routes.vms import _Body
from virtkit.api.security import Principal, require
from virtkit.specs.common import validate_name
from virtkit.specs.network import DnsEntry, Lease, NetworkInfo, NetworkSpec, Reservation

router = APIRouter(prefix="/networks", tags=["networks"], responses=COMMON)

Ctx = Annotated[ApiContext, Depends(context)]
Reader = Annotated[Principal, Depends(require("network.read"))]
Writer = Annotated[Principal, Depends(require("network.write"))]
ERR = {**NOT_FOUND, **CONFLICT}


async def _network(name: str) -> str:
    return validate_name(name, "network")


NetName = Annotated[str, Depends(_network)]


class ReservationBody(_Body):
    mac: str
    ip: str
    hostname: str | None = None


class DnsBody(_Body):
    ip: str
    hostnames: list[str]


@router.get("", response_model=list[NetworkInfo])
def list_networks(ctx: Ctx, _: Reader) -> list[NetworkInfo]:
    return ctx.client.networks.list()


@router.get("/{name}", response_model=NetworkInfo, responses=NOT_FOUND)
def get_network(ctx: Ctx, name: NetName, _: Reader) -> NetworkInfo:
    return ctx.client.networks.get(name)


@router.post("", status_code=201, response_model=NetworkInfo, responses=ERR)
def create_network(ctx: Ctx, spec: NetworkSpec, _: Writer) -> NetworkInfo:
    """Create (and by default start and autostart) a network: nat, route, isolated, open,
    bridge or macvtap."""
    return ctx.client.networks.create(spec)


action_routes(
    router,
    path="/{name}",
    ident=("name", NetName),
    caller=Writer,
    service=lambda ctx: ctx.client.networks,
    read="get",
    model=NetworkInfo,
    kind="network",
    actions={
        "start": ("start", "Start a network."),
        "stop": ("stop", "Stop a network (its VMs lose connectivity)."),
    },
    responses=ERR,
)


@router.patch("/{name}", response_model=NetworkInfo, responses=ERR)
def change_network(
    ctx: Ctx, name: NetName, _: Writer, autostart: Annotated[bool, Query()]
) -> NetworkInfo:
    ctx.client.networks.set_autostart(name, autostart)
    return ctx.client.networks.get(name)


@router.delete("/{name}", status_code=204, responses=ERR)
def delete_network(ctx: Ctx, name: NetName, _: Writer) -> Response:
    """Stop and remove a network; refused while VMs use it (the error names them)."""
    ctx.client.networks.delete(name)
    return Response(status_code=204)


@router.get("/{name}/leases", response_model=list[Lease], responses=NOT_FOUND)
def leases(ctx: Ctx, name: NetName, _: Reader) -> list[Lease]:
    return ctx.client.networks.leases(name)


@router.post("/{name}/reservations", status_code=201, response_model=Reservation, responses=ERR)
def reserve(ctx: Ctx, name: NetName, body: ReservationBody, _: Writer) -> Reservation:
    """A fixed DHCP address for a MAC address."""
    return ctx.client.networks.reserve(name, body.mac, body.ip, body.hostname)


@router.delete("/{name}/reservations/{mac}", response_model=Reservation, responses=ERR)
def unreserve(ctx: Ctx, name: NetName, mac: str, _: Writer) -> Reservation:
    return ctx.client.networks.unreserve(name, mac)


@router.post("/{name}/dns", status_code=201, response_model=DnsEntry, responses=ERR)
def dns_add(ctx: Ctx, name: NetName, body: DnsBody, _: Writer) -> DnsEntry:
    return ctx.client.networks.dns_add(name, body.ip, body.hostnames)


@router.delete("/{name}/dns/{ip}", status_code=204, responses=ERR)
def dns_remove(ctx: Ctx, name: NetName, ip: str, _: Writer) -> Response:
    ctx.client.networks.dns_remove(name, ip)
    return Response(status_code=204)
