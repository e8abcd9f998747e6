"""Connection-level libvirt operations: host facts, domains, storage, streams.

``Host`` is what services and the capability probe need of a host (a Protocol); ``LibvirtHost``
is the one implementation, over a :class:`Connection`. Tests put another in its place (the
fault-injecting ``FaultyHost``, ``backend/faults.py``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import libvirt

from virtkit.backend.connection import Connection
from virtkit.backend.guest import DomainRow, Guest, seam, state_of
from virtkit.backend.network import Networks
from virtkit.backend.storage import Storage
from virtkit.errors import NotFound, Unsupported

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeInfo:
    cpu_model: str
    memory_bytes: int
    cpus: int
    mhz: int
    numa_nodes: int
    sockets: int
    cores: int
    threads: int


_ROW_STATS = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_BALLOON
    | libvirt.VIR_DOMAIN_STATS_VCPU
)


# What a metrics scrape asks of running domains in one call: state and interface statistics
# (libvirt's own, no QEMU asked); with ``block``, the block group (two monitor queries per
# domain: the counters and the images' sizes); with ``cpu``, CPU and vCPU times, which cost
# libvirt more than the rest together (cgroups, debugfs): a local host's come from /proc.
_ACTIVE_STATS = libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_INTERFACE
_CPU_STATS = libvirt.VIR_DOMAIN_STATS_CPU_TOTAL | libvirt.VIR_DOMAIN_STATS_VCPU
# Skip what a domain busy in a job cannot answer at once, rather than wait for the job.
_NOWAIT = getattr(libvirt, "VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT", 0)


@dataclass(frozen=True)
class DomainStats:
    """One domain's bulk statistics as libvirt names them (``cpu.time``, ``block.0.rd.bytes``,
    ...), with the guest for any follow-up call."""

    name: str
    uuid: str
    record: dict[str, Any]
    guest: Guest


def _info_stats(dom: libvirt.virDomain) -> dict[str, int]:
    """The bulk stats' names for what ``virDomainGetInfo`` says (libvirt's test driver)."""
    _state, max_kib, cur_kib, vcpus, _cpu = dom.info()
    return {
        "vcpu.current": vcpus,
        "vcpu.maximum": vcpus,
        "balloon.current": cur_kib,
        "balloon.maximum": max_kib,
    }


def _version(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


class Host(Protocol):
    """A libvirt host as the services see it."""

    @property
    def connection(self) -> Connection: ...
    @property
    def storage(self) -> Storage: ...
    @property
    def networks(self) -> Networks: ...
    @property
    def uri(self) -> str: ...
    @property
    def is_local(self) -> bool: ...

    def capabilities_xml(self) -> str: ...
    def domain_capabilities_xml(
        self, emulator: str | None, arch: str, machine: str | None, virt_type: str
    ) -> str: ...
    def hostname(self) -> str: ...
    def libvirt_version(self) -> str: ...
    def hypervisor(self) -> tuple[str, str]: ...
    def capability_answers(self) -> dict[tuple[Any, ...], str]: ...
    def seed_capability_answers(self, answers: dict[tuple[Any, ...], str]) -> None: ...
    def node_info(self) -> NodeInfo: ...
    def memory(self) -> tuple[int, int]: ...
    def memory_parameters(self) -> dict[str, int]: ...
    def free_pages(self, page_size_kib: int, cells: int) -> int: ...
    def list_guests(self, *, active: bool = False) -> list[Guest]: ...
    def domain_rows(self) -> list[DomainRow]: ...
    def domain_stats(self) -> list[DomainStats]: ...
    def count_inactive(self) -> int: ...
    def guest_stats(
        self, guests: list[Guest], *, cpu: bool, block: bool = False
    ) -> dict[str, dict[str, Any]]: ...
    def balloon_stats(self, guests: list[Guest]) -> dict[str, dict[str, Any]]: ...
    def node_cpu_times(self) -> dict[str, int]: ...
    def guest_by_uuid(self, uuid: str) -> Guest: ...
    def lookup(self, name: str) -> Guest: ...
    def exists(self, name: str) -> bool: ...
    def define(self, xml: str) -> Guest: ...
    def create_transient(
        self, xml: str, *, paused: bool = False, autodestroy: bool = False
    ) -> Guest: ...
    def interface_exists(self, name: str) -> bool: ...
    def new_stream(self, *, nonblocking: bool = True) -> libvirt.virStream: ...
    def max_vcpus(self, virt_type: str) -> int: ...


class LibvirtHost:
    """One libvirt host, reached through one :class:`Connection` (implements :class:`Host`)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.storage = Storage(connection)
        self.networks = Networks(connection)
        self._caps_cache: dict[tuple[Any, ...], str] = {}
        self._caps_generation = -1

    # -- connection-level facts -------------------------------------------------------------

    @property
    def uri(self) -> str:
        return self.connection.uri

    @property
    def is_local(self) -> bool:
        return self.connection.is_local

    def _conn(self) -> libvirt.virConnect:
        return self.connection.get()

    def _align_cache(self) -> None:
        """Capabilities per connection: a reconnect (new generation) may meet a new daemon."""
        if self._caps_generation != self.connection.generation:
            self._caps_cache.clear()
            self._caps_generation = self.connection.generation

    def _cached(self, key: tuple[Any, ...], fetch: Any) -> str:
        self._align_cache()
        if key not in self._caps_cache:
            with seam(self.connection):
                self._caps_cache[key] = str(fetch())
        return self._caps_cache[key]

    def capabilities_xml(self) -> str:
        conn = self._conn()
        return self._cached(("caps",), conn.getCapabilities)

    def domain_capabilities_xml(
        self, emulator: str | None, arch: str, machine: str | None, virt_type: str
    ) -> str:
        conn = self._conn()
        return self._cached(
            ("domcaps", emulator, arch, machine, virt_type),
            lambda: conn.getDomainCapabilities(emulator, arch, machine, virt_type, 0),
        )

    def hostname(self) -> str:
        with seam(self.connection):
            return str(self._conn().getHostname())

    def libvirt_version(self) -> str:
        with seam(self.connection):
            return _version(int(self._conn().getLibVersion()))

    def hypervisor(self) -> tuple[str, str]:
        """(driver type, hypervisor version), e.g. ("QEMU", "7.2.0"); once per connection."""
        conn = self._conn()
        driver, _, version = self._cached(
            ("hypervisor",), lambda: f"{conn.getType()} {_version(int(conn.getVersion()))}"
        ).partition(" ")
        return driver, version

    def capability_answers(self) -> dict[tuple[Any, ...], str]:
        """What this connection has answered so far (capabilities, domain capabilities,
        hypervisor version), to keep a copy of where libvirt is slow to answer again."""
        self._align_cache()
        return dict(self._caps_cache)

    def seed_capability_answers(self, answers: dict[tuple[Any, ...], str]) -> None:
        """Answer these from a kept copy instead of asking libvirt (see capabilities.py)."""
        self._conn()
        self._align_cache()
        self._caps_cache.update(answers)

    def node_info(self) -> NodeInfo:
        with seam(self.connection):
            model, mem_mib, cpus, mhz, nodes, sockets, cores, threads = self._conn().getInfo()
        return NodeInfo(
            str(model),
            int(mem_mib) * 1024 * 1024,
            int(cpus),
            int(mhz),
            int(nodes),
            int(sockets),
            int(cores),
            int(threads),
        )

    def memory(self) -> tuple[int, int]:
        """(total, free) host memory in bytes, as the host's /proc/meminfo counts it.

        Node info sums NUMA cells, which under-counts on hosts with hot-plugged memory, so the
        all-cells memory stats come first; drivers without them fall back to node info.
        """
        with seam(self.connection):
            conn = self._conn()
            try:
                stats = conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS, 0)
                return int(stats["total"]) * 1024, int(stats["free"]) * 1024
            except (libvirt.libvirtError, KeyError):
                return int(conn.getInfo()[1]) * 1024 * 1024, int(conn.getFreeMemory())

    def memory_parameters(self) -> dict[str, int]:
        """Node memory parameters: libvirt reports the host's KSM counters here (``shm_*``)."""
        with seam(self.connection):
            try:
                return {k: int(v) for k, v in self._conn().getMemoryParameters(0).items()}
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
                    return {}
                raise

    def free_pages(self, page_size_kib: int, cells: int) -> int:
        """Free pages of one size summed over NUMA cells (0 where the driver cannot tell)."""
        with seam(self.connection):
            try:
                per_cell = self._conn().getFreePages([page_size_kib], 0, cells, 0)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() in (
                    libvirt.VIR_ERR_NO_SUPPORT,
                    libvirt.VIR_ERR_INVALID_ARG,
                    libvirt.VIR_ERR_OPERATION_INVALID,
                ):
                    return 0
                raise
        return sum(int(c.get(page_size_kib, 0)) for c in (per_cell or {}).values())

    # -- domains ----------------------------------------------------------------------------

    def domain_rows(self) -> list[DomainRow]:
        """Every domain's name, UUID, state, vCPUs, memory, persistence and autostart in three
        calls, whatever the number of domains: one bulk stats call plus the (usually short)
        lists of autostart and transient domains. Name and UUID are local to the handle."""
        with seam(self.connection):
            conn = self._conn()
            stats = conn.getAllDomainStats(_ROW_STATS, 0)
            autostart = {
                d.UUIDString()
                for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_AUTOSTART)
            }
            transient = {
                d.UUIDString()
                for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_TRANSIENT)
            }
            rows = []
            for dom, record in stats:
                uuid = dom.UUIDString()
                if "vcpu.current" not in record or "balloon.current" not in record:
                    record = {**record, **_info_stats(dom)}  # drivers without those groups
                rows.append(
                    DomainRow(
                        name=dom.name(),
                        uuid=uuid,
                        state=state_of(int(record.get("state.state", 0))),
                        reason=int(record.get("state.reason", 0)),
                        vcpus=int(record.get("vcpu.current", 0)),
                        max_vcpus=int(record.get("vcpu.maximum", 0)),
                        memory=int(record.get("balloon.current", 0)) * 1024,
                        max_memory=int(record.get("balloon.maximum", 0)) * 1024,
                        persistent=uuid not in transient,
                        autostart=uuid in autostart,
                    )
                )
            return rows

    def domain_stats(self) -> list[DomainStats]:
        """The inactive domains' state, balloon, vCPU and block (capacity) figures in one
        call, whatever their number: libvirt's own data, no QEMU to ask."""
        with seam(self.connection):
            conn = self._conn()
            stats = conn.getAllDomainStats(
                _ROW_STATS | libvirt.VIR_DOMAIN_STATS_BLOCK,
                libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_INACTIVE,
            )
            found = []
            for dom, record in stats:
                if "vcpu.current" not in record or "balloon.current" not in record:
                    record = {**record, **_info_stats(dom)}  # drivers without those groups
                found.append(
                    DomainStats(dom.name(), dom.UUIDString(), record, Guest(self.connection, dom))
                )
            return found

    def count_inactive(self) -> int:
        """How many domains are defined and not running (one small call)."""
        with seam(self.connection):
            return int(self._conn().numOfDefinedDomains())

    def guest_stats(
        self, guests: list[Guest], *, cpu: bool, block: bool = False
    ) -> dict[str, dict[str, Any]]:
        """UUID -> state and interface statistics (with ``block`` the block group, with
        ``cpu`` CPU and vCPU times too) of these running domains, in one call. What a domain
        busy in a job cannot answer at once is left out rather than waited for."""
        if not guests:
            return {}
        groups = (
            _ACTIVE_STATS
            | (_CPU_STATS if cpu else 0)
            | (libvirt.VIR_DOMAIN_STATS_BLOCK if block else 0)
        )
        with seam(self.connection):
            conn = self._conn()
            handles = [g.handle for g in guests]
            try:
                stats = conn.domainListGetStats(handles, groups, _NOWAIT)
            except libvirt.libvirtError as exc:
                if not _NOWAIT or exc.get_error_code() not in (
                    libvirt.VIR_ERR_INVALID_ARG,
                    libvirt.VIR_ERR_NO_SUPPORT,
                ):
                    raise
                stats = conn.domainListGetStats(handles, groups, 0)  # a daemon without NOWAIT
            return {dom.UUIDString(): record for dom, record in stats}

    def balloon_stats(self, guests: list[Guest]) -> dict[str, dict[str, Any]]:
        """UUID -> the balloon group (``balloon.current``, ``balloon.rss``, and what the guest
        reports: ``balloon.available``, ``balloon.unused``, ...) of these running domains, in
        one call (QEMU is asked for each)."""
        if not guests:
            return {}
        with seam(self.connection):
            conn = self._conn()
            handles = [g.handle for g in guests]
            try:
                stats = conn.domainListGetStats(handles, libvirt.VIR_DOMAIN_STATS_BALLOON, _NOWAIT)
            except libvirt.libvirtError as exc:
                if not _NOWAIT or exc.get_error_code() not in (
                    libvirt.VIR_ERR_INVALID_ARG,
                    libvirt.VIR_ERR_NO_SUPPORT,
                ):
                    raise
                stats = conn.domainListGetStats(handles, libvirt.VIR_DOMAIN_STATS_BALLOON, 0)
            return {dom.UUIDString(): record for dom, record in stats}

    def node_cpu_times(self) -> dict[str, int]:
        """The host's CPU time since boot summed over CPUs, in nanoseconds, by libvirt's
        names (``user``, ``kernel``, ``idle``, ``iowait``); empty where the driver cannot tell."""
        with seam(self.connection):
            try:
                stats = self._conn().getCPUStats(libvirt.VIR_NODE_CPU_STATS_ALL_CPUS, 0)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() in (
                    libvirt.VIR_ERR_NO_SUPPORT,
                    libvirt.VIR_ERR_INVALID_ARG,
                ):
                    return {}
                raise
        return {str(k): int(v) for k, v in stats.items()}

    def guest_by_uuid(self, uuid: str) -> Guest:
        with seam(self.connection):
            conn = self._conn()
            return Guest(self.connection, conn.lookupByUUIDString(uuid))

    def list_guests(self, *, active: bool = False) -> list[Guest]:
        """Every domain, or with ``active`` the running and paused ones only."""
        flags = libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE if active else 0
        with seam(self.connection):
            conn = self._conn()
            return [Guest(self.connection, d) for d in conn.listAllDomains(flags)]

    def lookup(self, name: str) -> Guest:
        with seam(self.connection):
            conn = self._conn()
            try:
                return Guest(self.connection, conn.lookupByName(name))
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    raise NotFound(f"no VM named {name!r}", code="vm_not_found") from exc
                raise

    def exists(self, name: str) -> bool:
        try:
            self.lookup(name)
        except NotFound:
            return False
        return True

    def define(self, xml: str) -> Guest:
        with seam(self.connection):
            conn = self._conn()
            return Guest(self.connection, conn.defineXML(xml))

    def create_transient(
        self, xml: str, *, paused: bool = False, autodestroy: bool = False
    ) -> Guest:
        flags = (libvirt.VIR_DOMAIN_START_PAUSED if paused else 0) | (
            libvirt.VIR_DOMAIN_START_AUTODESTROY if autodestroy else 0
        )
        with seam(self.connection):
            conn = self._conn()
            return Guest(self.connection, conn.createXML(xml, flags))

    def interface_exists(self, name: str) -> bool:
        """Whether the libvirt host has a network interface (or bridge) ``name``, as its
        libvirtd sees it (its own network namespace). True when libvirt cannot tell."""
        with seam(self.connection):
            try:
                self._conn().interfaceLookupByName(name)
                return True
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_INTERFACE:
                    return False
                if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
                    return True
                raise

    def new_stream(self, *, nonblocking: bool = True) -> libvirt.virStream:
        with seam(self.connection):
            return self._conn().newStream(libvirt.VIR_STREAM_NONBLOCK if nonblocking else 0)

    def max_vcpus(self, virt_type: str) -> int:
        with seam(self.connection):
            try:
                return int(self._conn().getMaxVcpus(virt_type))
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
                    raise Unsupported(f"cannot tell the vCPU limit for {virt_type}") from exc
                raise
