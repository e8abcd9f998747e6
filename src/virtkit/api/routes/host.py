"""``/api/v1/host``: facts about the libvirt host (KVM verdict, CPU, memory, NUMA, hugepages)
and KSM."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from virtkit.api.context import ApiContext, context
from virtkit.api.errors import COMMON, CONFLICT, NOT_FOUND
from virtkit.api.routes.vms import _Body
from virtkit.api.security import Principal, require
from virtkit.services.vmscope import restricted, visible
from virtkit.specs.common import validate_name
from virtkit.specs.host import HostInfo
from virtkit.specs.ksm import KsmReport

router = APIRouter(tags=["host"], responses=COMMON)

Ctx = Annotated[ApiContext, Depends(context)]


class KsmSettingsBody(_Body):
    run: bool | None = None
    pages_to_scan: int | None = None
    sleep_millisecs: int | None = None
    merge_across_nodes: bool | None = None
    use_zero_pages: bool | None = None


class KsmVmBody(_Body):
    merge: bool


@router.get("/host", response_model=HostInfo)
async def host_info(
    ctx: Ctx,
    _: Annotated[Principal, Depends(require("host.read"))],
    reprobe: Annotated[bool, Query(description="Decide the KVM verdict afresh (slow).")] = False,
) -> HostInfo:
    return await run_in_threadpool(ctx.client.hosts.info, refresh_kvm=reprobe)


@router.get("/host/ksm", response_model=KsmReport)
async def ksm_status(
    ctx: Ctx, who: Annotated[Principal, Depends(require("host.read"))]
) -> KsmReport:
    """KSM on this host: its mode, settings, memory saved in all and per VM (with
    `api_vm_scope = own`, per VM for the caller's own)."""
    report = await run_in_threadpool(ctx.client.ksm.status)
    if restricted(who.role, ctx.settings.api_vm_scope):
        summaries = await run_in_threadpool(ctx.client.vms.list)
        mine = {v.name for v in visible(summaries, who.user, who.role, "own")}
        report = report.model_copy(update={"vms": [v for v in report.vms if v.name in mine]})
    return report


@router.patch("/host/ksm", response_model=KsmReport, responses=CONFLICT)
def ksm_set(
    ctx: Ctx, body: KsmSettingsBody, _: Annotated[Principal, Depends(require("host.write"))]
) -> KsmReport:
    """Change KSM's settings (``run``: merge or stop merging)."""
    ksm = ctx.client.ksm
    values = body.model_dump(exclude_none=True)
    run = values.pop("run", None)
    if values:
        ksm.set({key: str(int(value)) for key, value in values.items()})
    if run is True:
        ksm.enable()
    elif run is False:
        ksm.disable()
    return ksm.status()


@router.post("/vms/{name}/ksm", responses={**NOT_FOUND, **CONFLICT})
def ksm_vm(
    ctx: Ctx,
    name: str,
    body: KsmVmBody,
    _: Annotated[Principal, Depends(require("vm.change"))],
) -> dict[str, str]:
    """Let KSM merge a VM's memory or not (from its next start)."""
    return {"name": name, "result": ctx.client.ksm.set_vm(validate_name(name), body.merge)}
