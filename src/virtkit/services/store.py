"""virtkit's own store (SQLite): only what libvirt cannot hold, such as imported images and
templates (libvirt volumes carry no metadata)."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from virtkit.errors import BackendError

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    host_uuid   TEXT NOT NULL,
    pool        TEXT NOT NULL,
    name        TEXT NOT NULL,
    path        TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    origin      TEXT NOT NULL,
    os          TEXT,
    template    INTEGER NOT NULL DEFAULT 0,
    imported_at REAL NOT NULL,
    PRIMARY KEY (host_uuid, path)
);
CREATE INDEX IF NOT EXISTS images_sha ON images (host_uuid, sha256);
CREATE TABLE IF NOT EXISTS vm_meta (
    uuid        TEXT PRIMARY KEY,
    tags        TEXT NOT NULL,
    virtkit     INTEGER NOT NULL,
    owner       TEXT,
    template    TEXT,
    extra       TEXT,
    seen_at     REAL NOT NULL
);
"""

_SCHEMAS: list[str] = [SCHEMA]

# a VM's metadata copy: tags, made by virtkit, owner, template, and the rest by name (site, ...)
VMMetaRow = tuple[list[str], bool, str | None, str | None, dict[str, Any]]


def register_schema(sql: str) -> None:
    """Tables of another part of virtkit (users, tasks, audit, ...): each such module keeps its
    own SQL and its own queries, and calls this at import; ``CREATE ... IF NOT EXISTS`` only."""
    if sql not in _SCHEMAS:
        _SCHEMAS.append(sql)


class Store:
    """A small SQLite database; each call opens its own short connection (safe across threads
    and processes, e.g. the CLI while a daemon runs)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._schemas_done = 0

    def version(self) -> tuple[int, ...] | None:
        """A value that changes whenever any process commits a change to the store: the file's
        identity and size plus SQLite's file change counter (header bytes 24-27, bumped by every
        write transaction in the rollback-journal mode the store uses). One small read, no
        connection: what lets a caller keep a copy of a row and know it is still true. None if
        the file is missing or unreadable (trust nothing then)."""
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                f.seek(24)
                counter = f.read(4)
        except OSError:
            return None
        if len(counter) != 4:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, int.from_bytes(counter, "big"))

    @contextmanager
    def db(self) -> Iterator[sqlite3.Connection]:
        """One short connection in one transaction (committed on success), for modules that keep
        their own tables (see ``register_schema``)."""
        with self._db() as db:
            yield db

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=10)
        except (OSError, sqlite3.Error) as exc:
            raise BackendError(
                f"cannot open virtkit's store {self.path}: {exc}", code="store_failed"
            ) from None
        db.row_factory = sqlite3.Row
        try:
            # The tables once per Store (and again only for schemas registered since): a
            # connection per call is cheap, running every CREATE on each one is not.
            if self._schemas_done < len(_SCHEMAS):
                for schema in _SCHEMAS[self._schemas_done :]:
                    db.executescript(schema)
                columns = {row[1] for row in db.execute("PRAGMA table_info(images)")}
                if "boot" not in columns:  # added later: stores made before get the column
                    db.execute("ALTER TABLE images ADD COLUMN boot TEXT")
                columns = {row[1] for row in db.execute("PRAGMA table_info(vm_meta)")}
                for column in ("owner", "template", "extra"):  # added later too
                    if column not in columns:
                        db.execute(f"ALTER TABLE vm_meta ADD COLUMN {column} TEXT")
                        db.execute("DELETE FROM vm_meta")  # copies without it: read afresh
                self._schemas_done = len(_SCHEMAS)
            with db:
                yield db
        except sqlite3.Error as exc:
            if "no such table" in str(exc):  # the file was replaced: make the tables again
                self._schemas_done = 0
            raise BackendError(
                f"virtkit's store {self.path} failed: {exc}", code="store_failed"
            ) from None
        finally:
            db.close()

    def add_image(
        self, host_uuid: str, pool: str, name: str, path: str, sha256: str, origin: str
    ) -> None:
        with self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO images (host_uuid, pool, name, path, sha256, origin, "
                "imported_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (host_uuid, pool, name, path, sha256, origin, time.time()),
            )

    def image_by_sha(self, host_uuid: str, sha256: str) -> sqlite3.Row | None:
        with self._db() as db:
            row: sqlite3.Row | None = db.execute(
                "SELECT * FROM images WHERE host_uuid = ? AND sha256 = ?", (host_uuid, sha256)
            ).fetchone()
            return row

    def image(self, host_uuid: str, path: str) -> sqlite3.Row | None:
        with self._db() as db:
            row: sqlite3.Row | None = db.execute(
                "SELECT * FROM images WHERE host_uuid = ? AND path = ?", (host_uuid, path)
            ).fetchone()
            return row

    def images(self, host_uuid: str, *, templates_only: bool = False) -> list[sqlite3.Row]:
        query = "SELECT * FROM images WHERE host_uuid = ?"
        if templates_only:
            query += " AND template = 1"
        with self._db() as db:
            return list(db.execute(query + " ORDER BY pool, name", (host_uuid,)))

    def mark_template(self, host_uuid: str, path: str, os_name: str | None, on: bool) -> None:
        with self._db() as db:
            db.execute(
                "UPDATE images SET template = ?, os = COALESCE(?, os) "
                "WHERE host_uuid = ? AND path = ?",
                (1 if on else 0, os_name, host_uuid, path),
            )

    def set_boot(self, host_uuid: str, path: str, boot: str | None) -> None:
        """How VMs boot an image that has no boot loader (JSON: kernel, initrd, cmdline)."""
        with self._db() as db:
            db.execute(
                "UPDATE images SET boot = ? WHERE host_uuid = ? AND path = ?",
                (boot, host_uuid, path),
            )

    def forget_image(self, host_uuid: str, path: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM images WHERE host_uuid = ? AND path = ?", (host_uuid, path))

    # -- what a VM listing shows of virtkit's metadata (a copy of the domains' <metadata>) --

    def vm_meta(self, uuids: list[str]) -> dict[str, VMMetaRow]:
        """UUID -> (tags, made by virtkit, owner, template, extra) for those of ``uuids`` the
        store has a copy of."""
        if not uuids:
            return {}
        with self._db() as db:
            rows = db.execute(
                "SELECT uuid, tags, virtkit, owner, template, extra FROM vm_meta"
            ).fetchall()
        wanted = set(uuids)
        return {
            r["uuid"]: (
                json.loads(r["tags"]),
                bool(r["virtkit"]),
                r["owner"],
                r["template"],
                json.loads(r["extra"] or "{}"),
            )
            for r in rows
            if r["uuid"] in wanted
        }

    def put_vm_meta(self, entries: dict[str, VMMetaRow]) -> None:
        if not entries:
            return
        now = time.time()
        with self._db() as db:
            db.executemany(
                "INSERT OR REPLACE INTO vm_meta (uuid, tags, virtkit, owner, template, extra, "
                "seen_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (u, json.dumps(t), int(v), o, tp, json.dumps(x), now)
                    for u, (t, v, o, tp, x) in entries.items()
                ],
            )

    def forget_vm_meta(self, uuid: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM vm_meta WHERE uuid = ?", (uuid,))
