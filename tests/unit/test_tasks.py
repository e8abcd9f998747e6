"""The task runner (real SQLite store) and the event hub: states, results, errors, progress,
filters, recovery of a dead process's tasks, and a slow subscriber losing the oldest events."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any

from virtkit.errors import InvalidInput
from virtkit.services import eventhub
from virtkit.services.eventhub import EventHub
from virtkit.services.store import Store
from virtkit.services.tasks import TaskHandle, TaskRunner
from virtkit.specs.tasks import TaskView


def runner(tmp_path: Path) -> TaskRunner:
    return TaskRunner(Store(tmp_path / "virtkit.db"), workers=2)


def test_a_task_succeeds_with_its_result_log_and_progress(tmp_path: Path) -> None:
    tasks = runner(tmp_path)
    seen: list[TaskView] = []
    tasks.subscribe(seen.append)

    def work(task: TaskHandle) -> dict[str, int]:
        task.say("copying")
        task.progress(done_bytes=50, total_bytes=200)
        return {"answer": 42}

    made = tasks.submit("vm.create", "web1", "otto", work)
    done = tasks.wait(made.id, 10)
    assert done.state == "succeeded" and done.result == {"answer": 42}
    assert done.progress.percent == 100.0 and done.started is not None
    assert [line.line for line in tasks.log_lines(made.id)] == ["started", "copying", "succeeded"]
    assert any(t.progress.percent == 25.0 for t in seen)  # done/total as percent
    assert {t.state for t in seen} >= {"queued", "running", "succeeded"}
    tasks.shutdown()


def test_a_failing_task_keeps_the_error_code_and_filters_work(tmp_path: Path) -> None:
    tasks = runner(tmp_path)

    def bad(task: TaskHandle) -> None:
        raise InvalidInput("no such kernel /x", code="invalid_kernel")

    def broken(task: TaskHandle) -> None:
        raise RuntimeError("boom")

    one = tasks.wait(tasks.submit("vm.create", "a", "otto", bad).id, 10)
    two = tasks.wait(tasks.submit("vm.clone", "b", "ada", broken).id, 10)
    assert one.state == "failed" and one.error is not None
    assert (one.error.code, one.error.message) == ("invalid_kernel", "no such kernel /x")
    assert two.error is not None and two.error.code == "internal_error"
    assert "boom" not in two.error.message  # details go to the log, not to the caller
    assert [t.id for t in tasks.list(user="ada")] == [two.id]
    assert [t.id for t in tasks.list(target="a", state="failed")] == [one.id]
    tasks.shutdown()


def test_tasks_of_a_dead_process_are_failed_and_cleaned_up(tmp_path: Path) -> None:
    store = Store(tmp_path / "virtkit.db")
    TaskRunner(store).shutdown()  # the tables
    dead = subprocess.Popen(["true"])
    dead.wait()
    with store.db() as db:
        for task_id, owner in (("gone", f"{socket.gethostname()}:{dead.pid}"),
                               ("alive", f"{socket.gethostname()}:1")):  # fmt: skip
            db.execute(
                "INSERT INTO tasks (id, kind, target, user, state, created, owner, recovery) "
                "VALUES (?, 'vm.create', 'web9', 'otto', 'running', 0, ?, ?)",
                (task_id, owner, json.dumps({"vm": "web9"})),
            )
    cleaned: list[dict[str, Any]] = []
    tasks = TaskRunner(store)
    tasks.on_recover("vm.create", lambda task, recovery: cleaned.append(recovery))
    failed = tasks.recover()
    assert [t.id for t in failed] == ["gone"] and cleaned == [{"vm": "web9"}]
    error = tasks.get("gone").error
    assert error is not None and error.code == "service_restarted"
    assert tasks.get("alive").state == "running"  # its process (pid 1) still runs
    tasks.shutdown()


def test_the_hub_fans_out_and_a_slow_reader_loses_the_oldest(monkeypatch: Any) -> None:
    monkeypatch.setattr(eventhub, "QUEUE_MAX", 3)
    hub = EventHub()
    fast, slow = hub.subscribe(), hub.subscribe()
    first = hub.publish("vm", {"n": 0})
    assert fast.get(1) == first
    for n in range(1, 5):
        hub.publish("vm", {"n": n})
    assert slow.dropped == 2
    assert [e.data["n"] for e in iter(lambda: slow.get(0.01), None)] == [2, 3, 4]
    slow.close()
    assert hub.subscribers == 1
