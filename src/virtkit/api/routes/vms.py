"""``/api/v1/vms``: list, read, create (a task), clone (a task), power, wait for the guest (a
task), change, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from virtkit.api.context import ApiContext, context
from virtkit.api.errors import COMMON, CONFLICT, NOT_FOUND
from virtkit.api.routes.actions import action_routes
from virtkit.api.security import Caller, Principal, require
from virtkit.api.tasking import accepted
from virtkit.errors import AlreadyExists, NotFound, PermissionDenied
from virtkit.services.hostpaths import (
    Named,
    check_host_paths,
    vm_spec_paths,
    with_disk_formats,
)
from virtkit.services.roles import allowed
from virtkit.services.vmscope import check_owner, restricted, visible
from virtkit.specs.cloudinit import SeedView
from virtkit.specs.common import validate_name
from virtkit.specs.tasks import TaskView
from virtkit.specs.vm import DeleteResult, SetResult, VMInfo, VMSpec, VMSummary, WaitFor

router = APIRouter(prefix="/vms", tags=["vms"], responses=COMMON)

Ctx = Annotated[ApiContext, Depends(context)]
ERR = {**NOT_FOUND, **CONFLICT}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CloneBody(_Body):
    name: str = Field(description="The new VM's name.")
    linked: bool = Field(False, description="qcow2 overlays on the source's disks (fast).")


class ShutdownBody(_Body):
    timeout: float = Field(60.0, gt=0, le=3600, description="Seconds to wait for the guest.")
    force: bool = Field(False, description="Power off when the guest has not stopped by then.")


class SetBody(_Body):
    vcpus: int | None = Field(None, description="vCPUs (live where the maximum allows).")
    max_vcpus: int | None = Field(None, description="vCPU maximum (from the next start).")
    memory: int | str | None = Field(
        None, description="Memory: bytes, or text such as 2G (a bare number in text is MiB)."
    )
    autostart: bool | None = Field(None, description="Start with the host.")
    owner: str | None = Field(
        None, description="Give the VM to this API user ('' for nobody); admins only."
    )


class StartBody(_Body):
    paused: bool = False


class WaitBody(_Body):
    what: WaitFor = Field(
        "ssh",
        alias="for",
        description="boot: a login prompt on the serial console; cloud-init: it finished; "
        "ssh: the guest's SSH server answers.",
    )
    timeout: float = Field(300.0, gt=0, le=3600, description="Seconds to wait at most.")


async def _name(name: str, ctx: Ctx, who: Caller) -> str:
    """The VM named in the path, checked: a valid name, and one the caller may see (with
    ``api_vm_scope = own``, a VM of someone else is a 404, as if it did not exist)."""
    name = validate_name(name)
    if restricted(who.role, ctx.settings.api_vm_scope):
        check_owner(name, await run_in_threadpool(ctx.client.vms.owner, name), who.user)
    return name


VmName = Annotated[str, Depends(_name)]


def _refuse_existing(ctx: ApiContext, name: str) -> None:
    """409 at once (the task would fail the same way, later)."""
    try:
        ctx.client.vms.state(name)
    except NotFound:
        return
    raise AlreadyExists(f"a VM named {name!r} exists already", code="vm_exists")


def guard_host_paths(ctx: ApiContext, who: Principal, named: list[Named]) -> dict[str, str]:
    """403 ``host_path_forbidden`` now, before anything is made, for a host path the caller
    may not name (the rule: :mod:`virtkit.services.hostpaths`). Returns the format each named
    disk image must be opened as, by field (empty for a caller with ``host.path``)."""
    client = ctx.client
    return check_host_paths(
        named,
        role=who.role,
        local=client.host.is_local,
        pools=client.pools.pool_targets,
        uses=client.pools.disk_uses,
    )


@router.get("", response_model=list[VMSummary])
async def list_vms(
    ctx: Ctx,
    who: Annotated[Principal, Depends(require("vm.read"))],
    refresh: Annotated[bool, Query(description="Read tags from libvirt afresh.")] = False,
) -> list[VMSummary]:
    """Every VM of the host (with `api_vm_scope = own`, an operator's own): state, vCPUs,
    memory, uptime, autostart, tags, owner (bulk calls)."""
    vms = await run_in_threadpool(ctx.client.vms.list, refresh=refresh)
    return visible(vms, who.user, who.role, ctx.settings.api_vm_scope)


def owner_for(ctx: ApiContext, who: Principal, asked: str | None) -> str:
    """Who a VM the caller makes belongs to: themselves, or (admins) the user they name."""
    if asked is None or asked == who.user:
        return who.user
    if not allowed(who.role, "user.admin"):
        raise PermissionDenied(
            f"only admins make VMs for another user (owner {asked!r})", code="forbidden"
        )
    ctx.client.users.get(asked)  # 404 for a user who does not exist
    return asked


@router.get("/{name}", response_model=VMInfo, responses=NOT_FOUND)
async def get_vm(
    ctx: Ctx, name: VmName, _: Annotated[Principal, Depends(require("vm.read"))]
) -> VMInfo:
    # The hot reads are ``async`` around one worker-thread call: a plain ``def`` route costs
    # FastAPI a second hop, to check the result against the model.
    return await run_in_threadpool(ctx.client.vms.get, name)


@router.get("/{name}/cloud-init", response_model=SeedView, responses=NOT_FOUND)
async def get_vm_cloud_init(
    ctx: Ctx, name: VmName, _: Annotated[Principal, Depends(require("vm.read"))]
) -> SeedView:
    """What the VM's cloud-init seed carries (`virtkit vm cloud-init`): its files as text,
    password hashes and private keys replaced by `(hidden)`. 404 `no_seed` without one."""
    return await run_in_threadpool(ctx.client.vms.cloud_init, name)


@router.get(
    "/{name}/xml",
    response_class=PlainTextResponse,
    responses={**NOT_FOUND, 200: {"content": {"application/xml": {}}}},
)
def get_vm_xml(
    ctx: Ctx,
    name: VmName,
    _: Annotated[Principal, Depends(require("vm.read"))],
    inactive: bool = False,
) -> PlainTextResponse:
    """The domain XML (the persistent definition with ``inactive``)."""
    return PlainTextResponse(
        ctx.client.vms.xml(name, inactive=inactive), media_type="application/xml"
    )


@router.post("", status_code=202, response_model=TaskView, responses=ERR)
def create_vm(
    ctx: Ctx,
    spec: VMSpec,
    request: Request,
    response: Response,
    who: Annotated[Principal, Depends(require("vm.create"))],
    start: Annotated[bool, Query(description="Start it once created.")] = False,
) -> TaskView:
    """Create a VM from a spec (the same as `virtkit vm create -f spec.yaml`): a task. On any
    failure nothing of it remains. Naming host paths (kernel, initrd, cdrom, a disk's path)
    outside the active storage pools needs the permission `host.path`; so does a qcow2 disk
    whose backing chain or data file leaves them."""
    client = ctx.client
    request.state.audit_target = spec.name
    spec = spec.model_copy(update={"owner": owner_for(ctx, who, spec.owner)})
    spec = with_disk_formats(spec, guard_host_paths(ctx, who, vm_spec_paths(spec)))
    _refuse_existing(ctx, spec.name)

    def work(task: Any) -> VMInfo:
        return client.vms.create(spec, start=start, progress=task.say)

    task = ctx.tasks.submit("vm.create", spec.name, who.user, work, recovery={"vm": spec.name})
    return accepted(request, response, task)


@router.post("/{name}/clone", status_code=202, response_model=TaskView, responses=ERR)
def clone_vm(
    ctx: Ctx,
    name: VmName,
    body: CloneBody,
    request: Request,
    response: Response,
    who: Annotated[Principal, Depends(require("vm.create"))],
) -> TaskView:
    """A new VM from a shut-off one (full copies, or linked overlays): a task."""
    new = validate_name(body.name)
    request.state.audit_target = f"{name} -> {new}"
    client = ctx.client
    client.vms.state(name)  # 404 now, not in the task
    _refuse_existing(ctx, new)

    def work(task: Any) -> VMInfo:
        task.say(f"cloning {name} to {new}" + (" (linked)" if body.linked else ""))
        return client.vms.clone(name, new, linked=body.linked, owner=who.user)

    task = ctx.tasks.submit("vm.clone", new, who.user, work, recovery={"vm": new})
    return accepted(request, response, task)


@router.post("/{name}/start", response_model=VMInfo, responses=ERR)
def start_vm(
    ctx: Ctx,
    name: VmName,
    _: Annotated[Principal, Depends(require("vm.power"))],
    body: StartBody | None = None,
) -> VMInfo:
    ctx.client.vms.start(name, paused=bool(body and body.paused))
    return ctx.client.vms.get(name)


@router.post("/{name}/shutdown", status_code=202, response_model=TaskView, responses=ERR)
def shutdown_vm(
    ctx: Ctx,
    name: VmName,
    request: Request,
    response: Response,
    who: Annotated[Principal, Depends(require("vm.power"))],
    body: ShutdownBody | None = None,
) -> TaskView:
    """Graceful shutdown (guest agent, else ACPI), waiting up to ``timeout``; with ``force``,
    power off after that: a task whose result says ``shutdown``, ``forced`` or ..."""
    want = body or ShutdownBody()
    client = ctx.client
    client.vms.state(name)  # 404 now

    def work(task: Any) -> dict[str, str]:
        task.say(f"asking {name} to shut down (up to {want.timeout:g} s)")
        how = client.vms.shutdown(name, timeout=want.timeout, force=want.force)
        return {"name": name, "result": how}

    task = ctx.tasks.submit("vm.shutdown", name, who.user, work)
    return accepted(request, response, task)


@router.post("/{name}/wait", status_code=202, response_model=TaskView, responses=ERR)
def wait_vm(
    ctx: Ctx,
    name: VmName,
    request: Request,
    response: Response,
    who: Annotated[Principal, Depends(require("vm.power"))],
    body: WaitBody | None = None,
) -> TaskView:
    """Wait until the VM has booted, finished cloud-init or answers SSH, as `virtkit vm wait`:
    a task whose result is `{"name", "for", "seconds"}` (the seconds waited); one that runs out
    of time fails with `wait_timeout`. A VM that does not exist (404) or does not run (409
    `vm_shutoff`) is refused at once."""
    want = body or WaitBody()
    access = ctx.client.access
    access.check_wait(name, want.what)  # 404 / 409 now

    def work(task: Any) -> dict[str, Any]:
        task.say(f"waiting for {want.what} of {name} (up to {want.timeout:g} s)")
        seconds = access.wait(name, want.what, want.timeout, stop=task.stopping)
        return {"name": name, "for": want.what, "seconds": round(seconds, 3)}

    task = ctx.tasks.submit("vm.wait", name, who.user, work)
    return accepted(request, response, task)


action_routes(
    router,
    path="/{name}",
    ident=("name", VmName),
    caller=Annotated[Principal, Depends(require("vm.power"))],
    service=lambda ctx: ctx.client.vms,
    read="get",
    model=VMInfo,
    kind="vm",
    actions={
        "stop": ("stop", "Power off at once (like pulling the plug)."),
        "reboot": ("reboot", "Ask the guest to reboot."),
        "reset": ("reset", "Reset at once (like the reset button)."),
        "pause": ("pause", "Pause the vCPUs (the VM keeps its memory)."),
        "resume": ("resume", "Resume a paused VM."),
    },
    responses=ERR,
)


@router.patch("/{name}", response_model=SetResult, responses=ERR)
def change_vm(
    ctx: Ctx,
    name: VmName,
    body: SetBody,
    who: Annotated[Principal, Depends(require("vm.change"))],
) -> SetResult:
    """Change vCPUs, their maximum, memory (persistently, live where libvirt can), autostart
    and (admins) the owner; every value is checked before any is changed."""
    vms = ctx.client.vms
    changes: list[str] = []
    if body.owner is not None:
        if not allowed(who.role, "user.admin"):
            raise PermissionDenied("only admins give a VM to another user", code="forbidden")
        if body.owner:
            ctx.client.users.get(body.owner)  # 404 for a user who does not exist
    if body.vcpus is not None or body.max_vcpus is not None or body.memory is not None:
        changed = vms.set(name, vcpus=body.vcpus, memory=body.memory, max_vcpus=body.max_vcpus)
        changes += changed.changes
    else:
        vms.state(name)  # 404 for an unknown VM
    if body.autostart is not None:
        vms.set_autostart(name, body.autostart)
        changes.append(f"autostart {'on' if body.autostart else 'off'}")
    if body.owner is not None:
        vms.set_owner(name, body.owner or None)
        changes.append(f"owner {body.owner or '(nobody)'}")
    return SetResult(name=name, changes=changes)


@router.get("/{name}/delete-preview", response_model=list[str], responses=NOT_FOUND)
def delete_preview(
    ctx: Ctx, name: VmName, _: Annotated[Principal, Depends(require("vm.read"))]
) -> list[str]:
    """What ``DELETE ?remove_storage=true`` would remove: the VM's own disks."""
    return ctx.client.vms.storage_to_remove(name)


@router.delete("/{name}", response_model=DeleteResult, responses=ERR)
def delete_vm(
    ctx: Ctx,
    name: VmName,
    _: Annotated[Principal, Depends(require("vm.delete"))],
    force: Annotated[bool, Query(description="Power a running VM off first.")] = False,
    remove_storage: Annotated[
        bool, Query(description="Also delete the disks virtkit made for it (see delete-preview).")
    ] = False,
) -> DeleteResult:
    """Undefine a VM; its own disks only with ``remove_storage``."""
    return ctx.client.vms.delete(name, force=force, remove_storage=remove_storage)


@router.get(
    "/{name}/console-log",
    response_class=PlainTextResponse,
    responses={**NOT_FOUND, 200: {"content": {"text/plain": {}}}},
)
def console_log(
    ctx: Ctx,
    name: VmName,
    _: Annotated[Principal, Depends(require("console"))],
    tail_bytes: Annotated[int | None, Query(ge=1, le=16 * 1024 * 1024)] = 65536,
) -> PlainTextResponse:
    """What the VM printed on its serial console (the end of its log)."""
    return PlainTextResponse(ctx.client.consoles.read_log(name, tail_bytes=tail_bytes))
