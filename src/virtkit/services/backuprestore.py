"""Restoring a backup set (its full set plus the incrementals up to it: one ``qemu-img
convert`` of the chain's top image per disk), into the VM it came from or into a new VM; and
verifying a set without restoring it."""

from __future__ import annotations

import builtins
import contextlib
import functools
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from virtkit.backend.backupjob import BackupJob
from virtkit.backend.host import Host
from virtkit.errors import AlreadyExists, InvalidInput, InvalidState, VirtkitError
from virtkit.services import backupimg
from virtkit.services.backupset import BackupRoot
from virtkit.services.nics import macs_in_use
from virtkit.services.transaction import Transaction
from virtkit.services.vmclone import disown_disks, point_at_copy, rename_serial_logs, renew_identity
from virtkit.services.vmfiles import VMFiles
from virtkit.services.vmstate import lookup
from virtkit.specs import VMState, validate_name
from virtkit.specs.backup import BackupSet, DiskCheck, RestoreResult, VerifyResult
from virtkit.xml.domain import Disk, Domain
from virtkit.xml.storage import Pool

log = logging.getLogger(__name__)

RestoreProgress = Callable[[str, int, int | None], None]


def top_image(backup: BackupSet, target: str) -> Path:
    disk = next(d for d in backup.disks if d.target == target)
    return Path(backup.path) / disk.file


def overwritten(dom: Domain, backup: BackupSet) -> dict[str, str]:
    """What a restore into the VM overwrites: disk target -> its file now. Every disk of the
    set must still be there."""
    current = {d.target_dev: d for d in dom.disks if d.device == "disk" and d.target_dev}
    result = {}
    for disk in backup.disks:
        found = current.get(disk.target)
        path = found.source_file if found is not None else None
        if path is None:
            raise InvalidInput(
                f"VM {backup.vm!r} has no file disk {disk.target} any more: restore the set into "
                "a new VM (--new-name)",
                code="backup_disks_changed",
            )
        result[disk.target] = path
    return result


class BackupRestorer:
    def __init__(self, host: Host, files: VMFiles) -> None:
        self.host = host
        self.files = files

    def plan_in_place(self, backup: BackupSet) -> tuple[VMState, dict[str, str]]:
        """The VM's state and the files a restore into it overwrites (target -> path)."""
        guest = lookup(self.host, backup.vm)
        return guest.state()[0], overwritten(guest.config(), backup)

    def restore_in_place(
        self,
        root: BackupRoot,
        backup: BackupSet,
        *,
        force: bool = False,
        progress: RestoreProgress | None = None,
        cancel: threading.Event | None = None,
    ) -> RestoreResult:
        chain = root.chain(backup.vm, backup.id)
        guest = lookup(self.host, backup.vm)
        targets = overwritten(guest.config(), backup)
        state = guest.state()[0]
        if state != VMState.SHUTOFF:
            if not force:
                raise InvalidState(
                    f"VM {backup.vm!r} is {state.value}: shut it off first, or pass --force to "
                    "power it off for the restore",
                    code="vm_running",
                )
            guest.destroy()
        temps: dict[str, Path] = {}
        with Transaction(f"restoring {backup.vm} from {backup.id}") as tx:
            for index, disk in enumerate(backup.disks):
                dest = Path(targets[disk.target])
                temp = dest.with_name(f".{dest.name}.vkrestore")
                tx.on_rollback(f"remove {temp}", functools.partial(_unlink, temp))
                self._convert(backup, disk.target, temp, disk.source_format, index, progress,
                              cancel)  # fmt: skip
                temps[disk.target] = temp
            # the point of no return: each file replaced by one rename, keeping its owner and mode
            for target, temp in temps.items():
                dest = Path(targets[target])
                with contextlib.suppress(OSError):
                    st = dest.stat()
                    os.chown(temp, st.st_uid, st.st_gid)
                    os.chmod(temp, st.st_mode & 0o7777)
                os.replace(temp, dest)
        notes = [f"overwrote {targets[t]}" for t in temps]
        dropped = self._forget_checkpoints(backup.vm)
        if dropped:
            notes.append(
                f"removed {len(dropped)} checkpoint(s) whose bitmaps went with the old disks; "
                "the next backup is a full one"
            )
        log.info("restored %s from %s", backup.vm, backup.id)
        return RestoreResult(vm=backup.vm, new_vm=False, set=backup.id,
                             chain=[s.id for s in chain], disks=targets, notes=notes)  # fmt: skip

    def _forget_checkpoints(self, vm: str) -> builtins.list[str]:
        job = BackupJob(self.host.connection, lookup(self.host, vm))
        names = job.checkpoint_names()
        for name in names:
            with contextlib.suppress(VirtkitError):
                job.delete_checkpoint(name, metadata_only=True)
        return names

    def restore_new(
        self,
        root: BackupRoot,
        backup: BackupSet,
        new_name: str,
        *,
        progress: RestoreProgress | None = None,
        cancel: threading.Event | None = None,
    ) -> RestoreResult:
        """A new VM from the set: the definition at backup time with a new name, UUID and
        MACs, and new disks in the VM pool."""
        validate_name(new_name)
        chain = root.chain(backup.vm, backup.id)
        if self.host.exists(new_name):
            raise AlreadyExists(f"a VM named {new_name!r} already exists", code="vm_exists")
        dom = Domain.parse(backup.domain_xml)
        renew_identity(dom, new_name, macs_in_use(self.host))
        rename_serial_logs(dom, self.files.serial_log(new_name))
        disown_disks(dom)
        by_target: dict[str, Disk] = {d.target_dev or "": d for d in dom.disks}
        made: dict[str, str] = {}
        with Transaction(f"restoring {backup.id} of {backup.vm} as {new_name}") as tx:
            self.files.ensure_pool(self.host, tx)
            pool_dir = self._pool_dir()
            taken = {p.name for p in pool_dir.iterdir()} if pool_dir.is_dir() else set()
            for index, disk in enumerate(backup.disks):
                name = self.files.free_disk_volume(new_name, taken)
                taken.add(name)
                path = pool_dir / name
                if path.exists():
                    raise AlreadyExists(f"{path} exists already", code="volume_exists")
                tx.on_rollback(f"remove {path}", functools.partial(_unlink, path))
                self._convert(backup, disk.target, path, "qcow2", index, progress, cancel)
                point_at_copy(dom, by_target[disk.target], str(path), "qcow2")
                made[disk.target] = str(path)
            with contextlib.suppress(VirtkitError):
                self.host.storage.refresh_pool(self.files.pool)
            self.host.define(dom.to_xml())
        log.info("restored %s of %s as the new VM %s", backup.id, backup.vm, new_name)
        return RestoreResult(vm=new_name, new_vm=True, set=backup.id,
                             chain=[s.id for s in chain], disks=made)  # fmt: skip

    def _pool_dir(self) -> Path:
        xml = self.host.storage.pool_xml(self.files.pool)
        path = Pool.parse(xml).target_path if xml else None
        return Path(path) if path else self.files.pool_path

    def _convert(
        self,
        backup: BackupSet,
        target: str,
        dest: Path,
        fmt: str,
        index: int,
        progress: RestoreProgress | None,
        cancel: threading.Event | None,
    ) -> None:
        size = next(d.virtual_size for d in backup.disks if d.target == target)
        total = sum(d.virtual_size for d in backup.disks)
        base = sum(d.virtual_size for d in backup.disks[:index])

        def report(percent: float) -> None:
            if progress is not None:
                progress(f"restoring {target}", base + int(size * percent / 100), total)

        backupimg.convert(str(top_image(backup, target)), dest, source_format="qcow2",
                          target_format=fmt, progress=report, cancel=cancel)  # fmt: skip


def verify(root: BackupRoot, backup: BackupSet) -> VerifyResult:
    """Each disk's checksum and ``qemu-img check``, and that the chain below is whole."""
    checks = []
    for disk in backup.disks:
        path = Path(backup.path) / disk.file
        if not path.is_file():
            checks.append(DiskCheck(target=disk.target, file=str(path), checksum_ok=False,
                                    image_ok=False, message="the file is missing"))  # fmt: skip
            continue
        digest = backupimg.sha256(path)
        image_ok, said = backupimg.check(path)
        message = "" if digest == disk.sha256 else "checksum differs from the manifest"
        if not image_ok:
            message = "; ".join(m for m in (message, said) if m)
        checks.append(DiskCheck(target=disk.target, file=str(path),
                                checksum_ok=digest == disk.sha256, image_ok=image_ok,
                                message=message))  # fmt: skip
    try:
        chain = [s.id for s in root.chain(backup.vm, backup.id)]
        chain_ok = True
    except VirtkitError as exc:
        chain, chain_ok = [str(exc)], False
    ok = chain_ok and all(c.checksum_ok and c.image_ok for c in checks)
    return VerifyResult(set=backup.id, vm=backup.vm, ok=ok, disks=checks, chain=chain)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
