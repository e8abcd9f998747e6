"""Snapshots and block jobs of one domain, behind virtkit's error map.

Plain functions over a :class:`Guest` (its libvirt handle) so that the snapshot service, the
chain tools and the tests share one set of calls; every libvirt call runs inside ``seam``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import libvirt

from virtkit.backend.guest import Guest, seam
from virtkit.backend.host import Host
from virtkit.errors import BackendError, NotFound, Timeout


@dataclass(frozen=True)
class SnapshotRecord:
    """One snapshot as libvirt keeps it: its XML, and where it sits in the tree."""

    name: str
    xml: str
    parent: str | None
    current: bool


def _no_snapshot(exc: libvirt.libvirtError, guest: Guest, name: str) -> None:
    if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
        raise NotFound(
            f"VM {guest.name!r} has no snapshot {name!r}", code="snapshot_not_found"
        ) from exc


def _lookup(guest: Guest, name: str) -> libvirt.virDomainSnapshot:
    try:
        return guest.handle.snapshotLookupByName(name, 0)
    except libvirt.libvirtError as exc:
        _no_snapshot(exc, guest, name)
        raise


def list_snapshots(guest: Guest) -> list[SnapshotRecord]:
    """Every snapshot of the domain, with its secure XML (libvirt's order: creation)."""
    conn = guest.connection
    with seam(conn):
        records = []
        for snap in guest.handle.listAllSnapshots(0):
            try:
                parent: str | None = str(snap.getParent(0).getName())
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
                    raise
                parent = None
            records.append(
                SnapshotRecord(
                    name=str(snap.getName()),
                    xml=str(snap.getXMLDesc(libvirt.VIR_DOMAIN_SNAPSHOT_XML_SECURE)),
                    parent=parent,
                    current=bool(snap.isCurrent(0)),
                )
            )
    return records


def create_snapshot(
    guest: Guest,
    xml: str,
    *,
    disk_only: bool = False,
    quiesce: bool = False,
    redefine: bool = False,
    current: bool = False,
) -> str:
    """Take (or, with ``redefine``, re-record) a snapshot; several disks atomically."""
    flags = 0
    if redefine:
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE
        if current:
            flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT
    else:
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
    if disk_only:
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
    if quiesce:
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE
    with seam(guest.connection):
        return str(guest.handle.snapshotCreateXML(xml, flags).getName())


def delete_snapshot(guest: Guest, name: str, *, metadata_only: bool = False) -> None:
    """Delete one snapshot (its children stay); ``metadata_only`` leaves every file alone."""
    flags = libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY if metadata_only else 0
    with seam(guest.connection):
        _lookup(guest, name).delete(flags)


def revert_internal(guest: Guest, name: str, *, running: bool, paused: bool) -> None:
    """libvirt's own revert (internal snapshots)."""
    flags = libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_FORCE
    if running:
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING
    if paused:
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED
    with seam(guest.connection):
        guest.handle.revertToSnapshot(_lookup(guest, name), flags)


def restore_memory(host: Host, path: str, xml: str, *, paused: bool) -> None:
    """Start a domain from a saved memory state (a snapshot's memory file), with the
    definition ``xml`` (the same machine, its disks pointed at new overlays)."""
    flags = libvirt.VIR_DOMAIN_SAVE_PAUSED if paused else libvirt.VIR_DOMAIN_SAVE_RUNNING
    with seam(host.connection):
        host.connection.get().restoreFlags(path, xml, flags)


@dataclass(frozen=True)
class JobProgress:
    done: int
    total: int


def _wait_job(
    guest: Guest,
    disk: str,
    *,
    timeout: float,
    progress: Callable[[JobProgress], None] | None,
    ready: bool,
) -> None:
    """Wait for the disk's block job: until it is ready to pivot (``ready``), else gone."""
    deadline = time.monotonic() + timeout
    seen = False
    while time.monotonic() < deadline:
        with seam(guest.connection):
            info = guest.handle.blockJobInfo(disk, 0)
        if not info:
            if ready and not seen:
                raise BackendError(f"the block job on {disk} ended before it was ready")
            return
        seen = True
        done, total = int(info.get("cur", 0)), int(info.get("end", 0))
        if progress is not None:
            progress(JobProgress(done, total))
        if ready and total > 0 and done == total:
            return
        time.sleep(0.05)
    raise Timeout(f"the block job on {disk} did not finish in {timeout:g} s")


def _pivot(guest: Guest, disk: str, timeout: float = 30.0) -> None:
    """Pivot the disk onto the job's target. ``cur == end`` can come a moment before QEMU
    says the job is ready (its BLOCK_JOB_READY): libvirt then answers "not ready for pivot
    yet", and the pivot is asked again until it is."""
    deadline = time.monotonic() + timeout
    while True:
        with seam(guest.connection):
            try:
                guest.handle.blockJobAbort(disk, libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)
                return
            except libvirt.libvirtError as exc:
                if (exc.get_error_code() != libvirt.VIR_ERR_BLOCK_COPY_ACTIVE
                        or time.monotonic() > deadline):  # fmt: skip
                    raise
        time.sleep(0.05)


def block_commit(
    guest: Guest,
    disk: str,
    *,
    top: str | None,
    base: str,
    timeout: float = 3600.0,
    progress: Callable[[JobProgress], None] | None = None,
) -> None:
    """Merge ``top`` (None: the active layer) down into ``base``, its backing file, in the
    running VM. An active commit pivots the VM onto ``base`` once the two match; ``base`` is
    always given: libvirt's default is the bottom of the chain, which would write the
    changes into every snapshot's data below."""
    flags = 0 if top is not None else libvirt.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE
    with seam(guest.connection):
        guest.handle.blockCommit(disk, base, top, 0, flags)
    try:
        _wait_job(guest, disk, timeout=timeout, progress=progress, ready=top is None)
        if top is None:
            _pivot(guest, disk)
            _wait_job(guest, disk, timeout=60.0, progress=None, ready=False)
    except BaseException:
        abort_block_job(guest, disk)
        raise


def abort_block_job(guest: Guest, disk: str) -> None:
    """Cancel a disk's block job, if it has one (the VM stays on its current image)."""
    with seam(guest.connection):
        try:
            guest.handle.blockJobAbort(disk, 0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in (
                libvirt.VIR_ERR_OPERATION_INVALID,
                libvirt.VIR_ERR_INVALID_ARG,
            ):
                raise


def block_pull(
    guest: Guest,
    disk: str,
    *,
    timeout: float = 3600.0,
    progress: Callable[[JobProgress], None] | None = None,
) -> None:
    """Copy the whole backing chain into the running VM's active image (it then stands
    alone)."""
    with seam(guest.connection):
        guest.handle.blockRebase(disk, None, 0, 0)
    try:
        _wait_job(guest, disk, timeout=timeout, progress=progress, ready=False)
    except BaseException:
        abort_block_job(guest, disk)
        raise
