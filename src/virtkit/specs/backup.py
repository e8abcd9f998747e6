"""Backups: what a backup set is (its manifest), what a backup, verify, restore and prune report,
and backup schedules with their retention policy."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from virtkit.specs.common import Name, _Spec, _View

BackupKind = Literal["full", "incremental"]
BackupMethod = Literal["backup-api", "copy"]


class BackupDisk(_View):
    target: str = Field(description="The disk's target in the VM (vda).")
    file: str = Field(description="The backup image, relative to the set's directory.")
    format: str = Field(description="The backup image's format (qcow2).")
    source: str = Field(description="The VM's disk file at backup time.")
    source_format: str = Field(description="The VM's disk format (qcow2, raw).")
    virtual_size: int = Field(description="The disk's size as the guest sees it, in bytes.")
    file_size: int = Field(description="Bytes the backup image takes on disk.")
    sha256: str = Field(description="SHA-256 of the backup image file.")


class BackupSet(_View):
    """One backup set: a directory with one image per disk and this manifest (manifest.json)."""

    id: str = Field(description="The set's name, its directory: <UTC time>-<kind>.")
    vm: str
    vm_uuid: str
    kind: BackupKind
    method: BackupMethod = Field(description="libvirt's backup job, or a copy of a stopped VM.")
    parent: str | None = Field(None, description="The set an incremental builds on.")
    checkpoint: str | None = Field(None, description="The libvirt checkpoint this set made.")
    started: float = Field(description="Unix time.")
    finished: float
    fallback: str | None = Field(None, description="Why a full backup was made instead.")
    disks: list[BackupDisk]
    domain_xml: str = Field(description="The VM's persistent definition at backup time.")
    virtkit_version: str
    path: str = Field("", description="The set's directory (filled in when read).")

    @property
    def size(self) -> int:
        return sum(d.file_size for d in self.disks)


class BackupResult(_View):
    set: BackupSet
    notes: list[str] = Field(default_factory=list, description="What the user should know.")


class DiskCheck(_View):
    target: str
    file: str
    checksum_ok: bool
    image_ok: bool
    message: str = ""


class VerifyResult(_View):
    set: str
    vm: str
    ok: bool
    disks: list[DiskCheck]
    chain: list[str] = Field(description="The sets a restore of this one reads, oldest first.")


class RestoreResult(_View):
    vm: str = Field(description="The VM restored into.")
    new_vm: bool
    set: str
    chain: list[str]
    disks: dict[str, str] = Field(description="Disk target -> the file written.")
    notes: list[str] = Field(default_factory=list)


class PruneResult(_View):
    vm: str
    kept: list[str]
    removed: list[str]
    checkpoints_removed: list[str]
    dry_run: bool = False


class Retention(_Spec):
    """Which sets prune keeps: the last N, the newest of each of the last D days and W weeks
    that have a set; every set a kept one builds on is kept too."""

    keep_last: int = Field(3, ge=1, description="The newest N sets (at least 1).")
    keep_daily: int = Field(0, ge=0, description="The newest set of each of the last D days.")
    keep_weekly: int = Field(0, ge=0, description="The newest set of each of the last W weeks.")


class ScheduleSpec(_Spec):
    vm: Name | None = Field(None, description="One VM ...")
    tag: str | None = Field(None, description="... or every VM with this tag.")
    cron: str = Field(description="When: 5 cron fields (minute hour day month weekday), UTC.")
    retention: Retention = Field(default_factory=Retention)
    dir: str | None = Field(None, description="Backup directory (default: the setting).")

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        from virtkit.specs.cron import parse_cron

        parse_cron(value)
        return " ".join(value.split())


class ScheduleView(_View):
    id: int
    vm: str | None
    tag: str | None
    cron: str
    retention: Retention
    dir: str | None
    created: float
    last_run: float | None = None
    last_result: str | None = None


class RunDueResult(_View):
    ran: list[str] = Field(description="<schedule id>: <vm> -> <set id or error>.")
    pruned: list[PruneResult]
    failed: int
