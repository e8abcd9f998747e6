"""The tuning plan of one VM: pure functions from facts (host topology, the VM's definition,
what other VMs hold, the profile) to decisions, each with its reason, and the rewrite of the
persistent definition that carries them out. No I/O here: the service gathers the facts.

Profiles:

- ``latency``: vCPUs pinned 1:1 to whole cores nobody else may use (their SMT siblings stay
  with this VM or idle), emulator and I/O thread on housekeeping CPUs, memory strict from the
  same node, hugepages, locked and unshared memory, no balloon.
- ``throughput``: the same pinning and node-local memory, but the cores are not exclusive (VMs
  of the density profile may float over them); KSM and the balloon are left as they are.
- ``density``: no 1:1 pinning: vCPUs float over the node's CPUs (never a latency VM's cores),
  memory preferred from the node, KSM sharing allowed, the balloon kept with its statistics, a
  migratable CPU model (host-model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from virtkit.errors import InvalidInput, Unsupported
from virtkit.tuning.topology import Node, Topology, format_cpuset, parse_cpuset
from virtkit.xml.domain import Domain

Profile = Literal["latency", "throughput", "density"]
PROFILES: tuple[Profile, ...] = ("latency", "throughput", "density")
When = Literal["live", "next_boot", "manual"]
MAX_QUEUES = 8  # virtio multiqueue: more queues than this rarely pays for their interrupts
IO_URING_QEMU = (5, 0, 0)  # QEMU's io_uring AIO backend
GIB_KIB = 1024 * 1024


def check_profile(profile: str) -> Profile:
    for known in PROFILES:
        if profile == known:
            return known
    raise InvalidInput(
        f"unknown tuning profile {profile!r}: use one of {', '.join(PROFILES)}",
        code="tune_unknown_profile",
    )


# -- facts ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiskFacts:
    target: str
    type: str  # file, block, network, volume
    device: str  # disk, cdrom, lun
    bus: str | None
    cache: str | None
    io: str | None
    discard: str | None
    queues: int | None
    iothread: int | None
    readonly: bool
    direct_io: bool | None = None  # can the image be opened with O_DIRECT (None: unknown)


@dataclass(frozen=True)
class NicFacts:
    mac: str
    type: str
    model: str | None
    queues: int | None


@dataclass(frozen=True)
class VmFacts:
    name: str
    domain_type: str  # kvm, qemu (TCG)
    vcpus: int
    memory_kib: int
    cpu_mode: str | None
    disks: tuple[DiskFacts, ...] = ()
    nics: tuple[NicFacts, ...] = ()
    balloon_model: str | None = None
    balloon_period: int | None = None
    hugepage_kib: int | None = None
    nosharepages: bool = False
    locked: bool = False
    pins: dict[int, frozenset[int]] = field(default_factory=dict)
    emulator_pins: frozenset[int] | None = None
    iothreads: int = 0
    iothread_pins: frozenset[int] | None = None
    numa_mode: str | None = None
    numa_nodes: frozenset[int] | None = None
    running: bool = False
    max_vcpus: int = 0  # room for vCPU hot-plug; 0: the same as vcpus


@dataclass(frozen=True)
class OtherVm:
    """Another VM's hold on host CPUs: ``cpus`` its vCPUs are pinned to; ``exclusive`` when
    it is a latency VM (nobody else may use its cores), else only 1:1-pinned VMs avoid them."""

    name: str
    cpus: frozenset[int]
    exclusive: bool = False
    floating: bool = False  # no pins at all: may run anywhere, including a new latency core


_KIB = {"b": 1 / 1024, "bytes": 1 / 1024, "kib": 1, "k": 1, "mib": 1024, "m": 1024,
        "gib": 1024**2, "g": 1024**2, "tib": 1024**3, "t": 1024**3}  # fmt: skip


def vm_facts(
    domain: Domain, *, running: bool = False, direct_io: dict[str, bool | None] | None = None
) -> VmFacts:
    """What the plan needs of a VM, read from its parsed definition."""
    memory = int((domain.memory_kib or 0) * _KIB.get((domain.memory_unit or "KiB").lower(), 1))
    disks = []
    for disk in domain.disks:
        disks.append(
            DiskFacts(
                target=disk.target_dev or "?",
                type=disk.type or "file",
                device=disk.device or "disk",
                bus=disk.target_bus,
                cache=disk.driver_cache,
                io=disk.driver_io,
                discard=disk.driver_discard,
                queues=disk.driver_queues,
                iothread=disk.driver_iothread,
                readonly=disk.readonly,
                direct_io=(direct_io or {}).get(disk.target_dev or "?"),
            )
        )
    nics = tuple(
        NicFacts(n.mac or "?", n.type or "network", n.model, n.driver_queues)
        for n in domain.interfaces
    )
    backing = domain.memory_backing
    page = next(iter(backing.pages), None) if backing is not None else None
    hugepage = None
    if backing is not None and backing.hugepages:
        hugepage = (page.size_kib if page is not None else None) or 2048
    tune = domain.cputune
    pins = {v: parse_cpuset(s) for v, s in tune.vcpu_cpusets().items()} if tune else {}
    emulator = parse_cpuset(tune.emulatorpin) if tune is not None and tune.emulatorpin else None
    io_pin = next((p for p in tune.iothreadpins if p.iothread == 1), None) if tune else None
    numa = domain.numatune
    balloon = domain.memballoon
    cpu = domain.cpu
    return VmFacts(
        name=domain.name or "?",
        domain_type=domain.type or "kvm",
        vcpus=domain.vcpu_current or domain.vcpu or 1,
        max_vcpus=domain.vcpu or 1,
        memory_kib=memory,
        cpu_mode=cpu.mode if cpu is not None else None,
        disks=tuple(disks),
        nics=nics,
        balloon_model=balloon.model if balloon is not None else None,
        balloon_period=balloon.stats_period if balloon is not None else None,
        hugepage_kib=hugepage,
        nosharepages=backing.nosharepages if backing is not None else False,
        locked=backing.locked if backing is not None else False,
        pins=pins,
        emulator_pins=emulator,
        iothreads=domain.iothreads or 0,
        iothread_pins=parse_cpuset(io_pin.cpuset) if io_pin and io_pin.cpuset else None,
        numa_mode=numa.memory_mode if numa is not None else None,
        numa_nodes=(
            parse_cpuset(numa.memory_nodeset) if numa is not None and numa.memory_nodeset else None
        ),
        running=running,
    )


def other_vm(domain: Domain) -> OtherVm:
    """Another VM's hold on host CPUs, from its definition and virtkit's tuning record: the
    CPUs its online vCPUs are pinned to. A VM virtkit tuned holds only its 1:1 pins (its
    floating pins and its offline vCPUs' hold nothing); any other pinned VM holds all its pins."""
    meta = domain.virtkit
    record = meta.tuning if meta is not None else None
    profile = record.profile if record is not None else None
    name = domain.name or "?"
    if profile == "density":  # floats over a node on purpose: holds no core
        return OtherVm(name, frozenset(), floating=True)
    online = domain.vcpu_current or domain.vcpu or 1
    tune = domain.cputune
    cpus: frozenset[int] = frozenset()
    if tune is not None:
        for vcpu, cpuset in tune.vcpu_cpusets().items():
            pinned = parse_cpuset(cpuset)
            if vcpu < online and (profile is None or len(pinned) == 1):
                cpus |= pinned
    return OtherVm(name, cpus, exclusive=profile == "latency", floating=not cpus)


# -- the plan ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    area: str  # vcpupin, emulatorpin, iothreadpin, numatune, hugepages, cpu, disk vda, ...
    summary: str
    reason: str
    when: When


@dataclass(frozen=True)
class HugepageChoice:
    size_kib: int
    node: int
    pages: int
    reserved: bool  # enough free pages now; else reservable with ``command``
    command: str | None = None


@dataclass
class Plan:
    vm: str
    profile: Profile
    online_vcpus: int = 1
    node: int | None = None
    vcpu_pins: dict[int, frozenset[int]] = field(default_factory=dict)
    emulator: frozenset[int] | None = None
    iothread: frozenset[int] | None = None
    iothreads: int = 0
    numa_mode: str | None = None
    numa_nodes: frozenset[int] = frozenset()
    hugepages: HugepageChoice | None = None
    cpu_mode: str | None = None
    disk_driver: dict[str, dict[str, str | int | None]] = field(default_factory=dict)
    nic_driver: dict[str, dict[str, str | int | None]] = field(default_factory=dict)
    balloon: str | None = None  # "none", "virtio-stats", or None: leave
    nosharepages: bool | None = None
    locked: bool | None = None
    changes: list[Change] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, area: str, summary: str, reason: str, when: When) -> None:
        self.changes.append(Change(area, summary, reason, when))


def make_plan(
    topology: Topology,
    vm: VmFacts,
    others: list[OtherVm],
    profile: Profile,
    *,
    qemu_version: tuple[int, int, int] = (0, 0, 0),
) -> Plan:
    """The whole plan for ``vm`` under ``profile``; raises an expected error when a latency
    VM cannot get what the profile promises (no free whole cores, larger than every node)."""
    plan = Plan(vm.name, profile, vm.vcpus)
    if profile == "density":
        _float_cpus(plan, topology, vm, others)
    else:
        _pin_cpus(plan, topology, vm, others)
    _offline_vcpus(plan, vm)
    _memory(plan, topology, vm)
    _cpu_mode(plan, vm)
    _disks(plan, vm, qemu_version)
    _nics(plan, vm)
    _sharing(plan, vm)
    _pin_changes(plan, vm)
    return plan


def _offline_vcpus(plan: Plan, vm: VmFacts) -> None:
    """vCPUs above the current count (hot-plug room) are pinned too, with the emulator: a
    hot-plugged vCPU must not land on another VM's core."""
    if vm.max_vcpus <= vm.vcpus or plan.emulator is None:
        return
    for vcpu in range(vm.vcpus, vm.max_vcpus):
        plan.vcpu_pins[vcpu] = plan.emulator
    if any(len(plan.vcpu_pins[v]) == 1 for v in range(vm.vcpus)):
        plan.warnings.append(
            f"vCPUs {vm.vcpus}-{vm.max_vcpus - 1} (offline, room for hot-plug) run on the "
            "housekeeping CPUs when plugged: tune again after plugging them"
        )


def _taken(others: list[OtherVm], topology: Topology) -> tuple[set[int], set[int]]:
    """(CPUs of cores some other pinned VM holds, CPUs of latency VMs' cores)."""
    held: set[int] = set()
    exclusive: set[int] = set()
    for other in others:
        for cpu in other.cpus:
            core = topology.core_of(cpu)
            held |= core
            if other.exclusive:
                exclusive |= core
    return held, exclusive


def _housekeeping(topology: Topology, node: Node) -> frozenset[int]:
    """The node's first core, left to the host and to emulator threads (never pinned 1:1)."""
    cores = topology.cores(node.id)
    return cores[0] if cores else frozenset()


def _fits_memory(node: Node, vm: VmFacts) -> bool:
    return node.memory_kib >= vm.memory_kib


def _pin_cpus(plan: Plan, topology: Topology, vm: VmFacts, others: list[OtherVm]) -> None:
    held, exclusive = _taken(others, topology)
    own = {cpu for pin in vm.pins.values() if len(pin) == 1 for cpu in pin}  # its 1:1 pins
    largest_cpus = max(len(n.cpus) for n in topology.nodes)
    largest_mem = max(n.memory_kib for n in topology.nodes)
    larger = vm.vcpus > largest_cpus or vm.memory_kib > largest_mem
    if larger and len(topology.nodes) > 1:
        if plan.profile == "latency":
            raise Unsupported(
                f"VM {vm.name!r} ({vm.vcpus} vCPUs, {vm.memory_kib // 1024} MiB) is larger than "
                f"every NUMA node of this host (at most {largest_cpus} CPUs, "
                f"{largest_mem // 1024} MiB): a latency VM must fit one node",
                code="tune_vm_larger_than_node",
            )
        plan.warnings.append(
            "the VM is larger than every NUMA node: its vCPUs and memory span nodes "
            "(interleaved), which costs remote memory accesses"
        )
        _span_nodes(plan, topology, vm, held, exclusive)
        return
    candidates: list[tuple[int, Node, list[frozenset[int]]]] = []
    for node in topology.nodes:
        if not _fits_memory(node, vm) and len(topology.nodes) > 1:
            continue
        spare = _housekeeping(topology, node)
        free = [c for c in topology.cores(node.id) if c != spare and not (c & held)]
        free.sort(key=lambda c: (not (c & own), min(c)))  # its own cores first: stable plans
        chosen = _take_cores(free, vm.vcpus)
        if chosen is not None:
            score = sum(1 for c in chosen if c & own)
            candidates.append((score, node, chosen))
    if not candidates:
        if plan.profile == "latency":
            raise Unsupported(
                f"no NUMA node has {math.ceil(vm.vcpus / topology.threads_per_core)} free whole "
                f"core(s) for VM {vm.name!r}: every core but each node's housekeeping core is "
                "held by another pinned VM",
                code="tune_no_free_cores",
                hint="stop or re-tune another latency VM, or use --profile throughput/density",
            )
        plan.warnings.append(
            "no node has enough free whole cores: vCPUs float over the node's CPUs that no "
            "latency VM holds instead of 1:1 pins"
        )
        _float_cpus(plan, topology, vm, others)
        return
    # The most of its own cores kept, then the node with the most free memory and CPUs.
    candidates.sort(key=lambda c: (-c[0], -c[1].memory_kib, c[1].id))
    _score, node, cores = candidates[0]
    threads = [cpu for core in cores for cpu in sorted(core)]
    plan.node = node.id
    plan.vcpu_pins = {i: frozenset({threads[i]}) for i in range(vm.vcpus)}
    mine: set[int] = set().union(*cores)
    idle = set(threads[vm.vcpus :])
    if idle and plan.profile == "latency":
        plan.warnings.append(
            f"host CPU(s) {format_cpuset(idle)} (SMT sibling of a pinned vCPU) stay idle: "
            "sharing a core with another guest would add jitter"
        )
    busy = exclusive | mine
    emulator = node.cpus - busy or _housekeeping(topology, node)
    plan.emulator = frozenset(emulator)
    plan.iothreads = 1
    plan.iothread = plan.emulator
    plan.numa_mode, plan.numa_nodes = "strict", frozenset({node.id})
    if others and plan.profile == "latency":
        floating = [o.name for o in others if o.floating]
        if floating:
            plan.warnings.append(
                f"VM(s) {', '.join(sorted(floating))} are not pinned and may still run on "
                "these cores: tune them (any profile) to keep them off"
            )


def _take_cores(free: list[frozenset[int]], vcpus: int) -> list[frozenset[int]] | None:
    chosen: list[frozenset[int]] = []
    threads = 0
    for core in free:
        if threads >= vcpus:
            break
        chosen.append(core)
        threads += len(core)
    return chosen if threads >= vcpus else None


def _span_nodes(
    plan: Plan, topology: Topology, vm: VmFacts, held: set[int], exclusive: set[int]
) -> None:
    free: list[frozenset[int]] = []
    for node in topology.nodes:
        spare = _housekeeping(topology, node)
        free.extend(c for c in topology.cores(node.id) if c != spare and not (c & held))
    chosen = _take_cores(free, vm.vcpus)
    if chosen is None:
        allowed = frozenset(topology.cpus) - exclusive
        plan.vcpu_pins = {i: allowed for i in range(vm.vcpus)}
        plan.emulator = allowed
    else:
        threads = [cpu for core in chosen for cpu in sorted(core)]
        plan.vcpu_pins = {i: frozenset({threads[i]}) for i in range(vm.vcpus)}
        used = set().union(*chosen)
        plan.emulator = frozenset(topology.cpus) - exclusive - used or frozenset(threads)
    plan.iothreads, plan.iothread = 1, plan.emulator
    found = {topology.node_of(c) for pins in plan.vcpu_pins.values() for c in pins}
    nodes = {n for n in found if n is not None}
    for node in topology.nodes:  # the vCPUs' nodes first, then more until the memory fits
        if sum(topology.node(n).memory_kib for n in nodes) >= vm.memory_kib:
            break
        nodes.add(node.id)
    plan.numa_mode = "interleave"
    plan.numa_nodes = frozenset(nodes)


def _float_cpus(plan: Plan, topology: Topology, vm: VmFacts, others: list[OtherVm]) -> None:
    _held, exclusive = _taken(others, topology)
    fitting = [
        n
        for n in topology.nodes
        if len(topology.nodes) == 1 or (_fits_memory(n, vm) and len(n.cpus - exclusive) >= vm.vcpus)
    ]
    if fitting:
        node = max(fitting, key=lambda n: (len(n.cpus - exclusive), n.memory_kib, -n.id))
        allowed = frozenset(node.cpus - exclusive)
        plan.node = node.id
        # density: preferred, not strict: an overcommitted node borrows rather than OOM-kills
        plan.numa_mode = "preferred" if plan.profile == "density" else "strict"
        plan.numa_nodes = frozenset({node.id})
    else:
        allowed = frozenset(topology.cpus) - exclusive
        if len(topology.nodes) > 1:
            plan.warnings.append(
                "the VM fits no single NUMA node: it floats over all nodes' free CPUs"
            )
    if not allowed:
        raise Unsupported(
            f"every host CPU belongs to a latency VM's cores: nothing left for VM {vm.name!r}",
            code="tune_no_free_cpus",
        )
    plan.vcpu_pins = {i: allowed for i in range(vm.vcpus)}
    plan.emulator = allowed
    if plan.profile != "density":
        plan.iothreads, plan.iothread = 1, allowed


def _pin_changes(plan: Plan, vm: VmFacts) -> None:
    live: When = "live" if vm.running else "next_boot"
    node_text = f" on NUMA node {plan.node}" if plan.node is not None else ""
    if plan.vcpu_pins and plan.vcpu_pins != vm.pins:
        online = [c for v, c in plan.vcpu_pins.items() if v < plan.online_vcpus]
        one_to_one = all(len(c) == 1 for c in online)
        pins = ", ".join(f"{v}->{format_cpuset(c)}" for v, c in sorted(plan.vcpu_pins.items()))
        if one_to_one and plan.profile == "latency":
            reason = (
                "each vCPU gets its own host thread on whole cores no other guest may use, so "
                "no SMT sibling is shared and the scheduler never moves it" + node_text
            )
        elif one_to_one:
            reason = "1:1 pins on whole cores keep caches warm and siblings within this VM"
        else:
            reason = (
                "vCPUs float over CPUs" + node_text + " that no latency VM holds, so the "
                "host balances load without disturbing pinned guests"
            )
        plan.add("vcpupin", pins, reason, live)
    if plan.emulator is not None and plan.emulator != vm.emulator_pins:
        plan.add(
            "emulatorpin",
            format_cpuset(plan.emulator),
            "QEMU's own threads (device emulation, I/O completion) run beside, never on, the "
            "vCPUs' dedicated cores",
            live,
        )
    if plan.iothreads and plan.iothreads != vm.iothreads:
        plan.add(
            "iothreads",
            f"{plan.iothreads} I/O thread, pinned to {format_cpuset(plan.iothread or ())}",
            "virtio disk I/O leaves the main loop for its own thread, pinned off the vCPUs",
            "next_boot",
        )
    elif plan.iothread is not None and plan.iothreads and plan.iothread != vm.iothread_pins:
        plan.add(
            "iothreadpin",
            format_cpuset(plan.iothread),
            "the I/O thread stays off the vCPUs' cores",
            live if vm.iothreads else "next_boot",
        )
    same_numa = plan.numa_mode == vm.numa_mode and plan.numa_nodes == vm.numa_nodes
    if plan.numa_mode is not None and not same_numa:
        reason = {
            "strict": "memory only from the node its vCPUs run on: no remote accesses",
            "preferred": "memory from the node its vCPUs run on, borrowing elsewhere when full "
            "(an overcommitted density host must not OOM-kill on one node)",
            "interleave": "the VM spans nodes: interleaving spreads its memory evenly",
        }[plan.numa_mode]
        plan.add(
            "numatune",
            f"memory mode={plan.numa_mode} nodeset={format_cpuset(plan.numa_nodes)}",
            reason,
            "next_boot",
        )


def _memory(plan: Plan, topology: Topology, vm: VmFacts) -> None:
    if plan.profile == "density":
        if vm.hugepage_kib:
            plan.add(
                "hugepages",
                "off",
                "KSM cannot merge hugepages and a balloon cannot return them: density "
                "shares small pages",
                "next_boot",
            )
            plan.hugepages = None
        return
    node = topology.node(plan.node) if plan.node is not None else None
    if node is None:
        plan.warnings.append("no single node: hugepages not planned")
        return
    choice = choose_hugepages(topology, node, vm)
    plan.hugepages = choice
    if choice is None:
        plan.warnings.append(
            "no hugepage size fits: the memory is not a multiple of a hugepage size the "
            "host offers, or the node has no room to reserve them"
        )
        return
    size = _page_text(choice.size_kib)
    if vm.hugepage_kib == choice.size_kib:
        return
    if choice.reserved:
        plan.add(
            "hugepages",
            f"{choice.pages} x {size} pages from node {choice.node} (reserved and free)",
            "hugepages cut TLB misses and page-table walks, and they are never swapped or merged",
            "next_boot",
        )
    else:
        plan.add(
            "hugepages",
            f"reserve {choice.pages} x {size} pages on node {choice.node}: {choice.command}",
            "hugepages cut TLB misses; the node has room but they are not reserved yet, so the "
            "definition keeps normal pages until they are (then run tune apply again)",
            "manual",
        )


def _page_text(kib: int) -> str:
    return f"{kib // GIB_KIB} GiB" if kib >= GIB_KIB else f"{kib // 1024} MiB"


def choose_hugepages(topology: Topology, node: Node, vm: VmFacts) -> HugepageChoice | None:
    """The largest hugepage size that holds the VM's memory exactly and is reserved and free
    on the node; else the largest the node has room to reserve (with the command)."""
    sizes = sorted((s for s in topology.page_sizes_kib if vm.memory_kib % s == 0), reverse=True)
    for size in sizes:
        pool = node.pool(size)
        pages = vm.memory_kib // size
        if pool is None:
            continue
        free = pool.free if pool.free is not None else pool.total
        if vm.hugepage_kib == size:
            free += pages  # its own pages, in use while it runs, stay its own
        if free >= pages:
            return HugepageChoice(size, node.id, pages, True)
    reserved_kib = sum(p.total * p.size_kib for p in node.pools)
    margin = max(GIB_KIB, node.memory_kib // 10)  # the host keeps some memory for itself
    room = node.memory_kib - reserved_kib - margin
    for size in sizes:
        pages = vm.memory_kib // size
        if pages * size <= room:
            pool = node.pool(size)
            total = (pool.total if pool else 0) + pages
            path = f"/sys/devices/system/node/node{node.id}/hugepages/hugepages-{size}kB"
            return HugepageChoice(
                size, node.id, pages, False, f"echo {total} > {path}/nr_hugepages"
            )
    return None


def _cpu_mode(plan: Plan, vm: VmFacts) -> None:
    if vm.domain_type == "qemu":
        plan.warnings.append(
            "the VM runs under TCG (domain type 'qemu'): QEMU emulates the CPU, so "
            "host-passthrough/host-model cannot apply; the CPU mode is left as it is"
        )
        return
    if vm.domain_type != "kvm":
        plan.warnings.append(f"domain type {vm.domain_type!r}: the CPU mode is left as it is")
        return
    wanted = "host-model" if plan.profile == "density" else "host-passthrough"
    if vm.cpu_mode == wanted:
        return
    plan.cpu_mode = wanted
    reason = (
        "a model of the host's CPU that libvirt can migrate to other hosts of the same family"
        if wanted == "host-model"
        else "the guest sees every feature of the host CPU (no migration to other CPU models)"
    )
    plan.add("cpu", f"mode={wanted}", reason, "next_boot")


def _disks(plan: Plan, vm: VmFacts, qemu_version: tuple[int, int, int]) -> None:
    queues = min(vm.vcpus, MAX_QUEUES)
    for disk in vm.disks:
        if disk.device != "disk":
            continue
        wanted: dict[str, str | int | None] = {}
        reasons: list[str] = []
        if disk.bus != "virtio":
            plan.add(
                f"disk {disk.target}",
                f"bus {disk.bus} -> virtio (by hand: the guest's device name changes)",
                "virtio-blk is the fastest paravirtual disk; not changed automatically because "
                "the guest's root device and fstab may name the old device",
                "manual",
            )
        direct = disk.type == "block" or disk.direct_io is True
        if direct and disk.cache != "none":
            wanted["cache"] = "none"
            reasons.append("cache=none: no double caching in the host's page cache (O_DIRECT)")
        elif disk.direct_io is False and disk.cache in (None, "none"):
            plan.warnings.append(
                f"disk {disk.target}: its filesystem does not support O_DIRECT, so cache=none "
                "is not possible (writeback kept)"
            )
            if disk.cache == "none":
                wanted["cache"] = "writeback"
        cache = wanted.get("cache", disk.cache)
        if disk.type == "block" and cache == "none":
            io = "native"
            why = "io=native: Linux AIO straight to the block device"
        elif qemu_version >= IO_URING_QEMU:
            io = "io_uring"
            why = "io=io_uring: QEMU >= 5.0 submits I/O through io_uring, fewer syscalls"
        elif cache == "none":
            io, why = "native", "io=native: Linux AIO (this QEMU has no io_uring)"
        else:
            io, why = "threads", "io=threads: native AIO needs cache=none"
        if disk.io != io and not (io == "threads" and disk.io is None):  # threads: the default
            wanted["io"] = io
            reasons.append(why)
        if not disk.readonly and disk.discard != "unmap":
            wanted["discard"] = "unmap"
            reasons.append("discard=unmap: the guest's TRIM frees space in the image")
        if disk.bus == "virtio" and vm.vcpus > 1 and disk.queues != queues:
            wanted["queues"] = queues
            reasons.append(f"queues={queues}: one virtqueue per vCPU (at most {MAX_QUEUES})")
        if disk.bus == "virtio" and plan.iothreads and disk.iothread != 1:
            wanted["iothread"] = 1
            reasons.append("iothread=1: served by the pinned I/O thread")
        if wanted:
            plan.disk_driver[disk.target] = wanted
            summary = ", ".join(f"{k}={v}" for k, v in wanted.items())
            plan.add(f"disk {disk.target}", summary, "; ".join(reasons), "next_boot")


def _nics(plan: Plan, vm: VmFacts) -> None:
    queues = min(vm.vcpus, MAX_QUEUES)
    for nic in vm.nics:
        wanted: dict[str, str | int | None] = {}
        reasons = []
        if nic.model != "virtio":
            wanted["model"] = "virtio"
            reasons.append("virtio-net: paravirtual, the fastest NIC model (needs its driver)")
        if vm.vcpus > 1 and nic.queues != queues:
            wanted["queues"] = queues
            reasons.append(f"queues={queues}: one queue pair per vCPU (at most {MAX_QUEUES})")
        if wanted:
            plan.nic_driver[nic.mac] = wanted
            summary = ", ".join(f"{k}={v}" for k, v in wanted.items())
            plan.add(f"nic {nic.mac}", summary, "; ".join(reasons), "next_boot")


def _sharing(plan: Plan, vm: VmFacts) -> None:
    if plan.profile == "latency":
        if not vm.nosharepages:
            plan.nosharepages = True
            plan.add(
                "memoryBacking",
                "nosharepages",
                "KSM merging and its copy-on-write faults add unpredictable latency",
                "next_boot",
            )
        if not vm.locked:
            # Not written: libvirt then raises QEMU's RLIMIT_MEMLOCK, which needs
            # CAP_SYS_RESOURCE (the VM does not start without it); hugepages never swap anyway.
            plan.add(
                "memoryBacking",
                "add <locked/> and <memtune><hard_limit> (memory + QEMU's overhead) by hand",
                "locked memory is never swapped out, but libvirt must raise QEMU's locked-memory "
                "limit for it (CAP_SYS_RESOURCE), and a too-low hard_limit kills the VM",
                "manual",
            )
        if vm.balloon_model not in (None, "none"):
            plan.balloon = "none"
            plan.add(
                "memballoon",
                "model=none",
                "a locked latency VM never gives memory back, and balloon statistics polling "
                "wakes the guest",
                "next_boot",
            )
    elif plan.profile == "density":
        if vm.nosharepages:
            plan.nosharepages = False
            plan.add(
                "memoryBacking",
                "allow KSM sharing (nosharepages removed)",
                "density: identical pages of guests are merged by KSM",
                "next_boot",
            )
        if vm.locked:
            plan.locked = False
            plan.add(
                "memoryBacking",
                "not locked",
                "density: memory may be reclaimed",
                "next_boot",
            )
        if vm.balloon_model != "virtio" or not vm.balloon_period:
            plan.balloon = "virtio-stats"
            plan.add(
                "memballoon",
                "virtio, statistics every 10 s",
                "density: the balloon returns unused guest memory, and its statistics feed "
                "the KSM and memory policies",
                "next_boot",
            )
