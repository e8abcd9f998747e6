"""Making a backup set: a running VM through libvirt's backup job (full, or incremental since
the previous set's checkpoint, into a qcow2 made on the previous set's image), a stopped VM by
a copy of each disk's chain. A transaction: on failure or cancel no set directory, no partial
file and no new checkpoint remain."""

from __future__ import annotations

import builtins
import contextlib
import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from virtkit._version import __version__
from virtkit.backend.backupjob import BackupJob, backup_api_available
from virtkit.backend.guest import Guest
from virtkit.backend.host import Host
from virtkit.errors import (
    BackendError,
    Cancelled,
    ConnectionLost,
    InvalidInput,
    NotFound,
    Unsupported,
    VirtkitError,
)
from virtkit.services import backupimg
from virtkit.services.backupset import (
    PARTIAL_SUFFIX,
    BackupRoot,
    disk_file,
    new_set_id,
    parent_backing,
    publish,
    write_manifest,
)
from virtkit.services.qemuimg import qemu_img_info
from virtkit.services.transaction import Transaction
from virtkit.services.vmstate import lookup
from virtkit.specs import VMState
from virtkit.specs.backup import BackupDisk, BackupKind, BackupResult, BackupSet
from virtkit.xml.backup import checkpoint, push_backup
from virtkit.xml.domain import Domain

log = logging.getLogger(__name__)

# (phase, bytes done, bytes in all)
BackupProgress = Callable[[str, int, int | None], None]
POLL = 0.2
RECONNECT_FOR = 60.0  # seconds a lost libvirtd may take to come back during a backup
ABORT_WAIT = 30.0
CHECKPOINT_PREFIX = "virtkit-"


@dataclass(frozen=True)
class SourceDisk:
    target: str
    path: str
    format: str
    virtual_size: int


@dataclass(frozen=True)
class Plan:
    kind: BackupKind
    parent: BackupSet | None
    fallback: str | None  # why a full backup, where an incremental was wanted
    checkpoint: bool  # make a checkpoint (every disk is qcow2)


def source_disks(dom: Domain, name: str) -> builtins.list[SourceDisk]:
    """The disks a backup copies: every writable disk with a source (CD-ROMs and read-only
    disks are left out)."""
    disks = []
    for disk in dom.disks:
        if disk.device != "disk" or disk.readonly:
            continue
        path = disk.source_file or disk.source_dev
        if not path or not disk.target_dev:
            continue
        info = qemu_img_info(path, fmt=disk.driver_type, force_share=True)
        disks.append(
            SourceDisk(disk.target_dev, path, disk.driver_type or str(info.get("format")),
                       int(str(info["virtual-size"])))
        )  # fmt: skip
    if not disks:
        raise InvalidInput(f"VM {name!r} has no disk to back up", code="nothing_to_back_up")
    return disks


def plan_live(
    disks: builtins.list[SourceDisk],
    latest: BackupSet | None,
    chain_whole: bool,
    uuid: str,
    checkpoint_exists: Callable[[str], bool],
    *,
    full: bool,
) -> Plan:
    """Full or incremental for a running VM, and why a full one where an incremental was
    asked for (pure, but for the checkpoint lookup)."""
    raw = [d.target for d in disks if d.format != "qcow2"]
    if raw:
        why = (
            f"disk {', '.join(raw)} is {disks[[d.target for d in disks].index(raw[0])].format}: "
            "incremental backups need qcow2 disks (dirty bitmaps)"
        )
        return Plan("full", None, None if full else why, checkpoint=False)
    if full:
        return Plan("full", None, None, checkpoint=True)
    reason = _no_incremental(disks, latest, chain_whole, uuid, checkpoint_exists)
    if reason is not None:
        return Plan("full", None, reason, checkpoint=True)
    return Plan("incremental", latest, None, checkpoint=True)


def _no_incremental(
    disks: builtins.list[SourceDisk],
    latest: BackupSet | None,
    chain_whole: bool,
    uuid: str,
    checkpoint_exists: Callable[[str], bool],
) -> str | None:
    if latest is None:
        return "there is no previous backup set to build on"
    if latest.vm_uuid != uuid:
        return f"the previous set {latest.id} is of another VM of that name"
    if latest.checkpoint is None:
        return f"the previous set {latest.id} made no checkpoint ({latest.method} backup)"
    if not chain_whole:
        return f"the chain of the previous set {latest.id} is broken"
    if not checkpoint_exists(latest.checkpoint):
        return f"the checkpoint {latest.checkpoint} of the previous set is gone from libvirt"
    then = {(d.target, d.virtual_size) for d in latest.disks}
    if then != {(d.target, d.virtual_size) for d in disks}:
        return f"the VM's disks changed since the previous set {latest.id}"
    return None


class BackupCreator:
    def __init__(self, host: Host) -> None:
        self.host = host

    def create(
        self,
        name: str,
        root: BackupRoot,
        *,
        full: bool = False,
        progress: BackupProgress | None = None,
        cancel: threading.Event | None = None,
    ) -> BackupResult:
        if not self.host.is_local:
            raise Unsupported("backups are written on the local host: connect to a local libvirt")
        guest = lookup(self.host, name)
        with root.locked(name):
            self._remove_leftovers(guest, root, name)
            return self._create(guest, name, root, full=full, progress=progress, cancel=cancel)

    def _remove_leftovers(self, guest: Guest, root: BackupRoot, name: str) -> None:
        """What a backup of a process that died left (under the lock, so none runs now): its
        partial set and the checkpoint it made."""
        for partial in root.leftovers(name):
            set_id = partial.name[1:].removesuffix(PARTIAL_SUFFIX)
            log.warning("removing %s, left by a backup that did not finish", partial)
            shutil.rmtree(partial, ignore_errors=True)
            with contextlib.suppress(VirtkitError):
                BackupJob(self.host.connection, guest).delete_checkpoint(CHECKPOINT_PREFIX + set_id)

    def _create(
        self,
        guest: Guest,
        name: str,
        root: BackupRoot,
        *,
        full: bool,
        progress: BackupProgress | None,
        cancel: threading.Event | None,
    ) -> BackupResult:
        state = guest.state()[0]
        live = state in (VMState.RUNNING, VMState.PAUSED)
        if not live and state != VMState.SHUTOFF:
            raise InvalidInput(f"VM {name!r} is {state.value}: back it up running or shut off",
                               code="vm_state_unsuitable")  # fmt: skip
        domain_xml = guest.xml(inactive=guest.is_persistent())
        dom = guest.definition() if live else Domain.parse(domain_xml)
        disks = source_disks(dom, name)
        uuid = guest.uuid
        started = time.time()
        taken = {s.id for s in root.sets(name)}
        if live:
            if not backup_api_available(self.host.connection):
                raise Unsupported(
                    "this libvirt has no backup API (7.6 or later): shut the VM off to back it "
                    "up by a copy"
                )
            plan = self._plan(guest, disks, root, name, uuid, full=full)
        else:
            why = None if full else "the VM is shut off: each disk is copied whole (qemu-img)"
            plan = Plan("full", None, why, checkpoint=False)
        set_id = new_set_id(plan.kind, started, taken)
        partial = root.partial_dir(name, set_id)
        with Transaction(f"backing up {name}") as tx:
            partial.mkdir(parents=True)
            tx.on_rollback(f"remove {partial}", lambda: shutil.rmtree(partial, ignore_errors=True))
            if live:
                ck = self._run_job(guest, uuid, disks, plan, set_id, partial, tx, progress, cancel)
            else:
                ck = None
                self._copy(disks, partial, progress, cancel)
            copied = time.time()
            described = self._describe(disks, partial, progress)
            hashed = time.time()
            backup = BackupSet(
                id=set_id,
                vm=name,
                vm_uuid=uuid,
                kind=plan.kind,
                method="backup-api" if live else "copy",
                parent=plan.parent.id if plan.parent else None,
                checkpoint=ck,
                started=started,
                finished=copied,
                fallback=plan.fallback,
                disks=described,
                domain_xml=domain_xml,
                virtkit_version=__version__,
            )
            write_manifest(partial, backup)
            final = root.set_dir(name, set_id)
            publish(partial, final)
        made = backup.model_copy(update={"path": str(final)})
        log.info("backed up %s: set %s (%s): copy %.2f s, checksums %.2f s, flush %.2f s",
                 name, set_id, plan.kind, copied - started, hashed - copied,
                 time.time() - hashed)  # fmt: skip
        return BackupResult(set=made, notes=_notes(made))

    def _plan(
        self,
        guest: Guest,
        disks: builtins.list[SourceDisk],
        root: BackupRoot,
        name: str,
        uuid: str,
        *,
        full: bool,
    ) -> Plan:
        latest = root.latest(name)
        chain_whole = True
        if latest is not None:
            try:
                root.chain(name, latest.id)
            except NotFound:
                chain_whole = False
        job = BackupJob(self.host.connection, guest)
        return plan_live(disks, latest, chain_whole, uuid,
                         lambda ck: job.checkpoint_xml(ck) is not None, full=full)  # fmt: skip

    # -- the libvirt backup job ---------------------------------------------------------------

    def _job(self, uuid: str) -> BackupJob:
        return BackupJob(self.host.connection, self.host.guest_by_uuid(uuid))

    def _run_job(
        self,
        guest: Guest,
        uuid: str,
        disks: builtins.list[SourceDisk],
        plan: Plan,
        set_id: str,
        partial: Path,
        tx: Transaction,
        progress: BackupProgress | None,
        cancel: threading.Event | None,
    ) -> str | None:
        """Run the backup job to its end; returns the checkpoint it made."""
        targets = {d.target: str(partial / disk_file(d.target)) for d in disks}
        skipped = self._other_disks(guest, set(targets))
        # an incremental's targets are made on the parent's images (REUSE_EXTERNAL); a full
        # backup's, by libvirt (pre-made ones with preallocated metadata were measured: no
        # faster, within the noise, and as long as the disk: docs/benchmarks.md)
        reuse = plan.parent is not None
        if plan.parent is not None:
            for d in disks:
                backupimg.create_overlay(partial / disk_file(d.target),
                                         parent_backing(plan.parent.id, d.target),
                                         d.virtual_size)  # fmt: skip
        ck_name = CHECKPOINT_PREFIX + set_id if plan.checkpoint else None
        backup_xml = push_backup(
            targets, skipped, incremental=plan.parent.checkpoint if plan.parent else None
        ).to_xml()
        ck_xml = (
            checkpoint(ck_name, list(targets), skipped, f"virtkit backup set {set_id}").to_xml()
            if ck_name
            else None
        )
        # registered first: a job that fails to start makes no checkpoint (nothing to undo)
        tx.on_rollback("end the backup job", lambda: self._end_job(uuid, ck_name))
        BackupJob(self.host.connection, guest).begin(backup_xml, ck_xml, reuse_external=reuse)
        self._wait(uuid, guest, progress, cancel)
        return ck_name

    def _other_disks(self, guest: Guest, backed_up: set[str]) -> builtins.list[str]:
        """Every other disk (CD-ROMs too) named with ``backup='no'``."""
        return [
            d.target_dev
            for d in guest.definition().disks
            if d.target_dev and d.target_dev not in backed_up and (d.source_file or d.source_dev)
        ]

    def _wait(
        self,
        uuid: str,
        guest: Guest,
        progress: BackupProgress | None,
        cancel: threading.Event | None,
    ) -> None:
        job = BackupJob(self.host.connection, guest)
        phase = "backing up"
        while True:
            try:
                if cancel is not None and cancel.is_set():
                    job.abort()
                    raise Cancelled("the backup was cancelled")
                now = job.progress()
                if not now.active:
                    break
                if progress is not None and now.backup:
                    progress(phase, now.processed, now.total or None)
            except ConnectionLost:
                log.warning("libvirtd went away during the backup; reconnecting")
                job = self._reconnect(uuid)
            time.sleep(POLL)
        outcome = job.outcome()
        if outcome.cancelled:
            raise Cancelled("the backup job was cancelled (abortJob)")
        if not outcome.known:
            raise BackendError(
                "the backup job ended without a result (was libvirtd restarted?): "
                "the set is discarded"
            )
        if not outcome.ok:
            raise BackendError(f"the backup job failed: {outcome.message or 'no reason given'}")
        if progress is not None:
            progress(phase, outcome.processed, outcome.total or None)

    def _reconnect(self, uuid: str) -> BackupJob:
        deadline = time.monotonic() + RECONNECT_FOR
        while True:
            try:
                return self._job(uuid)
            except VirtkitError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _end_job(self, uuid: str, ck_name: str | None) -> None:
        """Undo of a backup job: abort it if it runs, wait for its end, delete its checkpoint."""
        job = self._reconnect(uuid)
        deadline = time.monotonic() + ABORT_WAIT
        with contextlib.suppress(VirtkitError):
            if job.progress().active:
                job.abort()
        while time.monotonic() < deadline:
            try:
                if not job.progress().active:
                    break
            except ConnectionLost:
                job = self._reconnect(uuid)
            time.sleep(POLL)
        if ck_name is not None and job.delete_checkpoint(ck_name):
            log.info("deleted checkpoint %s of the failed backup", ck_name)

    # -- a stopped VM: copies -----------------------------------------------------------------

    def _copy(
        self,
        disks: builtins.list[SourceDisk],
        partial: Path,
        progress: BackupProgress | None,
        cancel: threading.Event | None,
    ) -> None:
        total = sum(d.virtual_size for d in disks)
        done = 0
        for d in disks:

            def report(
                percent: float, base: int = done, size: int = d.virtual_size, phase: str = d.target
            ) -> None:
                if progress is not None:
                    progress(f"copying {phase}", base + int(size * percent / 100), total)

            backupimg.convert(d.path, partial / disk_file(d.target), source_format=d.format,
                              force_share=True, progress=report, cancel=cancel)  # fmt: skip
            done += d.virtual_size

    def _describe(
        self, disks: builtins.list[SourceDisk], partial: Path, progress: BackupProgress | None
    ) -> builtins.list[BackupDisk]:
        result = []
        for d in disks:
            image = partial / disk_file(d.target)
            size = backupimg.allocated(image)

            def report(done: int, size: int = image.stat().st_size, target: str = d.target) -> None:
                if progress is not None:
                    progress(f"checksum of {target}", done, size)

            result.append(
                BackupDisk(target=d.target, file=image.name, format="qcow2", source=d.path,
                           source_format=d.format, virtual_size=d.virtual_size, file_size=size,
                           sha256=backupimg.sha256(image, report))
            )  # fmt: skip
        return result


def _notes(made: BackupSet) -> builtins.list[str]:
    notes = []
    if made.fallback:
        notes.append(f"full backup instead of an incremental: {made.fallback}")
    if made.kind == "incremental":
        notes.append(f"incremental on {made.parent}")
    return notes
