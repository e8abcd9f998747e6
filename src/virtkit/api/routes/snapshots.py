"""``/api/v1/vms/{name}/snapshots``: a VM's snapshots (take, list, show, revert, delete) and its
disks' backing chains. Taking, reverting, deleting and flattening are tasks; revert and delete
first say what they destroy (``GET .../revert``, ``GET .../delete``) and run only with
``confirm: true``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response

from virtkit.api.context import ApiContext, context
from virtkit.api.errors import COMMON, CONFLICT, NOT_FOUND
from virtkit.api.routes.vms import VmName, _Body
from virtkit.api.security import Principal, require
from virtkit.api.tasking import accepted
from virtkit.errors import InvalidInput
from virtkit.specs.common import validate_name
from virtkit.specs.snapshot import DiskChain, RevertPlan, SnapshotDeletePlan, SnapshotView
from virtkit.specs.tasks import TaskView

router = APIRouter(prefix="/vms/{name}", tags=["snapshots"], responses=COMMON)

Ctx = Annotated[ApiContext, Depends(context)]
Reader = Annotated[Principal, Depends(require("vm.read"))]
Changer = Annotated[Principal, Depends(require("vm.change"))]
Destroyer = Annotated[Principal, Depends(require("vm.delete"))]
ERR = {**NOT_FOUND, **CONFLICT}


def _snapshot_name(snapshot: str) -> str:
    return validate_name(snapshot, "snapshot")


SnapName = Annotated[str, Depends(_snapshot_name)]


class SnapshotBody(_Body):
    name: str
    kind: Literal["external", "internal"] = "external"
    memory: bool | None = None
    description: str | None = None
    quiesce: bool = True


class RevertBody(_Body):
    start: bool | None = None
    confirm: bool = False


class ConfirmBody(_Body):
    confirm: bool = False


def _require_confirm(confirm: bool, what: str, lines: list[str]) -> None:
    if not confirm:
        raise InvalidInput(
            f"{what} needs confirm: true; it " + "; ".join(lines),
            code="confirmation_required",
        )


def _progress(task: Any) -> Any:
    def update(done: int, total: int) -> None:
        percent = 100.0 * done / total if total else None
        task.progress(percent=percent, done_bytes=done, total_bytes=total or None)

    return update


@router.get("/snapshots", response_model=list[SnapshotView], responses=NOT_FOUND)
def list_snapshots(ctx: Ctx, name: VmName, _: Reader) -> list[SnapshotView]:
    """Oldest first; each names its parent and children, and the files it needs."""
    return ctx.client.snapshots.list(name)


@router.post("/snapshots", status_code=202, response_model=TaskView, responses=ERR)
def create_snapshot(
    ctx: Ctx, name: VmName, body: SnapshotBody, request: Request, response: Response, who: Changer
) -> TaskView:
    """Take a snapshot (a task: saving memory takes a while). ``memory`` defaults to whether
    the VM runs; a disk-only snapshot of a running VM is quiesced when the agent answers."""
    snap = validate_name(body.name, "snapshot")
    client = ctx.client
    client.vms.state(name)  # 404 now

    def work(task: Any) -> Any:
        task.say(f"taking snapshot {snap} of {name}")
        return client.snapshots.create(
            name, snap, kind=body.kind, memory=body.memory, description=body.description,
            quiesce=body.quiesce,
        )  # fmt: skip

    task = ctx.tasks.submit("vm.snapshot.create", name, who.user, work)
    return accepted(request, response, task)


@router.get("/snapshots/{snapshot}", response_model=SnapshotView, responses=NOT_FOUND)
def show_snapshot(ctx: Ctx, name: VmName, snapshot: SnapName, _: Reader) -> SnapshotView:
    return ctx.client.snapshots.show(name, snapshot)


@router.get("/snapshots/{snapshot}/revert", response_model=RevertPlan, responses=ERR)
def revert_plan(
    ctx: Ctx, name: VmName, snapshot: SnapName, _: Reader, start: bool | None = None
) -> RevertPlan:
    """What a revert would do, and what the current state loses."""
    return ctx.client.snapshots.revert_plan(name, snapshot, start=start)


@router.post(
    "/snapshots/{snapshot}/revert", status_code=202, response_model=TaskView, responses=ERR
)
def revert_snapshot(
    ctx: Ctx,
    name: VmName,
    snapshot: SnapName,
    body: RevertBody,
    request: Request,
    response: Response,
    who: Destroyer,
) -> TaskView:
    """Revert (a task); refused without ``confirm: true``, naming what would be lost."""
    client = ctx.client
    plan = client.snapshots.revert_plan(name, snapshot, start=body.start)
    _require_confirm(
        body.confirm, f"reverting {name} to {snapshot}", ["loses " + ", ".join(plan.loses)]
    )

    def work(task: Any) -> RevertPlan:
        task.say(f"reverting {name} to {snapshot}")
        return client.snapshots.revert(name, snapshot, start=body.start)

    task = ctx.tasks.submit("vm.snapshot.revert", name, who.user, work)
    return accepted(request, response, task)


@router.get("/snapshots/{snapshot}/delete", response_model=SnapshotDeletePlan, responses=ERR)
def delete_plan(ctx: Ctx, name: VmName, snapshot: SnapName, _: Reader) -> SnapshotDeletePlan:
    """What a delete merges, removes and keeps (409 with the reason when it is refused)."""
    return ctx.client.snapshots.delete_plan(name, snapshot)


@router.delete("/snapshots/{snapshot}", status_code=202, response_model=TaskView, responses=ERR)
def delete_snapshot(
    ctx: Ctx,
    name: VmName,
    snapshot: SnapName,
    request: Request,
    response: Response,
    who: Destroyer,
    confirm: bool = False,
) -> TaskView:
    """Delete (a task with the merge's progress); refused without ``?confirm=true``."""
    client = ctx.client
    plan = client.snapshots.delete_plan(name, snapshot)
    _require_confirm(
        confirm, f"deleting snapshot {snapshot}", ["removes " + ", ".join(plan.removes)]
    )

    def work(task: Any) -> SnapshotDeletePlan:
        task.say(f"deleting snapshot {snapshot} of {name}")
        return client.snapshots.delete(name, snapshot, progress=_progress(task))

    task = ctx.tasks.submit("vm.snapshot.delete", name, who.user, work)
    return accepted(request, response, task)


@router.get("/chain", response_model=list[DiskChain], responses=NOT_FOUND)
def disk_chains(ctx: Ctx, name: VmName, _: Reader) -> list[DiskChain]:
    """Each writable disk's backing chain, active image first, with sizes and snapshots."""
    return ctx.client.snapshots.chain(name)


@router.post("/disks/{target}/flatten", status_code=202, response_model=TaskView, responses=ERR)
def flatten_disk(
    ctx: Ctx, name: VmName, target: str, request: Request, response: Response, who: Changer
) -> TaskView:
    """Copy a disk's backing chain into its image (a task); refused while snapshots need it."""
    client = ctx.client
    client.vms.state(name)

    def work(task: Any) -> DiskChain:
        task.say(f"flattening {target} of {name}")
        return client.snapshots.flatten(name, target, progress=_progress(task))

    task = ctx.tasks.submit("vm.disk.flatten", name, who.user, work)
    return accepted(request, response, task)
