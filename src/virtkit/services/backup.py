"""Backups of VMs (``Client.backups``): the facade over making sets (backupcreate), restoring
and verifying them (backuprestore), retention (backupretention) and schedules (backupsched).
See docs/backup.md."""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from virtkit.backend.backupjob import BackupJob
from virtkit.backend.host import Host
from virtkit.errors import NotFound, VirtkitError
from virtkit.services import backupretention, backupsched
from virtkit.services.backupcreate import BackupCreator, BackupProgress
from virtkit.services.backuprestore import BackupRestorer, verify
from virtkit.services.backupsched import Schedules, is_due
from virtkit.services.backupset import BackupRoot
from virtkit.services.store import Store
from virtkit.services.vmfiles import VMFiles
from virtkit.specs.backup import (
    BackupResult,
    BackupSet,
    PruneResult,
    RestoreResult,
    Retention,
    RunDueResult,
    ScheduleSpec,
    ScheduleView,
    VerifyResult,
)
from virtkit.specs.states import VMState

log = logging.getLogger(__name__)


class BackupService:
    def __init__(
        self,
        host: Host,
        store: Store,
        files: VMFiles,
        backup_dir: Path,
        *,
        host_uuid: Callable[[], str],
        tags_of: Callable[[], dict[str, builtins.list[str]]],
    ) -> None:
        self.host = host
        self.backup_dir = backup_dir
        self._creator = BackupCreator(host)
        self._restorer = BackupRestorer(host, files)
        self._store = store
        self._host_uuid = host_uuid
        self._tags_of = tags_of  # VM name -> its tags

    def root(self, directory: str | Path | None = None) -> BackupRoot:
        return BackupRoot(Path(directory) if directory else self.backup_dir)

    @property
    def schedules(self) -> Schedules:
        return Schedules(self._store, self._host_uuid())

    def create(
        self,
        vm: str,
        *,
        directory: str | Path | None = None,
        full: bool = False,
        progress: BackupProgress | None = None,
        cancel: threading.Event | None = None,
    ) -> BackupResult:
        """A backup set of ``vm``: incremental where it can be (``full``: never)."""
        return self._creator.create(vm, self.root(directory), full=full, progress=progress,
                                    cancel=cancel)  # fmt: skip

    def list(self, vm: str, *, directory: str | Path | None = None) -> builtins.list[BackupSet]:
        """A VM's sets, oldest first (the VM need not exist any more)."""
        return self.root(directory).sets(vm)

    def vms(self, *, directory: str | Path | None = None) -> builtins.list[str]:
        return self.root(directory).vms()

    def get(self, vm: str, set_id: str | None = None, *, at: float | None = None,
            directory: str | Path | None = None) -> BackupSet:  # fmt: skip
        """A set by id, the newest at or before ``at``, or else the newest."""
        root = self.root(directory)
        if set_id is not None:
            return root.get(vm, set_id)
        if at is not None:
            return root.at(vm, at)
        latest = root.latest(vm)
        if latest is None:
            raise NotFound(f"VM {vm!r} has no backup set in {root.path}", code="backup_not_found")
        return latest

    def chain(
        self, backup: BackupSet, *, directory: str | Path | None = None
    ) -> builtins.list[str]:
        return [s.id for s in self.root(directory).chain(backup.vm, backup.id)]

    def verify(self, backup: BackupSet, *, directory: str | Path | None = None) -> VerifyResult:
        return verify(self.root(directory), backup)

    def restore_plan(self, backup: BackupSet) -> tuple[VMState, dict[str, str]]:
        """What a restore into the VM itself finds: its state and the files it overwrites."""
        return self._restorer.plan_in_place(backup)

    def restore(
        self,
        backup: BackupSet,
        *,
        new_name: str | None = None,
        force: bool = False,
        directory: str | Path | None = None,
        progress: BackupProgress | None = None,
        cancel: threading.Event | None = None,
    ) -> RestoreResult:
        root = self.root(directory)
        if new_name is not None:
            return self._restorer.restore_new(root, backup, new_name, progress=progress,
                                              cancel=cancel)  # fmt: skip
        return self._restorer.restore_in_place(root, backup, force=force, progress=progress,
                                               cancel=cancel)  # fmt: skip

    def prune(
        self,
        vm: str,
        policy: Retention,
        *,
        directory: str | Path | None = None,
        dry_run: bool = False,
    ) -> PruneResult:
        """Remove the sets ``policy`` does not keep (whole chains only), and their checkpoints."""
        root = self.root(directory)
        sets = {s.id: s for s in root.sets(vm)}
        kept, removed = backupretention.select(root.refs(vm), policy)
        checkpoints = [sets[i].checkpoint for i in removed if sets[i].checkpoint]
        dropped: builtins.list[str] = []
        if not dry_run:
            for set_id in removed:
                root.remove(vm, set_id)
            dropped = self._delete_checkpoints(vm, [c for c in checkpoints if c])
        return PruneResult(vm=vm, kept=kept, removed=removed,
                           checkpoints_removed=dropped if not dry_run else
                           [c for c in checkpoints if c], dry_run=dry_run)  # fmt: skip

    def _delete_checkpoints(self, vm: str, names: builtins.list[str]) -> builtins.list[str]:
        try:
            job = BackupJob(self.host.connection, self.host.lookup(vm))
        except NotFound:
            return []
        dropped = []
        for name in names:
            try:
                if job.delete_checkpoint(name):
                    dropped.append(name)
            except VirtkitError as exc:
                # e.g. a stopped VM's bitmaps that libvirt cannot edit: drop the record only
                log.warning("checkpoint %s of %s: %s; removing its metadata only", name, vm, exc)
                with contextlib.suppress(VirtkitError):
                    if job.delete_checkpoint(name, metadata_only=True):
                        dropped.append(name)
        return dropped

    # -- schedules ------------------------------------------------------------------------------

    def add_schedule(self, spec: ScheduleSpec) -> ScheduleView:
        return self.schedules.add(spec)

    def list_schedules(self) -> builtins.list[ScheduleView]:
        return self.schedules.list()

    def remove_schedule(self, schedule_id: int) -> ScheduleView:
        return self.schedules.remove(schedule_id)

    def schedule_vms(self, view: ScheduleView) -> builtins.list[str]:
        if view.vm is not None:
            return [view.vm]
        return sorted(vm for vm, tags in self._tags_of().items() if view.tag in tags)

    def run_due(
        self,
        *,
        now: float | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> RunDueResult:
        """Run every due schedule (a backup of each of its VMs), then prune by its policy."""
        lock_dir = self._store.path.parent
        lock_dir.mkdir(parents=True, exist_ok=True)
        with open(lock_dir / "backup-run-due.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                # the timer fires each minute; a long backup must not be started twice
                log.info("another backup run-due is still running")
                return RunDueResult(ran=[], pruned=[], failed=0)
            return self._run_due(time.time() if now is None else now, progress)

    def _run_due(self, now: float, progress: Callable[[str], None] | None) -> RunDueResult:
        ran: builtins.list[str] = []
        pruned: builtins.list[PruneResult] = []
        failed = 0
        for view in self.schedules.list():
            if not is_due(view, now):
                continue
            results = []
            for vm in self.schedule_vms(view):
                try:
                    made = self.create(vm, directory=view.dir)
                    line = f"{view.id}: {vm} -> {made.set.id} ({made.set.kind})"
                    pruned.append(self.prune(vm, view.retention, directory=view.dir))
                except VirtkitError as exc:
                    failed += 1
                    line = f"{view.id}: {vm} -> failed: {exc}"
                    log.error("scheduled backup of %s failed: %s", vm, exc)
                if progress is not None:
                    progress(line)
                ran.append(line)
                results.append(line)
            self.schedules.mark_run(view.id, now, "; ".join(results) or "no VM matched")
        return RunDueResult(ran=ran, pruned=pruned, failed=failed)

    # -- the timer that runs run-due --------------------------------------------------------------

    def timer_files(
        self, kind: str, virtkit: str, env: dict[str, str] | None = None
    ) -> dict[str, str]:
        return backupsched.timer_files(kind, virtkit, env)

    def install_timer(
        self, kind: str, target_dir: Path, virtkit: str, env: dict[str, str] | None = None
    ) -> builtins.list[Path]:
        return backupsched.install_timer(kind, target_dir, virtkit, env)
