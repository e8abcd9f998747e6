"""The audit log: who changed what, when, and how it went; kept in virtkit's store so that the
CLI and the API write to (and read) one log."""

from __future__ import annotations

import time
from dataclasses import dataclass

from virtkit.errors import InvalidInput
from virtkit.services.store import Store, register_schema

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      REAL NOT NULL,
    user    TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    result  TEXT NOT NULL,
    detail  TEXT,
    source  TEXT
);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at);
"""
register_schema(SCHEMA)

MAX_LIMIT = 10_000


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: float  # seconds since the epoch
    user: str  # a virtkit user, ``local:<unix user>`` for the CLI, ``-`` when unknown
    action: str  # e.g. ``POST /api/v1/vms/{name}/start`` or ``user add``
    target: str  # what it acted on (a VM name, a user), ``-`` for none
    result: str  # an HTTP status code, ``ok``, or an error code
    detail: str | None
    source: str | None  # the client's address, ``cli`` for the command line


class AuditLog:
    def __init__(self, store: Store) -> None:
        self.store = store

    def record(
        self,
        user: str,
        action: str,
        target: str,
        result: str | int,
        *,
        detail: str | None = None,
        source: str | None = None,
    ) -> None:
        with self.store.db() as db:
            db.execute(
                "INSERT INTO audit_log (at, user, action, target, result, detail, source) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (time.time(), user, action, target or "-", str(result), detail, source),
            )

    def entries(
        self,
        *,
        user: str | None = None,
        action: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """Newest first. ``action`` matches a prefix (``user`` finds ``user add`` and
        ``user delete``; ``POST /api/v1/vms`` every VM change by the API)."""
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidInput(f"limit must be 1 to {MAX_LIMIT}", code="invalid_limit")
        clauses: list[str] = []
        params: list[str | float] = []
        if user is not None:
            clauses.append("user = ?")
            params.append(user)
        if action is not None:
            # A prefix without LIKE's wildcards: an action may contain '_' or '%'.
            clauses.append("substr(action, 1, ?) = ?")
            params.extend([len(action), action])
        if since is not None:
            clauses.append("at >= ?")
            params.append(since)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        with self.store.db() as db:
            rows = db.execute(
                "SELECT id, at, user, action, target, result, detail, source FROM audit_log"
                + where
                + " ORDER BY at DESC, id DESC LIMIT ?",
                (*params, limit),
            ).fetchall()
        return [AuditEntry(**dict(row)) for row in rows]


__all__ = ["AuditEntry", "AuditLog"]
