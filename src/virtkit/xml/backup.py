"""Typed classes for libvirt's backup and checkpoint XML
(https://libvirt.org/formatbackup.html, https://libvirt.org/formatcheckpoint.html)."""

from __future__ import annotations

from virtkit.xml.base import Children, XMLObject, attr, int_text, text


class BackupDisk(XMLObject):
    """One disk of a backup job: ``backup='no'``, or a push target file."""

    TAG = "disk"
    name = attr("", "name")  # the disk's target (vda) or its source path
    backup = attr("", "backup")  # yes / no
    type = attr("", "type")  # file / block
    backup_mode = attr("", "backupmode")  # full / incremental (libvirt's answer)
    incremental = attr("", "incremental")  # per-disk checkpoint to start from
    target_file = attr("target", "file")
    driver_type = attr("driver", "type")  # qcow2 / raw


class DomainBackup(XMLObject):
    """``<domainbackup>``: what ``virDomainBackupBegin`` is asked to do."""

    TAG = "domainbackup"
    mode = attr("", "mode")  # push (libvirt's default) / pull
    incremental = text("incremental")  # the checkpoint whose changes since are copied
    disks = Children(BackupDisk, "disks/disk")


class CheckpointDisk(XMLObject):
    TAG = "disk"
    name = attr("", "name")
    checkpoint = attr("", "checkpoint")  # bitmap / no
    bitmap = attr("", "bitmap")


class DomainCheckpoint(XMLObject):
    """``<domaincheckpoint>``: a point whose changes since a later incremental backup copies."""

    TAG = "domaincheckpoint"
    name = text("name")
    description = text("description")
    parent = text("parent/name")
    creation_time = int_text("creationTime")
    disks = Children(CheckpointDisk, "disks/disk")


def push_backup(
    targets: dict[str, str], skipped: list[str], *, incremental: str | None = None
) -> DomainBackup:
    """A push-mode backup writing each disk of ``targets`` (target dev -> qcow2 file); the disks
    in ``skipped`` are left out; ``incremental``: only what changed since that checkpoint."""
    backup = DomainBackup()
    backup.mode = "push"
    if incremental is not None:
        backup.incremental = incremental
    for dev, path in targets.items():
        disk = backup.disks.append(BackupDisk())
        disk.name = dev
        disk.backup = "yes"
        disk.type = "file"
        disk.target_file = path
        disk.driver_type = "qcow2"
    for dev in skipped:
        disk = backup.disks.append(BackupDisk())
        disk.name = dev
        disk.backup = "no"
    return backup


def checkpoint(
    name: str, disks: list[str], skipped: list[str], description: str
) -> DomainCheckpoint:
    """A checkpoint with a dirty bitmap on each disk of ``disks``."""
    ck = DomainCheckpoint()
    ck.name = name
    ck.description = description
    for dev in disks:
        disk = ck.disks.append(CheckpointDisk())
        disk.name = dev
        disk.checkpoint = "bitmap"
    for dev in skipped:
        disk = ck.disks.append(CheckpointDisk())
        disk.name = dev
        disk.checkpoint = "no"
    return ck


__all__ = [
    "BackupDisk",
    "CheckpointDisk",
    "DomainBackup",
    "DomainCheckpoint",
    "checkpoint",
    "push_backup",
]
