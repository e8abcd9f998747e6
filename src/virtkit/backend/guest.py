"""One libvirt domain, behind virtkit's error map (the Guest wrapper, as in Nova's guest.py)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import libvirt

from virtkit.backend.errors import libvirt_errors
from virtkit.errors import ConnectionLost
from virtkit.specs.states import VMState

if TYPE_CHECKING:
    from virtkit.backend.connection import Connection
from virtkit.xml.domain import Domain

_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: VMState.NOSTATE,
    libvirt.VIR_DOMAIN_RUNNING: VMState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: VMState.RUNNING,  # blocked on I/O is still running to a user
    libvirt.VIR_DOMAIN_PAUSED: VMState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: VMState.SHUTTING_DOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: VMState.SHUTOFF,
    libvirt.VIR_DOMAIN_CRASHED: VMState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: VMState.PMSUSPENDED,
}


def _reasons(prefix: str) -> dict[int, str]:
    return {
        int(getattr(libvirt, n)): n[len(prefix) :].lower().replace("_", "-")
        for n in dir(libvirt)
        if n.startswith(prefix) and not n.endswith("_LAST")
    }


# Why a domain is in its state, by libvirt state code (libvirt's own names: paused ioerror, ...).
_REASONS = {
    libvirt.VIR_DOMAIN_RUNNING: _reasons("VIR_DOMAIN_RUNNING_"),
    libvirt.VIR_DOMAIN_BLOCKED: _reasons("VIR_DOMAIN_BLOCKED_"),
    libvirt.VIR_DOMAIN_PAUSED: _reasons("VIR_DOMAIN_PAUSED_"),
    # VIR_DOMAIN_SHUTDOWN_* also names shutdown()'s flags (guest-agent, ...): only two reasons
    libvirt.VIR_DOMAIN_SHUTDOWN: {0: "unknown", 1: "user"},
    libvirt.VIR_DOMAIN_SHUTOFF: _reasons("VIR_DOMAIN_SHUTOFF_"),
    libvirt.VIR_DOMAIN_CRASHED: _reasons("VIR_DOMAIN_CRASHED_"),
    libvirt.VIR_DOMAIN_PMSUSPENDED: _reasons("VIR_DOMAIN_PMSUSPENDED_"),
}


def reason_of(state_code: int, reason: int) -> str:
    """libvirt's name for why a domain is in its state, e.g. ``ioerror`` for a paused one."""
    return _REASONS.get(state_code, {}).get(reason, "unknown")


UNDEFINE_ALL_METADATA = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
    | getattr(libvirt, "VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA", 0)
)


@dataclass(frozen=True)
class DomainRow:
    """One domain as a bulk listing sees it (``Host.domain_rows``), memory in bytes."""

    name: str
    uuid: str
    state: VMState
    reason: int
    vcpus: int
    max_vcpus: int
    memory: int
    max_memory: int
    persistent: bool
    autostart: bool


def state_of(code: int) -> VMState:
    return _STATES.get(code, VMState.NOSTATE)


@dataclass(frozen=True)
class GuestInfo:
    """What libvirt's domain info says, memory in bytes."""

    state: VMState
    max_memory: int  # bytes
    memory: int  # bytes (current, balloon)
    vcpus: int
    cpu_time: int = 0  # nanoseconds


@contextmanager
def seam(connection: Connection) -> Iterator[None]:
    """The error map, plus: a lost connection is reopened on the next call."""
    try:
        with libvirt_errors():
            yield
    except ConnectionLost:
        connection.mark_dead()
        raise


class Guest:
    """A libvirt domain. Every method translates libvirt errors into virtkit errors."""

    def __init__(self, connection: Connection, dom: libvirt.virDomain) -> None:
        self._connection = connection
        self._dom = dom

    @property
    def handle(self) -> libvirt.virDomain:
        """libvirt's own object, for calls over many domains (backend use only)."""
        return self._dom

    @property
    def connection(self) -> Connection:
        """The connection this domain came from (backend use: the error map needs it)."""
        return self._connection

    @property
    def id(self) -> int:
        """The running domain's ID (-1 when inactive); a new one at each start. No RPC."""
        with seam(self._connection):
            return int(self._dom.ID())

    @property
    def name(self) -> str:
        with seam(self._connection):
            return str(self._dom.name())

    @property
    def uuid(self) -> str:
        with seam(self._connection):
            return str(self._dom.UUIDString())

    def state(self) -> tuple[VMState, int]:
        with seam(self._connection):
            state, reason = self._dom.state()
        return _STATES.get(state, VMState.NOSTATE), int(reason)

    def metadata_xml(self, namespace: str) -> str | None:
        """The element of ``namespace`` in the persistent definition's ``<metadata>`` (the
        live one for a transient domain); None when there is none. One small call: no XML of
        the whole domain."""
        with seam(self._connection):
            flags = (
                libvirt.VIR_DOMAIN_AFFECT_CONFIG
                if self._dom.isPersistent()
                else libvirt.VIR_DOMAIN_AFFECT_LIVE
            )
            try:
                return str(
                    self._dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, namespace, flags)
                )
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
                    return None
                raise

    def info(self) -> GuestInfo:
        with seam(self._connection):
            state, max_kib, cur_kib, vcpus, cpu_time = self._dom.info()
        return GuestInfo(
            _STATES.get(state, VMState.NOSTATE),
            int(max_kib) * 1024,
            int(cur_kib) * 1024,
            int(vcpus),
            int(cpu_time),
        )

    def block_counters(self, device: str) -> tuple[int, int, int, int]:
        """One disk's (read requests, bytes read, write requests, bytes written): one query
        to QEMU (the timed counters of ``blockStatsFlags`` cost it a second one)."""
        with seam(self._connection):
            rd_req, rd_bytes, wr_req, wr_bytes, _errs = self._dom.blockStats(device)
        return int(rd_req), int(rd_bytes), int(wr_req), int(wr_bytes)

    def is_active(self) -> bool:
        with seam(self._connection):
            return bool(self._dom.isActive())

    def is_persistent(self) -> bool:
        with seam(self._connection):
            return bool(self._dom.isPersistent())

    def xml(self, *, inactive: bool = False, secure: bool = False) -> str:
        """The raw domain XML, for where a string is the point (``vm xml``); services read
        :meth:`definition`."""
        flags = (libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0) | (
            libvirt.VIR_DOMAIN_XML_SECURE if secure else 0
        )
        with seam(self._connection):
            return str(self._dom.XMLDesc(flags))

    def autostart(self) -> bool:
        with seam(self._connection):
            return bool(self._dom.autostart())

    def set_autostart(self, on: bool) -> None:
        with seam(self._connection):
            self._dom.setAutostart(1 if on else 0)

    def start(self, *, paused: bool = False) -> None:
        with seam(self._connection):
            self._dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED if paused else 0)

    def shutdown(self) -> None:
        """Ask the guest to power off: libvirt uses the guest agent when one answers on the
        VM's channel, else the ACPI power button."""
        with seam(self._connection):
            self._dom.shutdown()

    def destroy(self) -> None:
        """Power off at once, like pulling the plug."""
        with seam(self._connection):
            self._dom.destroy()

    def reboot(self) -> None:
        with seam(self._connection):
            self._dom.reboot(0)

    def reset(self) -> None:
        with seam(self._connection):
            self._dom.reset(0)

    def suspend(self) -> None:
        with seam(self._connection):
            self._dom.suspend()

    def resume(self) -> None:
        with seam(self._connection):
            self._dom.resume()

    def max_vcpus_config(self) -> int:
        with seam(self._connection):
            return int(
                self._dom.vcpusFlags(
                    libvirt.VIR_DOMAIN_AFFECT_CONFIG | libvirt.VIR_DOMAIN_VCPU_MAXIMUM
                )
            )

    def max_vcpus_live(self) -> int:
        with seam(self._connection):
            return int(
                self._dom.vcpusFlags(
                    libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_VCPU_MAXIMUM
                )
            )

    def set_vcpus(
        self, count: int, *, live: bool = False, config: bool = False, maximum: bool = False
    ) -> None:
        flags = _affect(live, config) | (libvirt.VIR_DOMAIN_VCPU_MAXIMUM if maximum else 0)
        with seam(self._connection):
            self._dom.setVcpusFlags(count, flags)

    def set_memory(
        self, kib: int, *, live: bool = False, config: bool = False, maximum: bool = False
    ) -> None:
        flags = _affect(live, config) | (libvirt.VIR_DOMAIN_MEM_MAXIMUM if maximum else 0)
        with seam(self._connection):
            self._dom.setMemoryFlags(kib, flags)

    def pin_vcpu(self, vcpu: int, cpus: Iterable[int], *, live: bool, config: bool) -> None:
        """Let vCPU ``vcpu`` run only on the host CPUs ``cpus``."""
        with seam(self._connection):
            self._dom.pinVcpuFlags(vcpu, self._cpumap(cpus), _affect(live, config))

    def pin_emulator(self, cpus: Iterable[int], *, live: bool, config: bool) -> None:
        """Let QEMU's emulator threads run only on the host CPUs ``cpus``."""
        with seam(self._connection):
            self._dom.pinEmulator(self._cpumap(cpus), _affect(live, config))

    def pin_iothread(self, iothread: int, cpus: Iterable[int], *, live: bool, config: bool) -> None:
        with seam(self._connection):
            self._dom.pinIOThread(iothread, self._cpumap(cpus), _affect(live, config))

    def _cpumap(self, cpus: Iterable[int]) -> tuple[bool, ...]:
        """libvirt's CPU map: one flag per host CPU (the host's count, asked each time)."""
        wanted = set(cpus)
        count = int(self._dom.connect().getCPUMap(0)[0])
        return tuple(cpu in wanted for cpu in range(count))

    def undefine(self) -> None:
        """Remove the persistent definition with its managed save, snapshot and NVRAM metadata."""
        with seam(self._connection):
            # Drivers without some of the flags (e.g. test://) take fewer, then none.
            for flags in (
                UNDEFINE_ALL_METADATA,
                libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE,
            ):
                try:
                    self._dom.undefineFlags(flags)
                    return
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() not in (
                        libvirt.VIR_ERR_NO_SUPPORT,
                        libvirt.VIR_ERR_INVALID_ARG,
                    ):
                        raise
            self._dom.undefine()

    def attach_device(self, xml: str, *, live: bool, config: bool) -> None:
        with seam(self._connection):
            self._dom.attachDeviceFlags(xml, _affect(live, config))

    def detach_device(self, xml: str, *, live: bool, config: bool) -> None:
        with seam(self._connection):
            self._dom.detachDeviceFlags(xml, _affect(live, config))

    def update_device(self, xml: str, *, live: bool, config: bool) -> None:
        with seam(self._connection):
            self._dom.updateDeviceFlags(xml, _affect(live, config))

    def definition(self, *, inactive: bool = False, secure: bool = False) -> Domain:
        """The live definition (the persistent one with ``inactive``), parsed."""
        return Domain.parse(self.xml(inactive=inactive, secure=secure))

    def config(self) -> Domain:
        """The persistent definition (the live one for a transient VM): where virtkit's
        metadata (tags, owned disks, pinned host keys) lives."""
        return self.definition(inactive=self.is_persistent())

    def definitions(self) -> tuple[Domain, Domain | None]:
        """The persistent definition (the live one for a transient VM) and, while the VM runs,
        the live one: what device changes work on."""
        config = self.config()
        live = self.definition() if self.is_active() else None
        return config, live

    def interface_addresses(self, source: str) -> list[tuple[str, str, list[tuple[str, int]]]]:
        """(MAC, interface name, [(address, prefix)]) from ``source``: lease (the host's DHCP
        leases), agent (the guest agent) or arp (the host's neighbour table)."""
        sources = {
            "lease": libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
            "agent": libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT,
            "arp": libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP,
        }
        with seam(self._connection):
            found = self._dom.interfaceAddresses(sources[source], 0) or {}
        result = []
        for name, iface in found.items():
            addrs = [(str(a["addr"]), int(a.get("prefix") or 0)) for a in iface.get("addrs") or []]
            result.append((str(iface.get("hwaddr") or ""), str(name), addrs))
        return result

    def disk_errors(self) -> dict[str, str]:
        """The disks QEMU stopped on an I/O error, by target: ``no-space`` (ENOSPC),
        ``unspec`` (any other error)."""
        names = {
            libvirt.VIR_DOMAIN_DISK_ERROR_NONE: "none",
            libvirt.VIR_DOMAIN_DISK_ERROR_UNSPEC: "unspec",
            libvirt.VIR_DOMAIN_DISK_ERROR_NO_SPACE: "no-space",
        }
        with seam(self._connection):
            errors = self._dom.diskErrors() or {}
        return {str(dev): names.get(code, "unspec") for dev, code in errors.items()}

    def state_reason(self) -> tuple[VMState, str]:
        """The state and libvirt's name for why (``paused``, ``ioerror``)."""
        with seam(self._connection):
            state, reason = self._dom.state()
        return _STATES.get(state, VMState.NOSTATE), reason_of(int(state), int(reason))

    def agent_ping(self, timeout: int = 2) -> bool:
        """Whether the QEMU guest agent answers a ping within ``timeout`` seconds."""
        import libvirt_qemu

        with seam(self._connection):
            try:
                libvirt_qemu.qemuAgentCommand(self._dom, '{"execute":"guest-ping"}', timeout, 0)
            except libvirt.libvirtError:
                return False
        return True

    def memory_stats(self) -> dict[str, int]:
        """The balloon's figures (KiB): actual, unused, available, swap_in, major_fault, ..."""
        with seam(self._connection):
            return {str(k): int(v) for k, v in (self._dom.memoryStats() or {}).items()}

    def open_console(self, stream: libvirt.virStream, *, force: bool = False) -> None:
        flags = libvirt.VIR_DOMAIN_CONSOLE_FORCE if force else 0
        with seam(self._connection):
            self._dom.openConsole(None, stream, flags)


def _affect(live: bool, config: bool) -> int:
    flags = 0
    if live:
        flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
    if config:
        flags |= libvirt.VIR_DOMAIN_AFFECT_CONFIG
    return flags
