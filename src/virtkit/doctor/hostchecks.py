"""The host checks of ``virtkit doctor`` beyond virt-host-validate's.

Each check is a function of a :class:`HostContext` returning findings. Facts of the machine
itself (``/proc``, ``/sys``, the kernel log) are read only when the libvirt host is this
machine; a remote host gets the checks libvirt can answer.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from virtkit.backend.capabilities import CapabilityProbe
from virtkit.backend.host import Host
from virtkit.doctor import localfacts as lf
from virtkit.doctor.findings import ERROR, INFO, OK, WARNING, finding
from virtkit.errors import VirtkitError
from virtkit.specs.doctor import Finding
from virtkit.specs.storage import PoolInfo
from virtkit.specs.units import format_size
from virtkit.xml.domain import Domain
from virtkit.xml.network import Network

# Pool use at which the doctor warns, and at which it calls the pool full.
POOL_WARN = 0.90
POOL_FULL = 0.98
LOW_MEMORY = 0.10  # MemAvailable below this share of RAM


@dataclass
class HostContext:
    host: Host
    probe: CapabilityProbe
    pools: Callable[[], list[PoolInfo]]
    root: Path = lf.ROOT
    kernel_lines: list[str] | None = None

    @property
    def local(self) -> bool:
        return self.host.is_local

    @cached_property
    def domains(self) -> list[tuple[Domain, bool]]:
        """Every VM's persistent definition (the live one for transient VMs), and whether it
        runs."""
        out = []
        for guest in self.host.list_guests():
            try:
                out.append((guest.config(), guest.is_active()))
            except VirtkitError:
                continue  # undefined meanwhile
        return out

    def kernel_log(self) -> list[str]:
        if self.kernel_lines is None:
            self.kernel_lines = lf.kernel_log(self.root) if self.local else []
        return self.kernel_lines


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def kvm(ctx: HostContext) -> list[Finding]:
    verdict = ctx.probe.kvm_verdict()
    if verdict.usable:
        return [finding("kvm.usable", OK, "host", f"KVM works: {verdict.reason}")]
    permission = verdict.kind == "permission"
    return [
        finding(
            "kvm.usable",
            ERROR,
            "host",
            f"KVM is not usable: {verdict.reason}",
            "New VMs run under TCG, software emulation that is 10 to 50 times slower; "
            + (
                "libvirt also re-probes QEMU on every call while its user is denied /dev/kvm."
                if permission
                else "a kvm listed by libvirt is no proof that guests run."
            ),
            verdict.fix,
            action="kvm-permissions" if permission and ctx.local else None,
        ),
        finding(
            "kvm.tcg",
            INFO,
            "host",
            "new VMs are created with domain type 'qemu' (TCG)",
            "virtkit chooses TCG itself while KVM is unusable, so VMs still start.",
            "once KVM works, `virtkit host info --reprobe`; existing VMs keep type 'qemu' "
            "until edited",
        ),
    ]


# Features virtkit uses, and the libvirt / QEMU versions they need.
FEATURES: tuple[tuple[str, tuple[int, ...], tuple[int, ...], str], ...] = (
    ("backups with checkpoints (incremental)", (7, 6, 0), (6, 0, 0), "virtkit backup"),
    ("dirty-rate measurement before migration", (7, 2, 0), (5, 2, 0), "vm migrate --auto"),
    ("external snapshot revert by libvirt", (9, 9, 0), (0,), "vm snapshot revert"),
    ("external snapshot delete by libvirt", (9, 9, 0), (0,), "vm snapshot delete"),
)


def versions(ctx: HostContext) -> list[Finding]:
    libvirt_text = ctx.host.libvirt_version()
    _driver, qemu_text = ctx.probe.hypervisor()
    libvirt_v, qemu_v = _version(libvirt_text), _version(qemu_text)
    out = [
        finding(
            "versions",
            OK if libvirt_v >= (8, 0, 0) else WARNING,
            "host",
            f"libvirt {libvirt_text}, QEMU {qemu_text}",
            ""
            if libvirt_v >= (8, 0, 0)
            else "virtkit is tested on libvirt 9; older ones lack features it uses.",
        )
    ]
    for name, need_libvirt, need_qemu, used_by in FEATURES:
        if libvirt_v >= need_libvirt and qemu_v >= need_qemu:
            continue
        if "snapshot" in name:
            out.append(
                finding(
                    "versions.feature",
                    INFO,
                    "host",
                    f"{name}: needs libvirt {'.'.join(map(str, need_libvirt))}",
                    f"virtkit does it itself on this libvirt ({used_by} works).",
                )
            )
            continue
        out.append(
            finding(
                "versions.feature",
                WARNING,
                "host",
                f"{name}: needs libvirt {'.'.join(map(str, need_libvirt))} and QEMU "
                f"{'.'.join(map(str, need_qemu))}",
                f"`{used_by}` is limited on this host.",
                "upgrade libvirt and QEMU (Debian backports)",
            )
        )
    return out


def _socket_of(uri: str) -> str | None:
    parsed = urlparse(uri)
    if parsed.hostname:
        return None
    socket = parse_qs(parsed.query).get("socket")
    if socket:
        return socket[0]
    return "/run/libvirt/libvirt-sock" if parsed.path == "/system" else None


def daemons(ctx: HostContext) -> list[Finding]:
    """libvirtd answers (it does, or nothing else would have); its socket; virtlogd."""
    out = [finding("daemons.libvirtd", OK, "host", f"libvirtd answers at {ctx.host.uri}")]
    if not ctx.local:
        return out
    sock = _socket_of(ctx.host.uri)
    if sock and not os.path.exists(sock):
        out.append(
            finding(
                "daemons.socket",
                WARNING,
                "host",
                f"libvirt's socket {sock} is missing although the daemon answered",
                "Other clients (virsh, virt-manager) cannot connect the usual way.",
                "restart libvirtd (systemctl restart libvirtd, or libvirtd -d)",
            )
        )
    elif sock:
        out.append(finding("daemons.socket", OK, "host", f"libvirt's socket {sock} is there"))
    if sock == "/run/libvirt/libvirt-sock":
        logd = lf.exists(ctx.root, "run/libvirt/virtlogd-sock")
        out.append(
            finding(
                "daemons.virtlogd",
                OK if logd else WARNING,
                "host",
                "virtlogd runs"
                if logd
                else "virtlogd's socket /run/libvirt/virtlogd-sock is missing",
                ""
                if logd
                else "With qemu.conf's default stdio_handler='logd', VMs do not "
                "start without virtlogd.",
                None if logd else "start virtlogd (systemctl start virtlogd, or virtlogd -d)",
            )
        )
    return out


def pools(ctx: HostContext) -> list[Finding]:
    out = []
    infos = ctx.pools()
    if not infos:
        return [
            finding(
                "pool.none",
                INFO,
                "host",
                "no storage pools defined",
                "virtkit creates its pool at the first VM.",
            )
        ]
    for pool in infos:
        subject = f"pool {pool.name}"
        path = pool.path
        missing_dir = (
            ctx.local and pool.type == "dir" and path is not None and not os.path.isdir(path)
        )
        if missing_dir:
            out.append(
                finding(
                    "pool.path",
                    ERROR,
                    subject,
                    f"the pool's directory {path} does not exist",
                    "The pool cannot start, and no VM can get or use a disk in it.",
                    f"mkdir -p {path} && virsh pool-start {pool.name}",
                    action="pool-create-dir",
                    args={"pool": pool.name, "path": path or ""},
                )
            )
            continue
        if not pool.active:
            out.append(
                finding(
                    "pool.active",
                    WARNING,
                    subject,
                    "the pool is not active",
                    "VMs with disks in it cannot start.",
                    f"virtkit pool start {pool.name}",
                    action="pool-start",
                    args={"pool": pool.name},
                )
            )
            continue
        out.extend(_pool_space(ctx, pool, subject))
    return out


def _pool_space(ctx: HostContext, pool: PoolInfo, subject: str) -> list[Finding]:
    capacity, available = pool.capacity, pool.available
    if ctx.local and pool.path and os.path.isdir(pool.path):
        st = os.statvfs(pool.path)  # fresher than the pool's last refresh
        capacity, available = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
    if not capacity or available is None:
        return [finding("pool.space", OK, subject, "active (size unknown)")]
    used = 1 - available / capacity
    line = f"{format_size(available)} free of {format_size(capacity)} ({used:.0%} used)"
    if used >= POOL_FULL or available < 64 * 1024 * 1024:
        return [
            finding(
                "pool.space",
                ERROR,
                subject,
                f"the file system of {pool.path or pool.name} is full: {line}",
                "A VM whose thin disk grows there pauses with an I/O error (ENOSPC).",
                f"free space in {pool.path or pool.name} or grow its file system; then "
                "`virtkit doctor vm NAME --fix` resumes paused VMs",
            )
        ]
    if used >= POOL_WARN:
        return [
            finding(
                "pool.space",
                WARNING,
                subject,
                f"nearly full: {line}",
                "Thin (qcow2) disks grow as guests write; at 100% their VMs pause.",
                f"free space in {pool.path or pool.name}",
            )
        ]
    return [finding("pool.space", OK, subject, f"active, {line}")]


def _hugepage_kib(domain: Domain, default_kib: int) -> int | None:
    """The hugepage size a VM's memory wants, or None when it wants none."""
    backing = domain.node.find("memoryBacking/hugepages")
    if backing is None:
        return None
    page = backing.find("page")
    if page is None or not page.get("size"):
        return default_kib
    size = int(page.get("size", "0"))
    unit = (page.get("unit") or "KiB").lower()
    factor = {"b": 1 / 1024, "k": 1, "kib": 1, "m": 1024, "mib": 1024, "g": 1 << 20, "gib": 1 << 20}
    return int(size * factor.get(unit, 1))


def hugepage_demand(ctx: HostContext) -> dict[int, tuple[int, list[str]]]:
    """page size KiB -> (pages the hugepage-backed VMs need, their names)."""
    default_kib = lf.default_hugepage_kib(ctx.root) if ctx.local else 2048
    need: dict[int, tuple[int, list[str]]] = {}
    for domain, _running in ctx.domains:
        size = _hugepage_kib(domain, default_kib)
        if size is None or not size:
            continue
        pages = -(-(domain.memory_kib or 0) // size)
        total, names = need.get(size, (0, []))
        need[size] = (total + pages, [*names, domain.name or "?"])
    return need


def hugepages(ctx: HostContext) -> list[Finding]:
    if not ctx.local:
        return []
    need = hugepage_demand(ctx)
    have = {p.size_kib: p for p in lf.hugepages(ctx.root)}
    if not need:
        reserved = sum(p.total * p.size_kib * 1024 for p in have.values())
        if reserved:
            return [
                finding(
                    "hugepages",
                    INFO,
                    "host",
                    f"{format_size(reserved)} of hugepages reserved, but no VM uses hugepages",
                    "Reserved hugepages are memory nothing else can use.",
                    "echo 0 > /sys/kernel/mm/hugepages/hugepages-*/nr_hugepages",
                )
            ]
        return [finding("hugepages", OK, "host", "no VM uses hugepages, none reserved")]
    out = []
    mounts = lf.read(ctx.root, "proc/mounts") or ""
    if not any(line.split()[2:3] == ["hugetlbfs"] for line in mounts.splitlines()):
        out.append(
            finding(
                "hugepages.mount",
                ERROR,
                "host",
                "no hugetlbfs is mounted, and VMs use hugepages",
                "libvirt backs guest memory with files on a hugetlbfs mount; without one "
                "hugepage-backed VMs do not start.",
                "mount -t hugetlbfs hugetlbfs /dev/hugepages (an fstab line keeps it), then "
                "restart libvirtd",
            )
        )
    for size, (pages, names) in sorted(need.items()):
        pool = have.get(size)
        total = pool.total if pool else 0
        label = format_size(size * 1024)
        if pool is None:
            out.append(
                finding(
                    "hugepages",
                    ERROR,
                    "host",
                    f"VMs {', '.join(names)} want {label} hugepages, which this kernel lacks",
                    "They cannot start.",
                    "choose the host's page size in their <memoryBacking> or enable that size "
                    "on the kernel command line (hugepagesz=, hugepages=)",
                )
            )
        elif total < pages:
            out.append(
                finding(
                    "hugepages",
                    ERROR,
                    "host",
                    f"VMs {', '.join(names)} need {pages} hugepages of {label}; {total} reserved",
                    "A hugepage-backed VM does not start when its pages are not reserved.",
                    f"echo {pages} > /sys/kernel/mm/hugepages/hugepages-{size}kB/nr_hugepages "
                    f"(and vm.nr_hugepages = {pages} in /etc/sysctl.d/ to keep it)",
                    action="hugepages-reserve",
                    args={"size_kib": str(size), "pages": str(pages)},
                )
            )
        else:
            out.append(
                finding(
                    "hugepages",
                    OK,
                    "host",
                    f"{total} hugepages of {label} reserved for {pages} that VMs need",
                )
            )
    return out


def thp_and_ksm(ctx: HostContext) -> list[Finding]:
    if not ctx.local:
        return []
    thp = lf.thp_mode(ctx.root)
    run = lf.ksm_value(ctx.root, "run")
    if run != 1 or thp in (None, "never"):
        return [
            finding(
                "memory.thp-ksm",
                OK,
                "host",
                f"THP {thp or 'unknown'}, KSM {'running' if run == 1 else 'off'}",
            )
        ]
    return [
        finding(
            "memory.thp-ksm",
            WARNING if thp == "always" else INFO,
            "host",
            f"KSM runs while transparent hugepages are '{thp}'",
            "KSM splits the huge pages it merges and khugepaged collapses them again, so each "
            "undoes the other's work (QEMU asks for THP on guest RAM even under 'madvise').",
            "for density keep KSM and set THP to madvise or never "
            "(echo madvise > /sys/kernel/mm/transparent_hugepage/enabled); for latency "
            "stop KSM (virtkit ksm disable)",
            action="thp-madvise" if thp == "always" else None,
        )
    ]


def numa(ctx: HostContext) -> list[Finding]:
    cells = list(ctx.probe.capabilities().cells)
    if len(cells) <= 1:
        return [finding("numa", OK, "host", "one NUMA node: no VM can span nodes")]
    smallest = min((c.memory_kib or 0) for c in cells)
    spanning = [
        d.name or "?"
        for d, running in ctx.domains
        if running and (d.memory_kib or 0) > smallest and d.node.find("numatune") is None
    ]
    if not spanning:
        return [
            finding("numa", OK, "host", f"{len(cells)} NUMA nodes; every running VM fits one node")
        ]
    return [
        finding(
            "numa",
            WARNING,
            "host",
            f"VMs larger than one NUMA node ({format_size(smallest * 1024)}) without numatune: "
            f"{', '.join(spanning)}",
            "Their memory spreads over nodes and each vCPU reaches part of it remotely, slower.",
            "virtkit tune check VM --profile throughput (pins and numatune), or give the guest "
            "a NUMA topology",
        )
    ]


_OOM = re.compile(r"(Out of memory: Killed process \d+ \((qemu[^)]*)\)|oom-kill:.*task=(qemu\S*))")


def memory_pressure(ctx: HostContext) -> list[Finding]:
    if not ctx.local:
        return []
    info = lf.meminfo(ctx.root)
    out = []
    total, available = info.get("MemTotal", 0), info.get("MemAvailable", 0)
    swap_used = info.get("SwapTotal", 0) - info.get("SwapFree", 0)
    if total and available < total * LOW_MEMORY:
        out.append(
            finding(
                "memory.pressure",
                WARNING,
                "host",
                f"only {format_size(available)} of {format_size(total)} available",
                "New VMs may not start, and the kernel may swap or kill a QEMU.",
                "stop or shrink VMs, enable KSM (virtkit ksm enable), or add memory",
            )
        )
    if swap_used > 64 * 1024 * 1024:
        out.append(
            finding(
                "memory.swap",
                WARNING,
                "host",
                f"{format_size(swap_used)} of swap in use",
                "A guest whose memory is swapped out stalls when it touches it.",
                "find the largest QEMU processes (virtkit vm list) and give the host memory",
            )
        )
    kills = [m.group(2) or m.group(3) for line in ctx.kernel_log() if (m := _OOM.search(line))]
    if kills:
        out.append(
            finding(
                "memory.oom",
                ERROR,
                "host",
                f"the kernel's OOM killer ended {len(kills)} QEMU process(es) ({kills[-1]})",
                "Their VMs stopped without warning: the host ran out of memory.",
                "commit less memory to VMs than the host has, or reserve memory for the host "
                "(vm.min_free_kbytes); see `dmesg | grep -i oom`",
            )
        )
    if not out:
        out.append(
            finding(
                "memory.pressure",
                OK,
                "host",
                f"{format_size(available)} available, swap {format_size(max(swap_used, 0))} "
                "used, no QEMU killed",
            )
        )
    return out


_APPARMOR = re.compile(r'apparmor="DENIED".*profile="(libvirt-[0-9a-f-]+|libvirtd)"')


def apparmor(ctx: HostContext) -> list[Finding]:
    if not ctx.local:
        return []
    lines = ctx.kernel_log() + lf.audit_log(ctx.root)
    denials = [line for line in lines if _APPARMOR.search(line)]
    if denials:
        sample = denials[-1]
        path = re.search(r'name="([^"]+)"', sample)
        return [
            finding(
                "apparmor",
                ERROR,
                "host",
                f"{len(denials)} AppArmor denial(s) for QEMU or libvirtd"
                + (f", latest for {path.group(1)}" if path else ""),
                "AppArmor stops QEMU from opening files outside what libvirt allowed: disks, "
                "kernels or sockets in unusual places.",
                "keep VM files under /var/lib/libvirt, or allow the path in "
                "/etc/apparmor.d/local/abstractions/libvirt-qemu and reload apparmor",
            )
        ]
    state = "on" if lf.apparmor_enabled(ctx.root) else "off"
    return [finding("apparmor", OK, "host", f"AppArmor {state}; no denials for QEMU")]


def clocks(ctx: HostContext) -> list[Finding]:
    if not ctx.local:
        return []
    out = []
    synced = lf.clock_synchronised() if ctx.root == lf.ROOT else None
    if synced is False:
        out.append(
            finding(
                "clock.ntp",
                WARNING,
                "host",
                "the host clock is not synchronised (no NTP)",
                "Guests take their time from the host at boot and after migration; hosts "
                "whose clocks differ give guests jumps in time.",
                "apt install chrony (or systemd-timesyncd)",
            )
        )
    elif synced:
        out.append(finding("clock.ntp", OK, "host", "the host clock is NTP-synchronised"))
    current, available = lf.clocksource(ctx.root)
    if current and current != "tsc" and "tsc" not in available and current != "kvm-clock":
        out.append(
            finding(
                "clock.source",
                INFO,
                "host",
                f"clock source {current}: no stable TSC",
                "Without a stable TSC time is slower to read for the host and its guests.",
                None,
            )
        )
    elif current:
        out.append(finding("clock.source", OK, "host", f"clock source {current}"))
    return out


def networks(ctx: HostContext) -> list[Finding]:
    """A virtual network's range colliding with a host route (not the network's own bridge)."""
    if not ctx.local:
        return []
    routes = lf.ipv4_routes(ctx.root)
    out = []
    storage = ctx.host.networks
    for name in storage.names():
        try:
            net = Network.parse(storage.xml(name))
        except VirtkitError:
            continue
        for ip in net.ips:
            if (ip.family or "ipv4") != "ipv4" or not ip.address:
                continue
            try:
                mask = ip.netmask or str(ip.prefix or 24)
                mine = ipaddress.IPv4Network(f"{ip.address}/{mask}", strict=False)
            except ValueError:
                continue
            clash = [
                r for r in routes if r.interface != net.bridge_name and r.network.overlaps(mine)
            ]
            if clash:
                other = clash[0]
                out.append(
                    finding(
                        "network.overlap",
                        ERROR,
                        f"network {name}",
                        f"{mine} overlaps the host's route {other.network} on {other.interface}",
                        "Guests on it and the hosts behind that route cannot reach each other, "
                        "and the network may refuse to start.",
                        f"give {name} another range: virsh net-edit {name} (for example "
                        "192.168.150.1/24), then restart it",
                    )
                )
    if not out:
        out.append(
            finding("network.overlap", OK, "host", "no virtual network overlaps a host route")
        )
    return out


HOST_CHECKS: tuple[Callable[[HostContext], list[Finding]], ...] = (
    kvm,
    versions,
    daemons,
    pools,
    hugepages,
    thp_and_ksm,
    numa,
    memory_pressure,
    apparmor,
    clocks,
    networks,
)
