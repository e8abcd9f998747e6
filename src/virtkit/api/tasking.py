"""``202 Accepted`` with a task: the body is the task, ``Location`` is where to follow it."""

from __future__ import annotations

from fastapi import Request, Response

from virtkit.specs.tasks import TaskView


def accepted(request: Request, response: Response, task: TaskView) -> TaskView:
    root = request.scope.get("root_path", "")
    response.headers["Location"] = f"{root}/api/v1/tasks/{task.id}"
    return task
