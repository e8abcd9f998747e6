"""libvirt's migration of one domain to another host, peer to peer (``virDomainMigrateToURI3``):
the source's libvirtd talks to the destination's, as ``virsh migrate --p2p`` does. Also the
guest's dirty rate (``virDomainStartDirtyRateCalc``), the running job's statistics, its
maximum downtime, the switch to post-copy, and its abort. Every call runs in the seam."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import libvirt

from virtkit.backend.guest import Guest, seam

if TYPE_CHECKING:
    from virtkit.backend.host import Host

_JOB_NONE = libvirt.VIR_DOMAIN_JOB_NONE
MIB = 1 << 20


@dataclass(frozen=True)
class MigrateFlags:
    live: bool = True
    offline: bool = False
    copy_storage: bool = False
    auto_converge: bool = False
    postcopy: bool = False
    persist: bool = True
    undefine_source: bool = True
    unsafe: bool = False

    def value(self) -> int:
        flags = libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_ABORT_ON_ERROR
        if self.offline:
            flags |= libvirt.VIR_MIGRATE_OFFLINE
        elif self.live:
            flags |= libvirt.VIR_MIGRATE_LIVE
        if self.copy_storage:
            flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
        if self.auto_converge:
            flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
        if self.postcopy:
            flags |= libvirt.VIR_MIGRATE_POSTCOPY
        if self.persist or self.offline:
            flags |= libvirt.VIR_MIGRATE_PERSIST_DEST
        if self.undefine_source:
            flags |= libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
        if self.unsafe:
            flags |= libvirt.VIR_MIGRATE_UNSAFE
        return int(flags)


@dataclass(frozen=True)
class MigrationProgress:
    """The running migration job now (all zeros in its first fraction of a second)."""

    active: bool
    elapsed_ms: int
    data_total: int
    data_processed: int
    data_remaining: int
    memory_remaining: int
    dirty_rate: int  # bytes per second the guest dirties (QEMU's own figure while it runs)
    iteration: int
    disk_remaining: int
    bandwidth: int  # bytes per second (memory_bps)
    postcopy: bool


@dataclass(frozen=True)
class MigrationStats:
    """A completed migration, as the destination's libvirt reports it."""

    known: bool
    elapsed_ms: int
    downtime_ms: int | None
    data_total: int
    iterations: int


def _progress(stats: dict[str, Any]) -> MigrationProgress:
    def n(key: str) -> int:
        return int(stats.get(key, 0) or 0)

    return MigrationProgress(
        active=n("type") != _JOB_NONE,
        elapsed_ms=n("time_elapsed"),
        data_total=n("data_total"),
        data_processed=n("data_processed"),
        data_remaining=n("data_remaining"),
        memory_remaining=n("memory_remaining"),
        dirty_rate=n("memory_dirty_rate") * (n("memory_page_size") or 4096),
        iteration=n("memory_iteration"),
        disk_remaining=n("disk_remaining"),
        bandwidth=n("memory_bps"),
        postcopy=bool(stats.get("memory_postcopy_requests")),
    )


class Migration:
    """Migrating one domain (``guest``, on the source host)."""

    def __init__(self, guest: Guest) -> None:
        self.guest = guest
        self._connection = guest.connection
        self._dom = guest.handle

    def migratable_xml(self, *, inactive: bool = False) -> str:
        flags = libvirt.VIR_DOMAIN_XML_MIGRATABLE | libvirt.VIR_DOMAIN_XML_SECURE
        if inactive:
            flags |= libvirt.VIR_DOMAIN_XML_INACTIVE
        with seam(self._connection):
            return str(self._dom.XMLDesc(flags))

    def dirty_rate(self, seconds: int = 1) -> int | None:
        """Bytes per second the guest dirties, measured now over ``seconds`` (QEMU's dirty
        page sampling); None where this libvirt or QEMU cannot measure it."""
        if not hasattr(self._dom, "startDirtyRateCalc"):
            return None
        with seam(self._connection):
            try:
                self._dom.startDirtyRateCalc(seconds, 0)
            except libvirt.libvirtError:
                return None
            conn = self._connection.get()
            time.sleep(seconds)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                stats = conn.domainListGetStats([self._dom], libvirt.VIR_DOMAIN_STATS_DIRTYRATE)
                record = stats[0][1] if stats else {}
                # calc_status: 0 unstarted, 1 measuring, 2 measured
                if int(record.get("dirtyrate.calc_status", 1)) == 2:
                    return int(record.get("dirtyrate.megabytes_per_second", 0)) * MIB
                time.sleep(0.1)
        return None

    def migrate(
        self,
        dest_uri: str,
        flags: MigrateFlags,
        *,
        dest_xml: str | None = None,
        persist_xml: str | None = None,
        disks: list[str] | None = None,
        bandwidth_mib: int | None = None,
    ) -> None:
        """Run the migration to its end (blocks; progress and abort from another thread)."""
        params: dict[str, Any] = {}
        if dest_xml is not None:
            params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = dest_xml
        if persist_xml is not None:
            params[libvirt.VIR_MIGRATE_PARAM_PERSIST_XML] = persist_xml
        if disks:
            params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = disks
        if bandwidth_mib:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(bandwidth_mib)
        with seam(self._connection):
            self._dom.migrateToURI3(dest_uri, params, flags.value())

    def progress(self) -> MigrationProgress:
        with seam(self._connection):
            return _progress(self._dom.jobStats())

    def set_max_downtime(self, milliseconds: int) -> None:
        with seam(self._connection):
            self._dom.migrateSetMaxDowntime(int(milliseconds), 0)

    def start_postcopy(self) -> None:
        with seam(self._connection):
            self._dom.migrateStartPostCopy(0)

    def abort(self) -> None:
        with seam(self._connection):
            self._dom.abortJob()


def completed_stats(guest: Guest) -> MigrationStats:
    """The finished migration's statistics, read on the destination (libvirt hands them over
    with the domain)."""
    with seam(guest.connection):
        stats = guest.handle.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    kind = int(stats.get("type", _JOB_NONE))
    downtime = stats.get("downtime")
    return MigrationStats(
        known=kind != _JOB_NONE,
        elapsed_ms=int(stats.get("time_elapsed", 0) or 0),
        downtime_ms=None if downtime is None else int(downtime),
        data_total=int(stats.get("data_total", 0) or 0),
        iterations=int(stats.get("memory_iteration", 0) or 0),
    )


def compare_cpu(target: Host, cpu_xml: str, arch: str, machine: str | None,
                virt_type: str) -> tuple[bool, str]:  # fmt: skip
    """Whether the target's hypervisor can run a guest CPU (``compareHypervisorCPU``)."""
    with seam(target.connection):
        conn = target.connection.get()
        try:
            result = conn.compareHypervisorCPU(None, arch, machine, virt_type, cpu_xml, 0)
        except libvirt.libvirtError as exc:
            return False, str(exc.get_error_message() or exc)
    if result == libvirt.VIR_CPU_COMPARE_INCOMPATIBLE:
        return False, "the target's CPU lacks features the guest's CPU has"
    return True, ""
