"""Long work as tasks (the model Proxmox users know): what the API returns with ``202``, what
``GET /api/v1/tasks/{id}`` shows, and what the event stream carries."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from virtkit.specs.common import _View

TaskState = Literal["queued", "running", "succeeded", "failed"]
FINISHED: tuple[TaskState, ...] = ("succeeded", "failed")


class TaskProgress(_View):
    percent: float | None = Field(None, description="0-100 where the work knows its size.")
    phase: str | None = Field(None, description="What the task does now, in words.")
    done_bytes: int | None = None
    total_bytes: int | None = None


class TaskError(_View):
    code: str
    message: str
    detail: dict[str, Any] | None = None


class TaskView(_View):
    id: str
    kind: str = Field(description="What the task does: vm.create, vm.clone, image.import, ...")
    target: str = Field(description="What it acts on (a VM, a pool/volume, ...).")
    user: str = Field(description="Who started it.")
    state: TaskState
    progress: TaskProgress
    created: float = Field(description="Unix time.")
    started: float | None = None
    finished: float | None = None
    result: Any = Field(None, description="What the work returned (JSON), once succeeded.")
    error: TaskError | None = None


class TaskLogLine(_View):
    at: float
    line: str
