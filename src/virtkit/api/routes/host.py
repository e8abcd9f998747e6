"""``/api/v1/host``: facts about the libvirt host (KVM verdict, CPU, memory, NUMA, hugepages,
the /dev/kvm fix) and KSM (status, settings, unmerge, estimate, history and its chart)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from virtkit.api.context import ApiContext, context
from virtkit.api.errors import COMMON, CONFLICT, NOT_FOUND
from virtkit.api.routes.vms import _Body
from virtkit.api.security import Principal, require
from virtkit.services.vmscope import check_owner, restricted, visible
from virtkit.specs.common import validate_name
from virtkit.specs.host import HostInfo, KvmFix
from virtkit.specs.ksm import KsmEstimate, KsmReport, KsmSamples
from virtkit.specs.units import parse_since
from virtkit.specs.vm import VMSummary

router = APIRouter(tags=["host"], responses=COMMON)

Ctx = Annotated[ApiContext, Depends(context)]
Reader = Annotated[Principal, Depends(require("host.read"))]
Writer = Annotated[Principal, Depends(require("host.write"))]
Since = Annotated[
    str | None,
    Query(description="Only samples newer than this: a duration such as 90s, 30m, 6h or 7d."),
]
VmNames = Annotated[
    list[str] | None, Query(description="A VM (repeatable: `vm=a&vm=b`).", max_length=256)
]
PLOT_TYPES = {"png": "image/png", "svg": "image/svg+xml"}
PLOT_CHUNK = 64 * 1024


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
    mine = await _own_vms(ctx, who)
    if mine is not None:
        names = {v.name for v in mine}
        report = report.model_copy(update={"vms": [v for v in report.vms if v.name in names]})
    return report


async def _own_vms(ctx: ApiContext, who: Principal) -> list[VMSummary] | None:
    """The VMs the caller sees under `api_vm_scope = own`; None when they see every VM."""
    if not restricted(who.role, ctx.settings.api_vm_scope):
        return None
    summaries = await run_in_threadpool(ctx.client.vms.list)
    return visible(summaries, who.user, who.role, "own")


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


@router.post("/host/ksm/unmerge", response_model=KsmReport, responses=CONFLICT)
def ksm_unmerge(ctx: Ctx, _: Writer) -> KsmReport:
    """Split every merged page back (run=2), wait for it (409 `ksm_busy` when pages are still
    merged after 60 s) and leave KSM stopped, as `virtkit ksm unmerge`; returns KSM's state
    then."""
    ctx.client.ksm.unmerge()
    return ctx.client.ksm.status()


@router.get("/host/ksm/estimate", response_model=KsmEstimate, responses={**NOT_FOUND, **CONFLICT})
async def ksm_estimate(ctx: Ctx, who: Reader, vm: VmNames = None) -> KsmEstimate:
    """Predict what KSM would merge across the running VMs (all, or those named), before it
    runs, as `virtkit ksm estimate`: their guest memory is hashed page by page (the service
    runs as root); nothing changes. It answers in the request: it reads memory at about 3 GiB/s
    (docs/benchmarks.md), seconds for a host's guests, one estimate at a time. With
    `api_vm_scope = own`, over the caller's own VMs (another's is a 404, as a missing one).
    409 `vm_shutoff` for a VM that does not run; 422 when numpy (`virtkit[estimate]`) is
    missing or a VM's QEMU process is not on this host."""
    client = ctx.client
    names = list(vm) if vm else None
    mine = await _own_vms(ctx, who)
    if mine is not None:
        if names is None:
            names = sorted(v.name for v in mine if v.state.is_active)
        else:
            owners = {v.name: v.owner for v in mine}
            for name in names:
                check_owner(validate_name(name), owners.get(name), who.user)
    return await run_in_threadpool(client.ksm.estimate, names)


async def _visible_names(ctx: ApiContext, who: Principal) -> set[str] | None:
    mine = await _own_vms(ctx, who)
    return None if mine is None else {v.name for v in mine}


@router.get("/host/ksm/history", response_model=KsmSamples)
async def ksm_history(ctx: Ctx, who: Reader, since: Since = None, vm: VmNames = None) -> KsmSamples:
    """The KSM samples `virtkit ksm tune` recorded (any policy; `observe` only records), as
    `virtkit ksm history`: the host's, newer than `since`, and those of the VMs named in `vm`
    (none without; with `api_vm_scope = own`, the caller's own only)."""
    start = parse_since(since)
    names = list(vm or [])
    mine = await _visible_names(ctx, who)
    if mine is not None:
        names = [n for n in names if n in mine]
    return await run_in_threadpool(ctx.client.ksm.samples, start, names)


@router.get(
    "/host/ksm/plot",
    response_class=StreamingResponse,
    responses={
        **NOT_FOUND,
        200: {
            "description": "The chart.",
            "content": {
                media: {"schema": {"type": "string", "format": "binary"}}
                for media in PLOT_TYPES.values()
            },
        },
    },
)
async def ksm_plot(
    ctx: Ctx,
    who: Reader,
    since: Since = None,
    kind: Annotated[Literal["png", "svg"], Query(alias="format")] = "png",
) -> StreamingResponse:
    """The chart of `virtkit ksm report --plot`: memory saved, pages sharing and ksmd CPU over
    time, for the host and each VM (with `api_vm_scope = own`, the caller's own), as PNG or
    SVG. 404 `ksm_history_empty` before any sample was recorded; 422 `missing_extra` without
    matplotlib (`virtkit[plots]`)."""
    start = parse_since(since)
    mine = await _visible_names(ctx, who)
    chart = await run_in_threadpool(_draw, ctx, start, mine, kind)
    size = os.fstat(chart.fileno()).st_size
    return StreamingResponse(
        _chunks(chart),
        media_type=PLOT_TYPES[kind],
        headers={
            "Content-Length": str(size),
            "Content-Disposition": f'inline; filename="ksm.{kind}"',
        },
    )


def _draw(ctx: ApiContext, since: float | None, vms: set[str] | None, kind: str) -> Any:
    """The chart drawn into a temporary file, opened and already unlinked: nothing is left
    behind, whether the client reads it all or goes away."""
    work = ctx.settings.cache_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="ksm-plot-", suffix=f".{kind}", dir=work)
    os.close(fd)
    try:
        ctx.client.ksm.plot(Path(name), since, vms)
        return open(name, "rb")  # closed by _chunks
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)


def _chunks(file: Any) -> Iterator[bytes]:
    with file:
        while chunk := file.read(PLOT_CHUNK):
            yield chunk


@router.post("/host/fix-kvm", response_model=KvmFix)
def fix_kvm(ctx: Ctx, _: Writer) -> KvmFix:
    """Give /dev/kvm `root:kvm 0660` (what Debian's udev rule sets) where no udev manages
    /dev, as `virtkit host fix-kvm`: `changed` says whether it did, `message` what it found.
    422 for a libvirt host that is not this machine."""
    return ctx.client.hosts.fix_kvm()
