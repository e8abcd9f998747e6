"""Backup sets on disk: ``<root>/<vm>/<set id>/`` holding one qcow2 per disk and
``manifest.json`` (a :class:`BackupSet`). A set being made lives in ``<root>/<vm>/.<id>.partial``
and becomes a set by one rename once its manifest is written, so a set directory is always
whole. An incremental's images have the parent set's images as qcow2 backing files, named
relative to the set (``../<parent id>/vda.qcow2``), so a tree of sets can be moved as a whole."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from virtkit.errors import InvalidInput, InvalidState, NotFound
from virtkit.services.backupretention import SetRef
from virtkit.specs.backup import BackupKind, BackupSet

MANIFEST = "manifest.json"
PARTIAL_SUFFIX = ".partial"


def new_set_id(kind: BackupKind, now: float, taken: set[str]) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    base = f"{stamp}-{'full' if kind == 'full' else 'inc'}"
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}{n}", n + 1
    return candidate


def disk_file(target: str) -> str:
    """The image file of one disk in a set (``vda.qcow2``)."""
    return f"{target}.qcow2"


def parent_backing(parent_id: str, target: str) -> str:
    """The backing file name an incremental's image gives for its parent's image."""
    return f"../{parent_id}/{disk_file(target)}"


class BackupRoot:
    """One backup directory (the setting ``backup_dir``, or a ``--to`` directory)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def vm_dir(self, vm: str) -> Path:
        return self.path / vm

    def partial_dir(self, vm: str, set_id: str) -> Path:
        return self.vm_dir(vm) / f".{set_id}{PARTIAL_SUFFIX}"

    def set_dir(self, vm: str, set_id: str) -> Path:
        return self.vm_dir(vm) / set_id

    def vms(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(
            p.name for p in self.path.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    def sets(self, vm: str) -> list[BackupSet]:
        """A VM's whole sets, oldest first (partial ones and stray files are not sets)."""
        found = []
        vm_dir = self.vm_dir(vm)
        if not vm_dir.is_dir():
            return []
        for entry in vm_dir.iterdir():
            if entry.name.startswith(".") or not (entry / MANIFEST).is_file():
                continue
            with contextlib.suppress(ValueError, OSError):
                found.append(read_manifest(entry))
        return sorted(found, key=lambda s: (s.started, s.id))

    def get(self, vm: str, set_id: str) -> BackupSet:
        path = self.set_dir(vm, set_id)
        if set_id.startswith(".") or "/" in set_id or not (path / MANIFEST).is_file():
            raise NotFound(
                f"no backup set {set_id!r} of VM {vm!r} in {self.path}", code="backup_not_found"
            )
        return read_manifest(path)

    def latest(self, vm: str) -> BackupSet | None:
        sets = self.sets(vm)
        return sets[-1] if sets else None

    def chain(self, vm: str, set_id: str) -> list[BackupSet]:
        """The sets a restore of ``set_id`` reads: its full set, then each incremental up to it."""
        chain = [self.get(vm, set_id)]
        while chain[-1].parent is not None:
            parent = chain[-1].parent
            try:
                chain.append(self.get(vm, parent))
            except NotFound:
                raise NotFound(
                    f"backup set {chain[-1].id} of {vm!r} builds on {parent}, which is gone: "
                    "it cannot be restored",
                    code="backup_chain_broken",
                ) from None
        return list(reversed(chain))

    def at(self, vm: str, when: float) -> BackupSet:
        """The newest set made at or before ``when`` (Unix time)."""
        before = [s for s in self.sets(vm) if s.started <= when]
        if not before:
            raise NotFound(f"VM {vm!r} has no backup set from before that time",
                           code="backup_not_found")  # fmt: skip
        return before[-1]

    def refs(self, vm: str) -> list[SetRef]:
        return [SetRef(s.id, s.parent, s.started) for s in self.sets(vm)]

    def remove(self, vm: str, set_id: str) -> None:
        shutil.rmtree(self.set_dir(vm, set_id))

    @contextlib.contextmanager
    def locked(self, vm: str) -> Iterator[None]:
        """One backup of a VM into this directory at a time (across processes: run-due from a
        timer while one from the CLI runs); the lock files live in ``<root>/.locks``."""
        locks = self.path / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"{vm}.lock", "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise InvalidState(f"a backup of VM {vm!r} into {self.path} is running",
                                   code="backup_running") from None  # fmt: skip
            yield

    def leftovers(self, vm: str) -> list[Path]:
        """Partial sets (of a process that died mid-backup)."""
        vm_dir = self.vm_dir(vm)
        return sorted(vm_dir.glob(f".*{PARTIAL_SUFFIX}")) if vm_dir.is_dir() else []


def read_manifest(set_dir: Path) -> BackupSet:
    data = json.loads((set_dir / MANIFEST).read_text())
    data["path"] = str(set_dir)
    return BackupSet.model_validate(data)


def write_manifest(set_dir: Path, backup: BackupSet) -> None:
    """The manifest, flushed to disk with the images before the set is renamed into place."""
    data = backup.model_dump(mode="json", exclude={"path"})
    path = set_dir / MANIFEST
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    for disk in backup.disks:
        with open(set_dir / disk.file, "rb") as image:
            os.fsync(image.fileno())


def publish(partial: Path, final: Path) -> None:
    """Make a partial set whole: one rename, then the directory entry flushed."""
    if final.exists():
        raise InvalidInput(f"backup set {final} exists already", code="backup_exists")
    os.rename(partial, final)
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
