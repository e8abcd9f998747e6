"""A VM's disks, CD-ROM media and NICs (hot-plugged into a running VM), and its addresses."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from virtkit.api.context import ApiContext, context
from virtkit.api.errors import COMMON, CONFLICT, NOT_FOUND
from virtkit.api.routes.vms import VmName, _Body, guard_host_paths
from virtkit.api.security import Principal, require
from virtkit.services.hostpaths import NamedImage
from virtkit.specs.network import GuestAddress, MacvtapMode, NicInfo, NicModel
from virtkit.specs.vm import DiskView

router = APIRouter(prefix="/vms/{name}", tags=["devices"], responses=COMMON)

Ctx = Annotated[ApiContext, Depends(context)]
Reader = Annotated[Principal, Depends(require("vm.read"))]
Changer = Annotated[Principal, Depends(require("vm.change"))]
ERR = {**NOT_FOUND, **CONFLICT}


class DiskBody(_Body):
    path: str | None = None
    size: int | str | None = None
    bus: str = "virtio"
    readonly: bool = False


class MediaBody(_Body):
    iso: str | None = None
    target: str | None = None


class NicBody(_Body):
    network: str | None = None
    bridge: str | None = None
    direct: str | None = None
    mode: MacvtapMode = "bridge"
    mac: str | None = None
    model: NicModel = "virtio"


class LinkBody(_Body):
    up: bool


@router.get("/disks", response_model=list[DiskView], responses=NOT_FOUND)
def list_disks(ctx: Ctx, name: VmName, _: Reader) -> list[DiskView]:
    return ctx.client.disks.list(name)


@router.post("/disks", status_code=201, response_model=DiskView, responses=ERR)
def attach_disk(ctx: Ctx, name: VmName, body: DiskBody, who: Changer) -> DiskView:
    """Attach an existing image (``path``) or a new blank qcow2 volume (``size``: bytes, or
    text such as 10G); hot-plugged into a running VM. A ``path`` outside the active storage
    pools needs the permission `host.path`; so does a qcow2 image whose backing chain or data
    file leaves them."""
    formats: dict[str, str] = {}
    if body.path is not None:
        formats = guard_host_paths(
            ctx, who, [NamedImage("path", body.path, readonly=body.readonly)]
        )
    return ctx.client.disks.attach(
        name,
        path=body.path,
        size=body.size,
        bus=body.bus,
        readonly=body.readonly,
        format=formats.get("path"),
    )


@router.delete("/disks/{target}", response_model=list[str], responses=ERR)
def detach_disk(
    ctx: Ctx,
    name: VmName,
    target: str,
    _: Changer,
    remove_storage: Annotated[
        bool, Query(description="Also delete the volume, if virtkit made it for this VM.")
    ] = False,
) -> list[str]:
    """Detach a disk (``vdb``); returns the storage removed."""
    return ctx.client.disks.detach(name, target, remove_storage=remove_storage)


@router.post("/cdrom", responses=ERR)
def change_media(ctx: Ctx, name: VmName, body: MediaBody, who: Changer) -> dict[str, str]:
    """Insert an ISO into the CD-ROM (``iso``), or eject it (no ``iso``). An ``iso`` outside
    the active storage pools needs the permission `host.path`."""
    if body.iso is not None:
        guard_host_paths(ctx, who, [("iso", body.iso)])
    return {"target": ctx.client.disks.change_media(name, body.iso, body.target)}


@router.get("/nics", response_model=list[NicInfo], responses=NOT_FOUND)
def list_nics(ctx: Ctx, name: VmName, _: Reader) -> list[NicInfo]:
    return ctx.client.nics.list(name)


@router.post("/nics", status_code=201, response_model=NicInfo, responses=ERR)
def add_nic(ctx: Ctx, name: VmName, body: NicBody, _: Changer) -> NicInfo:
    """A NIC on a virtual network, a host bridge or a host interface (macvtap)."""
    return ctx.client.nics.add(
        name,
        network=body.network,
        bridge=body.bridge,
        direct=body.direct,
        mode=body.mode,
        mac=body.mac,
        model=body.model,
    )


@router.delete("/nics/{mac}", status_code=204, responses=ERR)
def remove_nic(ctx: Ctx, name: VmName, mac: str, _: Changer) -> None:
    ctx.client.nics.remove(name, mac)


@router.patch("/nics/{mac}", response_model=NicInfo, responses=ERR)
def set_link(ctx: Ctx, name: VmName, mac: str, body: LinkBody, _: Changer) -> NicInfo:
    """Link up or down (the cable plugged in or not)."""
    return ctx.client.nics.set_link(name, mac, body.up)


@router.get("/addresses", response_model=list[GuestAddress], responses=NOT_FOUND)
def addresses(ctx: Ctx, name: VmName, _: Reader) -> list[GuestAddress]:
    """The guest's IP addresses (DHCP leases, the guest agent, the neighbour table)."""
    return ctx.client.nics.ip(name)
