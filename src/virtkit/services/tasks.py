"""The task runner: long work (create from an image, import, clone, shutdown with a timeout) runs
in a worker thread as a *task* with an id, a state, progress and a log, all kept in virtkit's
store, so that ``GET /api/v1/tasks/{id}`` answers after a restart of the service too.

A task that was queued or running in a process that is gone is marked failed on the next start
(:meth:`TaskRunner.recover`), and the cleanup registered for its kind removes what it left.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from virtkit.actionlog import log_context, logged_action
from virtkit.errors import NotFound, VirtkitError
from virtkit.services.store import Store, register_schema
from virtkit.specs.tasks import TaskError, TaskLogLine, TaskProgress, TaskState, TaskView

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    target      TEXT NOT NULL,
    user        TEXT NOT NULL,
    state       TEXT NOT NULL,
    percent     REAL,
    phase       TEXT,
    done_bytes  INTEGER,
    total_bytes INTEGER,
    created     REAL NOT NULL,
    started     REAL,
    finished    REAL,
    result      TEXT,
    error       TEXT,
    owner       TEXT NOT NULL,
    recovery    TEXT
);
CREATE INDEX IF NOT EXISTS tasks_created ON tasks (created);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks (state);
CREATE TABLE IF NOT EXISTS task_log (
    task_id TEXT NOT NULL,
    at      REAL NOT NULL,
    line    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS task_log_task ON task_log (task_id, at);
"""
register_schema(SCHEMA)

# progress is written to the store at most this often (every change still reaches listeners)
_PROGRESS_EVERY = 0.5
_LOG_LINES_MAX = 2000

Listener = Callable[[TaskView], None]
Cleanup = Callable[[TaskView, dict[str, Any]], None]


class TaskHandle:
    """What the work sees: report progress, write to the task's log."""

    def __init__(self, runner: TaskRunner, task_id: str) -> None:
        self._runner = runner
        self.id = task_id
        # set when the service stops: work that waits (``vm wait``) ends rather than holding
        # the process for its whole timeout
        self.stopping = runner.stopping
        self._last_write = 0.0
        self._progress = TaskProgress()
        self._lines = 0

    def progress(
        self,
        *,
        percent: float | None = None,
        phase: str | None = None,
        done_bytes: int | None = None,
        total_bytes: int | None = None,
    ) -> None:
        if percent is None and done_bytes is not None and total_bytes:
            percent = 100.0 * done_bytes / total_bytes
        old = self._progress
        self._progress = TaskProgress(
            percent=None if percent is None else round(min(max(percent, 0.0), 100.0), 1),
            phase=phase if phase is not None else old.phase,
            done_bytes=done_bytes,
            total_bytes=total_bytes if total_bytes is not None else old.total_bytes,
        )
        now = time.monotonic()
        write = phase is not None or now - self._last_write >= _PROGRESS_EVERY
        if write:
            self._last_write = now
        self._runner._set_progress(self.id, self._progress, write=write)

    def log(self, line: str) -> None:
        """One line in the task's log (and, when it is a new phase, its phase)."""
        self._lines += 1
        if self._lines <= _LOG_LINES_MAX:
            self._runner._log(self.id, line)

    def say(self, line: str) -> None:
        """A step in words: the log and the phase (what services' ``progress`` callbacks get)."""
        self.log(line)
        self.progress(phase=line, percent=self._progress.percent)


Work = Callable[[TaskHandle], Any]


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(owner: str) -> bool:
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return True  # another machine's process: not ours to judge
    try:
        os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


def _jsonable(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def count_by_state(store: Store) -> dict[str, int]:
    """How many kept tasks are in each state, from any process (the exporter's view of the
    service's tasks: the store is shared)."""
    with store.db() as db:
        rows = db.execute("SELECT state, COUNT(*) FROM tasks GROUP BY state").fetchall()
    return {str(row[0]): int(row[1]) for row in rows}


class TaskRunner:
    """Runs tasks on a few worker threads and keeps them in the store."""

    def __init__(
        self, store: Store, *, workers: int = 4, keep: int = 1000, host: str | None = None
    ) -> None:
        self.store = store
        self.host = host  # the libvirt host's name: host.name on every record a task logs
        self.owner = _owner()
        self._keep = keep
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="virtkit-task")
        self._listeners: list[Listener] = []
        self._cleanups: dict[str, Cleanup] = {}
        self._lock = threading.Lock()
        self._live: dict[str, TaskView] = {}
        self.stopping = threading.Event()

    # -- listening ---------------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """``listener(task)`` on every change of any task (state, progress); from the worker
        thread, so it must be quick and thread-safe."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def _notify(self, task: TaskView) -> None:
        for listener in list(self._listeners):
            try:
                listener(task)
            except Exception:
                log.exception("a task listener failed")

    # -- submitting --------------------------------------------------------------------------

    def on_recover(self, kind: str, cleanup: Cleanup) -> None:
        """``cleanup(task, recovery)`` for a task of ``kind`` whose process died while it ran:
        remove what it left (``recovery`` is what the task stored when it was submitted)."""
        self._cleanups[kind] = cleanup

    def submit(
        self,
        kind: str,
        target: str,
        user: str,
        work: Work,
        *,
        recovery: dict[str, Any] | None = None,
    ) -> TaskView:
        task_id = uuid.uuid4().hex[:16]
        now = time.time()
        with self.store.db() as db:
            db.execute(
                "INSERT INTO tasks (id, kind, target, user, state, created, owner, recovery) "
                "VALUES (?, ?, ?, ?, 'queued', ?, ?, ?)",
                (task_id, kind, target, user, now, self.owner, json.dumps(recovery or {})),
            )
        task = self.get(task_id)
        self._notify(task)
        self._pool.submit(self._run, task, work)
        return task

    def _run(self, task: TaskView, work: Work) -> None:
        """In the worker thread: every record the work logs carries the task (its id, kind
        and user, its VM for ``vm.*`` tasks), and one record says how the task ended."""
        vm = task.target if task.kind.startswith("vm.") else None
        context = {
            "virtkit.task.id": task.id, "virtkit.task.kind": task.kind, "user.name": task.user,
            "virtkit.vm": vm, "host.name": self.host,
        }  # fmt: skip
        label = f"task {task.id} ({task.kind} {task.target})"
        with log_context(**context):
            self._work(task.id, work, label)

    def _work(self, task_id: str, work: Work, label: str) -> None:
        handle = TaskHandle(self, task_id)
        self._update(task_id, state="running", started=time.time())
        handle.log("started")
        try:
            with logged_action(log, "task.run", label=label):
                result = _jsonable(work(handle))
        except VirtkitError as exc:
            if not exc.expected:  # the record above says that it failed; here: where
                log.error("task %s failed", task_id, exc_info=True)
            error = TaskError(code=exc.code, message=exc.message, detail={"hint": exc.hint})
            handle.log(f"failed: {exc}")
            self._finish(task_id, "failed", error=error)
        except Exception as exc:
            log.exception("task %s failed unexpectedly", task_id)
            error = TaskError(
                code="internal_error",
                message=f"the task failed unexpectedly ({type(exc).__name__}); see the log",
            )
            handle.log(f"failed unexpectedly: {type(exc).__name__}: {exc}")
            self._finish(task_id, "failed", error=error)
        else:
            handle.log("succeeded")
            self._finish(task_id, "succeeded", result=result)

    # -- reading -----------------------------------------------------------------------------

    def get(self, task_id: str) -> TaskView:
        with self._lock:
            live = self._live.get(task_id)
        if live is not None:
            return live
        with self.store.db() as db:
            row = db.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
        if row is None:
            raise NotFound(f"no task {task_id!r}", code="task_not_found")
        return _view(row)

    def list(
        self,
        *,
        limit: int = 50,
        state: TaskState | None = None,
        target: str | None = None,
        user: str | None = None,
    ) -> list[TaskView]:
        """The newest first."""
        query = "SELECT * FROM tasks WHERE 1 = 1"
        params: list[Any] = []
        for column, value in (("state", state), ("target", target), ("user", user)):
            if value is not None:
                query += f" AND {column} = ?"  # column names from this fixed list only
                params.append(value)
        query += " ORDER BY created DESC LIMIT ?"
        params.append(limit)
        with self.store.db() as db:
            rows = db.execute(query, params).fetchall()
        with self._lock:
            return [self._live.get(row["id"]) or _view(row) for row in rows]

    def log_lines(self, task_id: str, *, limit: int = _LOG_LINES_MAX) -> builtins.list[TaskLogLine]:
        self.get(task_id)  # NotFound for an unknown id
        with self.store.db() as db:
            rows = db.execute(
                "SELECT at, line FROM task_log WHERE task_id = ? ORDER BY at, rowid LIMIT ?",
                (task_id, limit),
            ).fetchall()
        return [TaskLogLine(at=row["at"], line=row["line"]) for row in rows]

    def wait(self, task_id: str, timeout: float) -> TaskView:
        """The task once finished, or as it is after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            task = self.get(task_id)
            if task.state in ("succeeded", "failed") or time.monotonic() >= deadline:
                return task
            time.sleep(0.05)

    # -- recovering --------------------------------------------------------------------------

    def recover(self) -> builtins.list[TaskView]:
        """Mark failed the tasks whose process is gone, and run their kind's cleanup."""
        with self.store.db() as db:
            rows = db.execute("SELECT * FROM tasks WHERE state IN ('queued', 'running')").fetchall()
        failed = []
        for row in rows:
            if row["owner"] == self.owner or _owner_alive(row["owner"]):
                continue
            task = _view(row)
            recovery = json.loads(row["recovery"] or "{}")
            cleanup = self._cleanups.get(task.kind)
            note = "the service stopped while the task ran"
            if cleanup is not None:
                try:
                    cleanup(task, recovery)
                    note += "; what it had made was removed"
                except Exception as exc:
                    log.exception("cleanup of task %s failed", task.id)
                    note += f"; cleaning up failed: {exc}"
            self._log(task.id, note)
            error = TaskError(code="service_restarted", message=note)
            self._finish(task.id, "failed", error=error)
            failed.append(self.get(task.id))
        self._prune()
        return failed

    def _prune(self) -> None:
        with self.store.db() as db:
            db.execute(
                "DELETE FROM task_log WHERE task_id IN (SELECT id FROM tasks WHERE state IN "
                "('succeeded', 'failed') ORDER BY created DESC LIMIT -1 OFFSET ?)",
                (self._keep,),
            )
            db.execute(
                "DELETE FROM tasks WHERE id IN (SELECT id FROM tasks WHERE state IN "
                "('succeeded', 'failed') ORDER BY created DESC LIMIT -1 OFFSET ?)",
                (self._keep,),
            )

    def shutdown(self, *, wait: bool = True) -> None:
        self.stopping.set()
        self._pool.shutdown(wait=wait, cancel_futures=True)

    # -- writing -----------------------------------------------------------------------------

    def _update(self, task_id: str, **values: Any) -> None:
        columns = ", ".join(f"{name} = ?" for name in values)  # names from this module only
        with self.store.db() as db:
            db.execute(f"UPDATE tasks SET {columns} WHERE id = ?", (*values.values(), task_id))
        with self._lock:
            self._live.pop(task_id, None)
        self._notify(self.get(task_id))

    def _set_progress(self, task_id: str, progress: TaskProgress, *, write: bool) -> None:
        if write:
            self._update(
                task_id,
                percent=progress.percent,
                phase=progress.phase,
                done_bytes=progress.done_bytes,
                total_bytes=progress.total_bytes,
            )
            return
        task = self.get(task_id).model_copy(update={"progress": progress})
        with self._lock:
            self._live[task_id] = task
        self._notify(task)

    def _log(self, task_id: str, line: str) -> None:
        with self.store.db() as db:
            db.execute(
                "INSERT INTO task_log (task_id, at, line) VALUES (?, ?, ?)",
                (task_id, time.time(), line),
            )

    def _finish(
        self,
        task_id: str,
        state: TaskState,
        *,
        result: Any = None,
        error: TaskError | None = None,
    ) -> None:
        values: dict[str, Any] = {"state": state, "finished": time.time()}
        if state == "succeeded":
            values["percent"] = 100.0
            values["result"] = json.dumps(result)
        if error is not None:
            values["error"] = error.model_dump_json()
        self._update(task_id, **values)


def _view(row: Any) -> TaskView:
    return TaskView(
        id=row["id"],
        kind=row["kind"],
        target=row["target"],
        user=row["user"],
        state=row["state"],
        progress=TaskProgress(
            percent=row["percent"],
            phase=row["phase"],
            done_bytes=row["done_bytes"],
            total_bytes=row["total_bytes"],
        ),
        created=row["created"],
        started=row["started"],
        finished=row["finished"],
        result=json.loads(row["result"]) if row["result"] else None,
        error=TaskError.model_validate_json(row["error"]) if row["error"] else None,
    )
