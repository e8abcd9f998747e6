"""``/api/v1/hosts``: the hosts virtkit manages (as ``virtkit host add|list|show|remove|
maintenance``), placement (``vm create --dry-run`` across hosts), migration and evacuation as
tasks with progress (docs/hosts.md)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import Field

from virtkit.api.context import ApiContext, context
from virtkit.api.errors import COMMON, CONFLICT, NOT_FOUND
from virtkit.api.routes.vms import VmName, _Body
from virtkit.api.security import Principal, require
from virtkit.api.tasking import accepted
from virtkit.specs.fleet import (
    EvacuationReport,
    FleetHost,
    HostStatus,
    MigrateOptions,
    MigrationResult,
    Placement,
)
from virtkit.specs.tasks import TaskView

router = APIRouter(tags=["hosts"], responses=COMMON)

Ctx = Annotated[ApiContext, Depends(context)]
ERR = {**NOT_FOUND, **CONFLICT}
Timeout = Annotated[float, Query(ge=0.1, le=60, description="Seconds for all hosts together.")]


class HostBody(_Body):
    name: str = Field(description="The host's name in virtkit.")
    uri: str = Field(description="libvirt URI: qemu+ssh://root@kvm1/system, qemu+tls://...")
    tags: list[str] = Field(default_factory=list, max_length=64)
    migration_uri: str | None = Field(None, description="How other hosts reach it, if not uri.")
    check: bool = Field(True, description="Connect first; store nothing if it cannot.")


class MaintenanceBody(_Body):
    on: bool
    reason: str | None = Field(None, max_length=200)


class PlacementBody(_Body):
    memory: int = Field(ge=16 << 20, le=1 << 50, description="Bytes.")
    vcpus: int = Field(1, ge=1, le=4096)
    tags: list[str] = Field(default_factory=list, max_length=64)


class MigrateBody(MigrateOptions):
    to: str = Field(description="The registered host to move it to.")
    source: str | None = Field(None, description="The host it is on (found when not given).")


class EvacuateBody(_Body):
    parallel: int = Field(2, ge=1, le=16)
    copy_storage: bool = False
    auto: bool = False
    unsafe: bool = False
    dry_run: bool = False


def _progress(task: Any) -> Any:
    def report(phase: str, done: int, total: int | None, _detail: dict[str, object]) -> None:
        task.progress(phase=phase, done_bytes=done, total_bytes=total)

    return report


@router.get("/hosts", response_model=list[HostStatus])
def list_hosts(
    ctx: Ctx, _: Annotated[Principal, Depends(require("host.read"))], timeout: Timeout = 10.0
) -> list[HostStatus]:
    """Every registered host now, looked at together (each within `timeout`)."""
    return ctx.client.fleet.status(timeout=timeout)


@router.post("/hosts", status_code=201, response_model=HostStatus, responses=ERR)
def add_host(
    ctx: Ctx, body: HostBody, _: Annotated[Principal, Depends(require("host.write"))]
) -> HostStatus:
    """Register a host (it must answer first unless `check` is false)."""
    return ctx.client.fleet.add(body.name, body.uri, tags=body.tags, check=body.check,
                                probe=False, migration_uri=body.migration_uri)  # fmt: skip


@router.get("/hosts/{host}", response_model=HostStatus, responses=NOT_FOUND)
def get_host(
    ctx: Ctx, host: str, _: Annotated[Principal, Depends(require("host.read"))],
    timeout: Timeout = 10.0,
) -> HostStatus:  # fmt: skip
    (status,) = ctx.client.fleet.status([host], timeout=timeout)
    return status


@router.delete("/hosts/{host}", response_model=FleetHost, responses=NOT_FOUND)
def remove_host(
    ctx: Ctx, host: str, _: Annotated[Principal, Depends(require("host.write"))]
) -> FleetHost:
    """Stop managing a host; nothing on it changes."""
    return ctx.client.fleet.remove(host)


@router.put("/hosts/{host}/maintenance", response_model=FleetHost, responses=NOT_FOUND)
def set_maintenance(
    ctx: Ctx, host: str, body: MaintenanceBody,
    _: Annotated[Principal, Depends(require("host.write"))],
) -> FleetHost:  # fmt: skip
    return ctx.client.fleet.set_maintenance(host, body.on, body.reason)


@router.post("/placement", response_model=Placement)
def placement(
    ctx: Ctx, body: PlacementBody, _: Annotated[Principal, Depends(require("vm.read"))]
) -> Placement:
    """Where a new VM of this size and these tags would go, and every host's reasons."""
    return ctx.client.fleet.place(body.memory, body.vcpus, body.tags)


@router.post("/vms/{name}/migrate", status_code=202, response_model=TaskView, responses=ERR)
def migrate_vm(
    ctx: Ctx, name: VmName, body: MigrateBody, request: Request, response: Response,
    who: Annotated[Principal, Depends(require("host.write"))],
) -> TaskView:  # fmt: skip
    """Move a VM to another registered host: a task with progress (data sent of the total)
    whose result is the migration's (`MigrationResult`). Every check runs before anything
    moves; a failure or a service stop leaves the VM on its host."""
    fleet = ctx.client.fleet
    source = body.source or fleet.find_vm(name)
    fleet.get(body.to)  # 404 now, not in the task
    opts = MigrateOptions(**body.model_dump(exclude={"to", "source"}))

    def work(task: Any) -> MigrationResult:
        task.say(f"migrating {name}: {source} -> {body.to}")
        with fleet.migration(source, body.to) as service:
            return service.migrate(name, opts, progress=_progress(task), cancel=task.stopping)

    return accepted(request, response, ctx.tasks.submit("vm.migrate", name, who.user, work))


@router.post("/hosts/{host}/evacuate", status_code=202, response_model=TaskView, responses=ERR)
def evacuate_host(
    ctx: Ctx, host: str, body: EvacuateBody, request: Request, response: Response,
    who: Annotated[Principal, Depends(require("host.write"))],
) -> TaskView:  # fmt: skip
    """Maintenance on, then every VM off the host (a task; its result an `EvacuationReport`)."""
    fleet = ctx.client.fleet
    fleet.get(host)
    opts = MigrateOptions(copy_storage=body.copy_storage, auto=body.auto, unsafe=body.unsafe)

    def work(task: Any) -> EvacuationReport:
        task.say(f"evacuating {host}")

        def said(item: Any) -> None:
            task.say(f"{item.vm}: {item.detail}")

        return fleet.evacuate(host, opts, parallel=body.parallel, dry_run=body.dry_run,
                              report=said)  # fmt: skip

    return accepted(request, response, ctx.tasks.submit("host.evacuate", host, who.user, work))
