"""``virtkit doctor vm NAME``: why a VM will not start, why it is paused, and whether what it
relies on (disks and their chains, agent, console, network, memory) is sound."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from virtkit.backend.guest import Guest
from virtkit.backend.host import Host
from virtkit.doctor import localfacts as lf
from virtkit.doctor.findings import ERROR, INFO, OK, WARNING, finding
from virtkit.doctor.hostchecks import _hugepage_kib
from virtkit.doctor.patterns import match
from virtkit.errors import InUse, VirtkitError
from virtkit.services.backing import qcow2_backing
from virtkit.specs.doctor import Finding
from virtkit.specs.network import GuestAddress
from virtkit.specs.states import VMState
from virtkit.specs.units import format_size
from virtkit.xml.domain import Disk, Domain

LOG_TAIL = 64 * 1024  # bytes of the QEMU log read
LOW_SPACE = 16 * 1024 * 1024  # free bytes below which a disk's file system counts as full


@dataclass
class VMContext:
    host: Host
    guest: Guest
    config: Domain
    live: Domain | None
    state: VMState
    reason: str
    qemu_log_dir: Path
    addresses: Callable[[], list[GuestAddress]]
    ksm_profit: Callable[[], int | None]
    # Whether the serial console answers a carriage return: True, False (silent), or raises
    # InUse when another client holds it.
    console_answers: Callable[[], bool]
    root: Path = lf.ROOT
    try_start: bool = False  # start a shut-off VM paused (then stop it) to hear libvirt

    @property
    def name(self) -> str:
        return self.config.name or "?"

    @property
    def subject(self) -> str:
        return f"vm {self.name}"

    @property
    def local(self) -> bool:
        return self.host.is_local

    @property
    def domain(self) -> Domain:
        return self.live or self.config


def disk_path(disk: Disk) -> str | None:
    return disk.source_file or disk.source_dev


def _free_bytes(path: str) -> int | None:
    try:
        st = os.statvfs(os.path.dirname(path) or "/")
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def state(ctx: VMContext) -> list[Finding]:
    line = f"{ctx.state.value} ({ctx.reason})"
    if ctx.state is VMState.CRASHED:
        return [
            finding(
                "vm.state",
                ERROR,
                ctx.subject,
                f"crashed ({ctx.reason})",
                "The guest or QEMU crashed; its log says why.",
                f"virtkit vm console-log {ctx.name}; then virtkit vm start {ctx.name}",
            )
        ]
    if ctx.state is VMState.SHUTOFF and ctx.reason == "failed":
        return [
            finding(
                "vm.state",
                ERROR,
                ctx.subject,
                "shut off: it failed to start",
                "See the findings below for the cause.",
            )
        ]
    return [finding("vm.state", OK, ctx.subject, line)]


def paused(ctx: VMContext) -> list[Finding]:
    if ctx.state is not VMState.PAUSED:
        return []
    resume = {"vm": ctx.name}
    if ctx.reason == "ioerror":
        errors = {d: e for d, e in ctx.guest.disk_errors().items() if e != "none"}
        out = []
        for target, kind in sorted(errors.items()):
            disk = next((d for d in ctx.domain.disks if d.target_dev == target), None)
            path = disk_path(disk) if disk else None
            if kind == "no-space":
                free = _free_bytes(path) if path and ctx.local else None
                where = os.path.dirname(path) if path else "its storage"
                out.append(
                    finding(
                        "vm.paused-enospc",
                        ERROR,
                        ctx.subject,
                        f"paused: disk {target} ran out of space (ENOSPC) in {where}"
                        + (f", {format_size(free)} free now" if free is not None else ""),
                        "QEMU stops the guest rather than lose the write; it continues where "
                        "it stopped once there is room.",
                        f"free space in {where} (or grow that file system), then "
                        f"`virtkit doctor vm {ctx.name} --fix` (resumes it)",
                        action="vm-resume",
                        args={**resume, "needs_space": path or ""},
                    )
                )
            else:
                out.append(
                    finding(
                        "vm.paused-ioerror",
                        ERROR,
                        ctx.subject,
                        f"paused: an I/O error on disk {target} ({path or '?'})",
                        "The host's storage failed a read or write.",
                        "check the host's kernel log (dmesg) and the storage; then "
                        f"virtkit vm resume {ctx.name}",
                    )
                )
        if not out:
            out.append(
                finding(
                    "vm.paused-ioerror",
                    ERROR,
                    ctx.subject,
                    "paused on an I/O error (no disk reports one now)",
                    "The error cleared; the guest can continue.",
                    f"virtkit vm resume {ctx.name}",
                    action="vm-resume",
                    args=resume,
                )
            )
        return out
    why = {
        "user": ("paused by a user or tool", INFO),
        "migration": ("paused by a migration that did not finish", WARNING),
        "save": ("paused while saving", INFO),
        "snapshot": ("paused while a snapshot is taken", INFO),
        "postcopy-failed": ("paused: a post-copy migration failed", ERROR),
    }
    summary, severity = why.get(ctx.reason, (f"paused ({ctx.reason})", WARNING))
    return [
        finding(
            "vm.paused",
            severity,
            ctx.subject,
            summary,
            "A paused guest does not run: its clock and services stand still.",
            f"virtkit vm resume {ctx.name}",
            action="vm-resume",
            args=resume,
        )
    ]


def files(ctx: VMContext) -> list[Finding]:
    """The files a start needs: emulator, kernel and initrd, disks with their backing chains,
    CD-ROM media. Local hosts only (a remote host's files are not here)."""
    if not ctx.local:
        return []
    out: list[Finding] = []
    config = ctx.config
    emulator = config.emulator
    if emulator and not os.path.exists(emulator):
        out.append(
            finding(
                "vm.emulator",
                ERROR,
                ctx.subject,
                f"the emulator {emulator} is missing",
                "QEMU is not installed at that path.",
                "apt install qemu-system-x86, or fix <emulator> in the definition",
            )
        )
    boot = config.os
    for label, path in (
        ("kernel", boot.kernel if boot else None),
        ("initrd", boot.initrd if boot else None),
    ):
        if path and not os.path.isfile(path):
            out.append(
                finding(
                    "vm.kernel",
                    ERROR,
                    ctx.subject,
                    f"the {label} {path} does not exist",
                    f"A VM that boots a kernel directly cannot start without its {label}.",
                    f"restore {path}, or change <{label}> (virsh edit {ctx.name}); "
                    "a VM booting from its disk needs neither",
                )
            )
    for disk in config.disks:
        out.extend(_disk(ctx, disk))
    if not out:
        out.append(finding("vm.files", OK, ctx.subject, "every file it needs is there"))
    return out


def _disk(ctx: VMContext, disk: Disk) -> list[Finding]:
    target = disk.target_dev or "?"
    if disk.type == "volume" and disk.source_pool:
        storage = ctx.host.storage
        try:
            active = storage.pool_is_active(disk.source_pool)
        except VirtkitError:
            active = False
        if not active:
            return [
                finding(
                    "vm.disk-pool",
                    ERROR,
                    ctx.subject,
                    f"disk {target}: pool {disk.source_pool} is not active",
                    "A disk that names a pool volume needs the pool running.",
                    f"virtkit pool start {disk.source_pool}",
                    action="pool-start",
                    args={"pool": disk.source_pool},
                )
            ]
        return []
    path = disk_path(disk)
    if not path:
        return []
    if not os.path.exists(path):
        if disk.device == "cdrom":
            return [
                finding(
                    "vm.cdrom",
                    WARNING,
                    ctx.subject,
                    f"CD-ROM {target}: the medium {path} does not exist",
                    "libvirt refuses to start a VM whose CD-ROM file is missing.",
                    f"virtkit vm cdrom eject {ctx.name} {target}",
                )
            ]
        return [
            finding(
                "vm.disk",
                ERROR,
                ctx.subject,
                f"disk {target}: {path} does not exist",
                "The VM cannot start without its disk.",
                "restore it from a backup (virtkit backup restore) or detach it "
                f"(virtkit vm disk detach {ctx.name} {target})",
            )
        ]
    if (disk.driver_type or "") == "qcow2":
        return _chain(ctx, target, path)
    return []


def _chain(ctx: VMContext, target: str, path: str) -> list[Finding]:
    seen = [path]
    below = qcow2_backing(path)
    while below is not None:
        if not os.path.isabs(below):
            below = os.path.join(os.path.dirname(seen[-1]), below)
        if below in seen:
            return [
                finding(
                    "vm.chain",
                    ERROR,
                    ctx.subject,
                    f"disk {target}: its backing chain loops at {below}",
                    "QEMU refuses a chain that loops.",
                    "rebase the image (qemu-img rebase -u) onto the right file",
                )
            ]
        if not os.path.exists(below):
            return [
                finding(
                    "vm.chain",
                    ERROR,
                    ctx.subject,
                    f"disk {target}: {seen[-1]} builds on {below}, which does not exist",
                    "A qcow2 overlay holds only changes: without its backing file the disk "
                    "is unreadable.",
                    "restore the backing file (a template or snapshot's data) at that path",
                )
            ]
        seen.append(below)
        below = qcow2_backing(below)
    if len(seen) > 1:
        return [
            finding(
                "vm.chain",
                OK,
                ctx.subject,
                f"disk {target}: chain of {len(seen)} files, all present",
            )
        ]
    return []


def start_needs(ctx: VMContext) -> list[Finding]:
    """What a shut-off VM needs of the host to start: hugepages, memory, ports, CPU, networks."""
    if ctx.state is not VMState.SHUTOFF:
        return []
    out: list[Finding] = []
    config = ctx.config
    memory = (config.memory_kib or 0) * 1024
    if ctx.local:
        size = _hugepage_kib(config, lf.default_hugepage_kib(ctx.root))
        if size:
            pages = -(-(config.memory_kib or 0) // size)
            pool = next((p for p in lf.hugepages(ctx.root) if p.size_kib == size), None)
            free = pool.free if pool else 0
            if free < pages:
                total = (pool.total if pool else 0) + pages - free
                out.append(
                    finding(
                        "vm.hugepages",
                        ERROR,
                        ctx.subject,
                        f"needs {pages} hugepages of {format_size(size * 1024)}; {free} free",
                        "Its memory is backed by hugepages, which must be reserved first.",
                        f"echo {total} > /sys/kernel/mm/hugepages/hugepages-{size}kB/nr_hugepages",
                        action="hugepages-reserve",
                        args={"size_kib": str(size), "pages": str(total)},
                    )
                )
        else:
            available = lf.meminfo(ctx.root).get("MemAvailable", 0)
            if available and memory > available:
                out.append(
                    finding(
                        "vm.memory",
                        WARNING,
                        ctx.subject,
                        f"wants {format_size(memory)}; the host has {format_size(available)} "
                        "available",
                        "It may fail to start, or push the host into swapping.",
                        f"virtkit vm set {ctx.name} --memory SIZE, or free host memory",
                    )
                )
    out.extend(_ports(ctx))
    out.extend(_cpu(ctx))
    out.extend(_networks(ctx))
    return out


def _ports(ctx: VMContext) -> list[Finding]:
    out = []
    for g in ctx.config.graphics:
        port = g.port
        if port is None or port <= 0 or (g.node.get("autoport") == "yes"):
            continue
        address = g.listen_address or g.listen or "127.0.0.1"
        if address in ("0.0.0.0", "::"):
            address = "127.0.0.1"
        if ctx.local and _port_in_use(address, port):
            out.append(
                finding(
                    "vm.port",
                    ERROR,
                    ctx.subject,
                    f"{g.type} display port {port} on {address} is in use",
                    "QEMU cannot listen there, so the VM fails to start.",
                    f"give the display autoport (virsh edit {ctx.name}: autoport='yes'), or stop "
                    "what holds the port",
                )
            )
    return out


def _port_in_use(address: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((address, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def _cpu(ctx: VMContext) -> list[Finding]:
    cpu = ctx.config.cpu
    if cpu is None:
        return []
    if cpu.mode in ("host-passthrough", "host-model") and ctx.config.type == "qemu":
        return [
            finding(
                "vm.cpu",
                ERROR if cpu.mode == "host-passthrough" else WARNING,
                ctx.subject,
                f"CPU mode {cpu.mode} on a TCG (type 'qemu') VM",
                "Under emulation there is no host CPU to pass through; QEMU refuses or guesses.",
                "use a named model such as qemu64 (<cpu mode='custom'><model>qemu64</model>"
                "</cpu>), or make KVM usable",
            )
        ]
    return []


def _networks(ctx: VMContext) -> list[Finding]:
    out = []
    nets = ctx.host.networks
    for nic in ctx.config.interfaces:
        if nic.type != "network" or not nic.source_network:
            continue
        name = nic.source_network
        if not nets.exists(name):
            out.append(
                finding(
                    "vm.network",
                    ERROR,
                    ctx.subject,
                    f"NIC {nic.mac}: network {name} does not exist",
                    "A VM whose NIC names a missing network does not start.",
                    f"virtkit net create {name} ..., or virtkit vm nic detach {ctx.name} {nic.mac}",
                )
            )
        elif not nets.state(name)[0]:
            out.append(
                finding(
                    "vm.network",
                    ERROR,
                    ctx.subject,
                    f"network {name} is not active",
                    "A VM whose NIC is on an inactive network does not start.",
                    f"virtkit net start {name}",
                    action="network-start",
                    args={"network": name},
                )
            )
    return out


def last_log(ctx: VMContext) -> list[Finding]:
    """Known failures in the QEMU log's last run (the lines after its last start)."""
    if not ctx.local:
        return []
    path = ctx.qemu_log_dir / f"{ctx.name}.log"
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.path.getsize(path) - LOG_TAIL))
            text = fh.read().decode(errors="replace")
    except OSError:
        return []
    marker = text.rfind("starting up")
    last = text[text.rfind("\n", 0, marker) + 1 :] if marker >= 0 else text
    severity = ERROR if ctx.state is VMState.SHUTOFF else INFO
    return [
        finding(
            m.check,
            severity,
            ctx.subject,
            f"its QEMU log says: {m.cause}",
            f"From {path}: {m.line[:200]}",
            m.fix,
        )
        for m in match(last)
    ]


def trial_start(ctx: VMContext) -> list[Finding]:
    """``--try-start``: start the shut-off VM paused, so that no guest code runs, and stop it
    again; libvirt's error, when it refuses, goes through the known patterns."""
    if not ctx.try_start or ctx.state is not VMState.SHUTOFF:
        return []
    try:
        ctx.guest.start(paused=True)
    except VirtkitError as exc:
        matched = match(exc.message)
        if not matched:
            return [
                finding(
                    "start.refused",
                    ERROR,
                    ctx.subject,
                    f"a trial start failed: {exc.message}",
                    "libvirt's own words: no known pattern matched them.",
                    None,
                )
            ]
        return [
            finding(
                m.check,
                ERROR,
                ctx.subject,
                f"a trial start failed: {m.cause}",
                f"libvirt: {exc.message[:300]}",
                m.fix,
            )
            for m in matched
        ]
    try:
        ctx.guest.destroy()
    except VirtkitError as exc:
        return [
            finding(
                "start.trial",
                WARNING,
                ctx.subject,
                f"it started (paused) but could not be stopped again: {exc.message}",
                "It is left paused: stop it with virtkit vm stop.",
                None,
            )
        ]
    return [finding("start.trial", OK, ctx.subject, "a trial start (paused) worked; stopped again")]


def agent_and_console(ctx: VMContext) -> list[Finding]:
    if ctx.state is not VMState.RUNNING:
        return []
    out = []
    domain = ctx.domain
    if domain.guest_agent is not None:
        answers = ctx.guest.agent_ping()
        out.append(
            finding(
                "vm.agent",
                OK if answers else WARNING,
                ctx.subject,
                "the guest agent answers" if answers else "the guest agent does not answer",
                ""
                if answers
                else "Without it there is no quiesced snapshot, no clean shutdown "
                "by agent, no addresses from inside the guest.",
                None if answers else "install and start qemu-guest-agent in the guest",
            )
        )
    else:
        out.append(
            finding(
                "vm.agent",
                INFO,
                ctx.subject,
                "no guest agent channel",
                "Snapshots cannot be quiesced and addresses come only from DHCP leases.",
                None,
            )
        )
    serials = list(domain.serials)
    if not serials and not list(domain.consoles):
        out.append(
            finding(
                "vm.console",
                INFO,
                ctx.subject,
                "no serial console",
                "`virtkit vm console` needs one; the graphics console still works.",
                None,
            )
        )
    else:
        log = next((s.log.file for s in serials if s.log is not None and s.log.file), None)
        detail = ""
        if log and ctx.local and os.path.exists(log):
            detail = f"; {format_size(os.path.getsize(log))} logged to {log}"
        out.append(_console(ctx, detail))
    return out


def _console(ctx: VMContext, detail: str) -> Finding:
    try:
        answers = ctx.console_answers()
    except InUse:
        return finding(
            "vm.console",
            INFO,
            ctx.subject,
            f"serial console held by another client{detail}",
            "It was not disturbed to test it.",
            None,
        )
    if answers:
        return finding("vm.console", OK, ctx.subject, f"the serial console answers{detail}")
    return finding(
        "vm.console",
        WARNING,
        ctx.subject,
        f"the serial console is silent: no answer to a carriage return{detail}",
        "The guest may hang, or runs no login or shell on its serial port.",
        "look at the graphics console; in the guest enable a getty on ttyS0 "
        "(systemctl enable serial-getty@ttyS0) and console=ttyS0 on its kernel command line",
    )


def network(ctx: VMContext) -> list[Finding]:
    if ctx.state is not VMState.RUNNING:
        return []
    nics = list(ctx.domain.interfaces)
    if not nics:
        return [finding("vm.addresses", INFO, ctx.subject, "no network interfaces")]
    try:
        addresses = ctx.addresses()
    except VirtkitError as exc:
        return [finding("vm.addresses", WARNING, ctx.subject, f"addresses unknown: {exc}")]
    out = []
    for nic in nics:
        mine = [a for a in addresses if a.mac == nic.mac]
        where = nic.source_network or nic.source_bridge or nic.type or "?"
        if mine:
            out.append(
                finding(
                    "vm.addresses",
                    OK,
                    ctx.subject,
                    f"NIC {nic.mac} on {where}: " + ", ".join(f"{a.ip} ({a.source})" for a in mine),
                )
            )
        elif nic.type == "network" and nic.link_state != "down":
            out.append(
                finding(
                    "vm.addresses",
                    WARNING,
                    ctx.subject,
                    f"NIC {nic.mac} on network {where} has no address (no DHCP lease)",
                    "The guest did not ask for an address, or its network has no DHCP.",
                    f"check the guest's network set-up (virtkit vm console {ctx.name}); "
                    f"virtkit net leases {where}",
                )
            )
        else:
            out.append(
                finding(
                    "vm.addresses", INFO, ctx.subject, f"NIC {nic.mac} on {where}: no address known"
                )
            )
    return out


def memory(ctx: VMContext) -> list[Finding]:
    """Whether the balloon or KSM starves the guest."""
    if ctx.state is not VMState.RUNNING:
        return []
    out = []
    maximum = ctx.domain.memory_kib or 0
    try:
        stats = ctx.guest.memory_stats()
    except VirtkitError:
        stats = {}
    actual = stats.get("actual", maximum)
    if maximum and actual < maximum * 0.5:
        unused = stats.get("unused")
        starving = unused is not None and actual and unused < actual * 0.05
        out.append(
            finding(
                "vm.balloon",
                WARNING if starving else INFO,
                ctx.subject,
                f"the balloon holds {format_size((maximum - actual) * 1024)}: the guest has "
                f"{format_size(actual * 1024)} of {format_size(maximum * 1024)}"
                + (f", {format_size(unused * 1024)} unused" if unused is not None else ""),
                "A guest squeezed by its balloon swaps or kills its own processes."
                if starving
                else "Ballooning gave memory back to the host.",
                f"virtkit vm set {ctx.name} --memory {maximum // 1024}M",
            )
        )
    if stats.get("swap_in", 0) > 0 and stats.get("major_fault", 0) > 1000:
        out.append(
            finding(
                "vm.swapping",
                WARNING,
                ctx.subject,
                f"the guest swaps ({format_size(stats['swap_in'] * 1024)} swapped in)",
                "It has less memory than its work needs.",
                f"virtkit vm set {ctx.name} --memory SIZE",
            )
        )
    profit = ctx.ksm_profit() if ctx.local else None
    if profit:
        out.append(
            finding(
                "vm.ksm",
                INFO,
                ctx.subject,
                f"KSM shares {format_size(profit)} of its memory",
                "Shared pages cost a copy-on-write fault when the guest writes them: fine "
                "for density, a latency cost for latency-bound guests.",
                "for latency: <memoryBacking><nosharepages/></memoryBacking> (virtkit tune "
                f"apply {ctx.name} --profile latency)",
            )
        )
    if not out:
        out.append(
            finding(
                "vm.memory",
                OK,
                ctx.subject,
                f"{format_size(actual * 1024)} of {format_size(maximum * 1024)}, not squeezed",
            )
        )
    return out


VM_CHECKS: tuple[Callable[[VMContext], list[Finding]], ...] = (
    state,
    paused,
    files,
    start_needs,
    trial_start,
    last_log,
    agent_and_console,
    network,
    memory,
)
