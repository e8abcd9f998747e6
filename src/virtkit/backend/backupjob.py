"""libvirt's backup API for one domain: push-mode backup jobs (``virDomainBackupBegin``),
checkpoints (``virDomainCheckpoint*``), the job's statistics and its abort. libvirt 7.6 and
later; every call runs inside the seam's error map."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import libvirt

from virtkit.backend.guest import Guest, seam

if TYPE_CHECKING:
    from virtkit.backend.connection import Connection

# the first libvirt whose QEMU driver has the backup API enabled by default
BACKUP_API_VERSION = 7_006_000

_JOB_NONE = libvirt.VIR_DOMAIN_JOB_NONE
_JOB_COMPLETED = libvirt.VIR_DOMAIN_JOB_COMPLETED
_JOB_CANCELLED = libvirt.VIR_DOMAIN_JOB_CANCELLED
_OP_BACKUP = getattr(libvirt, "VIR_DOMAIN_JOB_OPERATION_BACKUP", 9)


@dataclass(frozen=True)
class JobProgress:
    """The domain's current job: whether one runs, and its bytes processed of total."""

    active: bool
    backup: bool  # the running job is a backup (not a migration, dump, ...)
    processed: int
    total: int


@dataclass(frozen=True)
class JobOutcome:
    """How the last job ended, from libvirt's statistics of the completed job."""

    known: bool  # False: libvirt kept no statistics (e.g. libvirtd restarted meanwhile)
    ok: bool
    cancelled: bool
    processed: int
    total: int
    message: str


def backup_api_available(connection: Connection) -> bool:
    """Whether this libvirt (and its python binding) has the backup API."""
    if not hasattr(libvirt.virDomain, "backupBegin"):
        return False
    with seam(connection):
        return int(connection.get().getLibVersion()) >= BACKUP_API_VERSION


class BackupJob:
    """The backup API of one domain (``guest``)."""

    def __init__(self, connection: Connection, guest: Guest) -> None:
        self._connection = connection
        self._dom = guest.handle

    def begin(self, backup_xml: str, checkpoint_xml: str | None, *, reuse_external: bool) -> None:
        """Start a backup job (and make the checkpoint with it, atomically)."""
        flags = libvirt.VIR_DOMAIN_BACKUP_BEGIN_REUSE_EXTERNAL if reuse_external else 0
        with seam(self._connection):
            self._dom.backupBegin(backup_xml, checkpoint_xml, flags)

    def progress(self) -> JobProgress:
        with seam(self._connection):
            stats = self._dom.jobStats()
        kind = int(stats.get("type", _JOB_NONE))
        return JobProgress(
            active=kind != _JOB_NONE,
            backup=int(stats.get("operation", _OP_BACKUP)) == _OP_BACKUP,
            processed=int(stats.get("disk_processed", 0)),
            total=int(stats.get("disk_total", 0)),
        )

    def outcome(self) -> JobOutcome:
        """The completed job's statistics (libvirt forgets them once read)."""
        with seam(self._connection):
            stats = self._dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        kind = int(stats.get("type", _JOB_NONE))
        ok = kind == _JOB_COMPLETED and bool(stats.get("success", True))
        return JobOutcome(
            known=kind != _JOB_NONE,
            ok=ok,
            cancelled=kind == _JOB_CANCELLED,
            processed=int(stats.get("disk_processed", 0)),
            total=int(stats.get("disk_total", 0)),
            message=str(stats.get("errmsg", "")),
        )

    def abort(self) -> None:
        with seam(self._connection):
            self._dom.abortJob()

    def checkpoint_names(self) -> list[str]:
        with seam(self._connection):
            return [str(c.getName()) for c in self._dom.listAllCheckpoints(0)]

    def checkpoint_xml(self, name: str) -> str | None:
        """A checkpoint's XML (without the domain in it), None if there is none of that name."""
        with seam(self._connection):
            try:
                ck = self._dom.checkpointLookupByName(name, 0)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_CHECKPOINT:
                    return None
                raise
            return str(ck.getXMLDesc(libvirt.VIR_DOMAIN_CHECKPOINT_XML_NO_DOMAIN))

    def delete_checkpoint(self, name: str, *, metadata_only: bool = False) -> bool:
        """Delete a checkpoint (its bitmaps merged into the neighbours, so later checkpoints
        stay right; ``metadata_only``: libvirt's record only, where the bitmaps are gone).
        False if there was none of that name."""
        flags = libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY if metadata_only else 0
        with seam(self._connection):
            try:
                ck = self._dom.checkpointLookupByName(name, 0)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_CHECKPOINT:
                    return False
                raise
            ck.delete(flags)
        return True
