"""``/api/v1/vms/{name}/backups`` and ``/api/v1/backup-schedules``: a VM's backup sets, a
backup and a restore as tasks with progress, verify, prune, and schedules. Sets live in the
setting ``backup_dir``: the API takes no directory (a host path) from its callers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from virtkit.api.context import ApiContext, context
from virtkit.api.errors import COMMON, CONFLICT, NOT_FOUND
from virtkit.api.routes.vms import VmName, _refuse_existing
from virtkit.api.security import Principal, require
from virtkit.api.tasking import accepted
from virtkit.errors import InvalidInput, PermissionDenied
from virtkit.services.roles import allowed
from virtkit.specs.backup import (
    BackupResult,
    BackupSet,
    PruneResult,
    RestoreResult,
    Retention,
    ScheduleSpec,
    ScheduleView,
    VerifyResult,
)
from virtkit.specs.common import validate_name
from virtkit.specs.tasks import TaskView

router = APIRouter(tags=["backups"], responses=COMMON)

Ctx = Annotated[ApiContext, Depends(context)]
ERR = {**NOT_FOUND, **CONFLICT}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BackupBody(_Body):
    full: bool = Field(False, description="A full backup even where an incremental could be.")


class RestoreBody(_Body):
    new_name: str | None = Field(None, description="Restore into a new VM of this name.")
    overwrite: bool = Field(
        False,
        description="Restore into the VM itself, overwriting its disks: must be true when no "
        "new_name is given (see restore-preview for what it overwrites).",
    )
    force: bool = Field(False, description="Into the VM itself: power it off if it runs.")


class RestorePreview(BaseModel):
    vm: str
    set: str
    chain: list[str]
    state: str = Field(description="The VM's state now.")
    overwrites: dict[str, str] = Field(description="Disk target -> the file a restore replaces.")


class ScheduleBody(_Body):
    vm: str | None = None
    tag: str | None = None
    cron: str = Field(description="5 cron fields, UTC.")
    retention: Retention = Field(default_factory=Retention)


class PruneBody(Retention):
    dry_run: bool = Field(False, description="Say what would go; remove nothing.")


def _progress(task: Any) -> Any:
    def report(phase: str, done: int, total: int | None) -> None:
        task.progress(phase=phase, done_bytes=done, total_bytes=total)

    return report


@router.get("/vms/{name}/backups", response_model=list[BackupSet], responses=NOT_FOUND)
def list_backups(
    ctx: Ctx, name: VmName, _: Annotated[Principal, Depends(require("vm.read"))]
) -> list[BackupSet]:
    """The VM's backup sets, oldest first."""
    return ctx.client.backups.list(name)


@router.post("/vms/{name}/backups", status_code=202, response_model=TaskView, responses=ERR)
def create_backup(
    ctx: Ctx,
    name: VmName,
    body: BackupBody,
    request: Request,
    response: Response,
    who: Annotated[Principal, Depends(require("vm.change"))],
) -> TaskView:
    """Back up the VM now (incremental where it can be, else full, and the result says why): a
    task with progress from libvirt's job statistics. A service stop cancels it; a cancelled or
    failed backup leaves no set, file or checkpoint."""
    client = ctx.client
    client.vms.state(name)  # 404 now, not in the task

    def work(task: Any) -> BackupResult:
        task.say(f"backing up {name}")
        return client.backups.create(
            name, full=body.full, progress=_progress(task), cancel=task.stopping
        )

    # a backup cut off by the process's death is cleaned up by the VM's next backup
    task = ctx.tasks.submit("backup.create", name, who.user, work)
    return accepted(request, response, task)


@router.get("/vms/{name}/backups/{set_id}", response_model=BackupSet, responses=NOT_FOUND)
def get_backup(
    ctx: Ctx, name: VmName, set_id: str, _: Annotated[Principal, Depends(require("vm.read"))]
) -> BackupSet:
    return ctx.client.backups.get(name, set_id)


@router.post(
    "/vms/{name}/backups/{set_id}/verify", response_model=VerifyResult, responses=NOT_FOUND
)
def verify_backup(
    ctx: Ctx, name: VmName, set_id: str, _: Annotated[Principal, Depends(require("vm.read"))]
) -> VerifyResult:
    """Each disk's checksum and ``qemu-img check``, and the chain below the set, without
    restoring it."""
    backups = ctx.client.backups
    return backups.verify(backups.get(name, set_id))


@router.get(
    "/vms/{name}/backups/{set_id}/restore-preview",
    response_model=RestorePreview,
    responses=NOT_FOUND,
)
def restore_preview(
    ctx: Ctx, name: VmName, set_id: str, _: Annotated[Principal, Depends(require("vm.read"))]
) -> RestorePreview:
    """What a restore of the set into the VM itself would overwrite."""
    backups = ctx.client.backups
    chosen = backups.get(name, set_id)
    state, files = backups.restore_plan(chosen)
    return RestorePreview(vm=name, set=set_id, chain=backups.chain(chosen), state=state.value,
                          overwrites=files)  # fmt: skip


@router.post(
    "/vms/{name}/backups/{set_id}/restore", status_code=202, response_model=TaskView, responses=ERR
)
def restore_backup(
    ctx: Ctx,
    name: VmName,
    set_id: str,
    body: RestoreBody,
    request: Request,
    response: Response,
    who: Annotated[Principal, Depends(require("vm.create"))],
) -> TaskView:
    """Restore the set (with the sets it builds on) into a new VM (``new_name``: new name,
    UUID, MACs and disks), or with ``overwrite`` into the VM itself: a task."""
    client = ctx.client
    chosen = client.backups.get(name, set_id)  # 404 now
    if body.new_name is not None:
        new = validate_name(body.new_name)
        _refuse_existing(ctx, new)
        request.state.audit_target = f"{name}/{set_id} -> {new}"
    else:
        if not body.overwrite:
            raise InvalidInput(
                "a restore into the VM itself overwrites its disks: give overwrite=true (see "
                "restore-preview), or new_name for a new VM",
                code="confirmation_required",
            )
        if not allowed(who.role, "vm.delete"):
            raise PermissionDenied("overwriting a VM's disks needs the permission vm.delete")

    def work(task: Any) -> RestoreResult:
        task.say(f"restoring {set_id} of {name}")
        return client.backups.restore(
            chosen, new_name=body.new_name, force=body.force, progress=_progress(task),
            cancel=task.stopping,
        )  # fmt: skip

    target = body.new_name or name
    recovery = {"vm": body.new_name} if body.new_name else None
    task = ctx.tasks.submit("backup.restore", target, who.user, work, recovery=recovery)
    return accepted(request, response, task)


@router.post("/vms/{name}/backups-prune", response_model=PruneResult, responses=ERR)
def prune_backups(
    ctx: Ctx,
    name: VmName,
    body: PruneBody,
    _: Annotated[Principal, Depends(require("vm.delete"))],
) -> PruneResult:
    """Remove the sets the policy does not keep (and their checkpoints); whole chains only.
    ``dry_run``: say what would go."""
    policy = Retention.model_validate(body.model_dump(exclude={"dry_run"}))
    return ctx.client.backups.prune(name, policy, dry_run=body.dry_run)


@router.get("/backup-schedules", response_model=list[ScheduleView])
def list_schedules(
    ctx: Ctx, _: Annotated[Principal, Depends(require("vm.read"))]
) -> list[ScheduleView]:
    return ctx.client.backups.list_schedules()


@router.post("/backup-schedules", status_code=201, response_model=ScheduleView)
def add_schedule(
    ctx: Ctx, body: ScheduleBody, _: Annotated[Principal, Depends(require("vm.change"))]
) -> ScheduleView:
    """A schedule for one VM or a tag; `virtkit backup run-due` (its timer) runs it."""
    from virtkit.specs.common import parse_model

    spec = parse_model(ScheduleSpec, body.model_dump(), "schedule")
    return ctx.client.backups.add_schedule(spec)


@router.delete("/backup-schedules/{schedule_id}", response_model=ScheduleView, responses=NOT_FOUND)
def remove_schedule(
    ctx: Ctx, schedule_id: int, _: Annotated[Principal, Depends(require("vm.change"))]
) -> ScheduleView:
    return ctx.client.backups.remove_schedule(schedule_id)
