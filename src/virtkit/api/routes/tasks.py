"""``/api/v1/tasks``: long work's state, progress, result or error, and its log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from virtkit.api.context import ApiContext, context
from virtkit.api.errors import COMMON, NOT_FOUND
from virtkit.api.security import Principal, require
from virtkit.errors import NotFound
from virtkit.services.vmscope import restricted
from virtkit.specs.tasks import TaskLogLine, TaskState, TaskView

router = APIRouter(prefix="/tasks", tags=["tasks"], responses=COMMON)

Ctx = Annotated[ApiContext, Depends(context)]
Reader = Annotated[Principal, Depends(require("task.read"))]


@router.get("", response_model=list[TaskView])
async def list_tasks(
    ctx: Ctx,
    who: Reader,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    state: TaskState | None = None,
    target: Annotated[str | None, Query(max_length=200)] = None,
    user: Annotated[str | None, Query(max_length=200)] = None,
) -> list[TaskView]:
    """Recent tasks, the newest first (with `api_vm_scope = own`, an operator's own)."""
    if restricted(who.role, ctx.settings.api_vm_scope):
        if user not in (None, who.user):
            return []
        user = who.user
    return await run_in_threadpool(
        ctx.tasks.list, limit=limit, state=state, target=target, user=user
    )


@router.get("/{task_id}", response_model=TaskView, responses=NOT_FOUND)
async def get_task(
    ctx: Ctx,
    task_id: str,
    who: Reader,
    wait: Annotated[
        float, Query(ge=0, le=60, description="Wait up to this many seconds for it to finish.")
    ] = 0,
) -> TaskView:
    await run_in_threadpool(_visible_task, ctx, who, task_id)
    if wait:
        return await run_in_threadpool(ctx.tasks.wait, task_id, wait)
    return await run_in_threadpool(ctx.tasks.get, task_id)


@router.get("/{task_id}/log", response_model=list[TaskLogLine], responses=NOT_FOUND)
def task_log(ctx: Ctx, task_id: str, who: Reader) -> list[TaskLogLine]:
    _visible_task(ctx, who, task_id)
    return ctx.tasks.log_lines(task_id)


def _visible_task(ctx: ApiContext, who: Principal, task_id: str) -> None:
    """404 for someone else's task when the caller sees only their own (services/vmscope.py)."""
    if restricted(who.role, ctx.settings.api_vm_scope) and ctx.tasks.get(task_id).user != who.user:
        raise NotFound(f"no task {task_id!r}", code="task_not_found")
