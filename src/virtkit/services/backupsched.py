"""Backup schedules (per VM or per tag, cron, retention) in virtkit's store, and the files that
run ``virtkit backup run-due`` every minute (a cron.d line or a systemd timer)."""

from __future__ import annotations

import builtins
import json
import time
from datetime import UTC, datetime
from pathlib import Path

from virtkit.errors import InvalidInput, NotFound
from virtkit.services.store import Store, register_schema
from virtkit.specs.backup import Retention, ScheduleSpec, ScheduleView
from virtkit.specs.cron import parse_cron

SCHEMA = """
CREATE TABLE IF NOT EXISTS backup_schedules (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    host_uuid   TEXT NOT NULL,
    vm          TEXT,
    tag         TEXT,
    cron        TEXT NOT NULL,
    retention   TEXT NOT NULL,
    dir         TEXT,
    created     REAL NOT NULL,
    last_run    REAL,
    last_result TEXT
);
"""
register_schema(SCHEMA)


def is_due(view: ScheduleView, now: float) -> bool:
    """Due when the schedule matched a minute after its last run (or its creation), up to now."""
    last = view.last_run if view.last_run is not None else view.created
    cron = parse_cron(view.cron)
    return cron.due(datetime.fromtimestamp(last, UTC), datetime.fromtimestamp(now, UTC))


class Schedules:
    def __init__(self, store: Store, host_uuid: str) -> None:
        self.store = store
        self.host_uuid = host_uuid

    def add(self, spec: ScheduleSpec, *, now: float | None = None) -> ScheduleView:
        if (spec.vm is None) == (spec.tag is None):
            raise InvalidInput("a schedule is for one VM or for one tag: give exactly one",
                               code="invalid_schedule")  # fmt: skip
        with self.store.db() as db:
            cur = db.execute(
                "INSERT INTO backup_schedules (host_uuid, vm, tag, cron, retention, dir, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (self.host_uuid, spec.vm, spec.tag, spec.cron,
                 spec.retention.model_dump_json(), spec.dir, now or time.time()),
            )  # fmt: skip
            new_id = int(cur.lastrowid or 0)
        return self.get(new_id)

    def get(self, schedule_id: int) -> ScheduleView:
        for view in self.list():
            if view.id == schedule_id:
                return view
        raise NotFound(f"no backup schedule {schedule_id}", code="schedule_not_found")

    def list(self) -> builtins.list[ScheduleView]:
        with self.store.db() as db:
            rows = db.execute(
                "SELECT id, vm, tag, cron, retention, dir, created, last_run, last_result "
                "FROM backup_schedules WHERE host_uuid = ? ORDER BY id",
                (self.host_uuid,),
            ).fetchall()
        return [
            ScheduleView(id=r[0], vm=r[1], tag=r[2], cron=r[3],
                         retention=Retention.model_validate(json.loads(r[4])), dir=r[5],
                         created=r[6], last_run=r[7], last_result=r[8])
            for r in rows
        ]  # fmt: skip

    def remove(self, schedule_id: int) -> ScheduleView:
        view = self.get(schedule_id)
        with self.store.db() as db:
            db.execute("DELETE FROM backup_schedules WHERE id = ?", (schedule_id,))
        return view

    def mark_run(self, schedule_id: int, at: float, result: str) -> None:
        with self.store.db() as db:
            db.execute("UPDATE backup_schedules SET last_run = ?, last_result = ? WHERE id = ?",
                       (at, result[:500], schedule_id))  # fmt: skip


# -- running run-due every minute ----------------------------------------------------------

CRON_FILE = "virtkit-backup"
UNIT = "virtkit-backup"


def timer_files(kind: str, virtkit: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """File name -> content of what runs ``virtkit backup run-due`` each minute: a cron.d line
    (``cron``) or a systemd service and timer (``systemd``)."""
    command = f"{virtkit} backup run-due"
    env = env or {}
    if kind == "cron":
        lines = ["# virtkit: run due backup schedules, then prune (virtkit backup schedule)"]
        lines += [f"{k}={v}" for k, v in sorted(env.items())]
        lines.append(f"* * * * * root {command} >/dev/null 2>&1")
        return {CRON_FILE: "\n".join(lines) + "\n"}
    if kind == "systemd":
        environment = "".join(f"Environment={k}={v}\n" for k, v in sorted(env.items()))
        service = (
            "[Unit]\nDescription=virtkit: run due backup schedules, then prune\n"
            "After=libvirtd.service\n\n[Service]\nType=oneshot\n"
            f"{environment}ExecStart={command}\n"
        )
        timer = (
            "[Unit]\nDescription=virtkit: due backups each minute\n\n[Timer]\n"
            "OnCalendar=*-*-* *:*:00\nPersistent=true\n\n[Install]\nWantedBy=timers.target\n"
        )
        return {f"{UNIT}.service": service, f"{UNIT}.timer": timer}
    raise InvalidInput(f"unknown timer kind {kind!r}: cron or systemd", code="invalid_timer")


def install_timer(kind: str, target_dir: Path, virtkit: str,
                  env: dict[str, str] | None = None) -> builtins.list[Path]:  # fmt: skip
    written = []
    target_dir.mkdir(parents=True, exist_ok=True)
    for name, content in timer_files(kind, virtkit, env).items():
        path = target_dir / name
        path.write_text(content)
        path.chmod(0o644)
        written.append(path)
    return written
