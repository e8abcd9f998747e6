"""The host's topology as the tuning advisor needs it: NUMA nodes, cores and their SMT siblings,
hugepage pools, caches, distances.

Built from libvirt's capabilities XML (works for remote hosts too) plus, where given, a sysfs
tree (``/sys`` or a captured copy in tests): cache sizes, and hugepage counts with their free
pages, which the capabilities do not tell.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from virtkit.errors import InvalidInput
from virtkit.xml.base import XMLParseError
from virtkit.xml.capabilities import Capabilities

BASE_PAGE_KIB = 4


def parse_cpuset(text: str) -> frozenset[int]:
    """``0-3,8,^2`` -> {0, 1, 3, 8} (libvirt's and the kernel's CPU list syntax)."""
    include: set[int] = set()
    exclude: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        target = exclude if part.startswith("^") else include
        part = part.lstrip("^")
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if match is None:
            raise InvalidInput(f"bad CPU list {text!r}: {part!r}", code="invalid_cpuset")
        low = int(match.group(1))
        high = int(match.group(2) or low)
        if high < low:
            raise InvalidInput(f"bad CPU list {text!r}: {part!r}", code="invalid_cpuset")
        target.update(range(low, high + 1))
    return frozenset(include - exclude)


def format_cpuset(cpus: Iterable[int]) -> str:
    """{0, 1, 2, 5} -> ``0-2,5``."""
    ordered = sorted(set(cpus))
    parts: list[str] = []
    start = prev = None
    for cpu in [*ordered, None]:
        if cpu is not None and prev is not None and cpu == prev + 1:
            prev = cpu
            continue
        if start is not None and prev is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = cpu
    return ",".join(parts)


@dataclass(frozen=True)
class HostCpu:
    id: int
    node: int
    socket: int
    die: int
    core: int
    siblings: frozenset[int]  # the SMT threads of its core, itself included


@dataclass(frozen=True)
class PagePool:
    """Hugepages of one size on one node: ``total`` reserved, ``free`` (None: unknown)."""

    size_kib: int
    total: int
    free: int | None


@dataclass(frozen=True)
class Node:
    id: int
    memory_kib: int
    cpus: frozenset[int]
    pools: tuple[PagePool, ...] = ()
    distances: dict[int, int] = field(default_factory=dict)

    def pool(self, size_kib: int) -> PagePool | None:
        return next((p for p in self.pools if p.size_kib == size_kib), None)


@dataclass(frozen=True)
class Cache:
    level: int
    type: str
    size_kib: int
    cpus: frozenset[int]


@dataclass(frozen=True)
class Topology:
    nodes: tuple[Node, ...]
    cpus: dict[int, HostCpu]
    page_sizes_kib: tuple[int, ...]  # hugepage sizes the host offers (4 KiB base page left out)
    caches: tuple[Cache, ...] = ()
    complete: bool = True  # False: libvirt did not name cores and siblings (old libvirt)

    @property
    def smt(self) -> bool:
        return any(len(c.siblings) > 1 for c in self.cpus.values())

    @property
    def threads_per_core(self) -> int:
        return max((len(c.siblings) for c in self.cpus.values()), default=1)

    def node(self, node_id: int) -> Node:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise InvalidInput(f"host has no NUMA node {node_id}", code="invalid_node")

    def cores(self, node_id: int | None = None) -> list[frozenset[int]]:
        """The physical cores (each the set of its SMT threads), in CPU order."""
        seen: dict[frozenset[int], None] = {}
        for cpu in sorted(self.cpus.values(), key=lambda c: c.id):
            if node_id is None or cpu.node == node_id:
                seen.setdefault(cpu.siblings, None)
        return list(seen)

    def core_of(self, cpu: int) -> frozenset[int]:
        found = self.cpus.get(cpu)
        return found.siblings if found else frozenset({cpu})

    def node_of(self, cpu: int) -> int | None:
        found = self.cpus.get(cpu)
        return found.node if found else None

    def l3_kib(self, cpus: Iterable[int]) -> int | None:
        wanted = set(cpus)
        sizes = [c.size_kib for c in self.caches if c.level == 3 and wanted & c.cpus]
        return max(sizes) if sizes else None


def _size_kib(size: int, unit: str | None) -> int:
    factor = {"b": 1 / 1024, "kib": 1, "k": 1, "mib": 1024, "m": 1024, "gib": 1024**2, "g": 1024**2}
    return int(size * factor.get((unit or "KiB").lower(), 1))


def topology_from_capabilities(xml: str, sysfs_root: Path | None = None) -> Topology:
    """The host topology from libvirt's capabilities XML and, if given, a sysfs tree."""
    try:
        caps = Capabilities.parse(xml)
    except XMLParseError as exc:
        raise InvalidInput(f"host capabilities: {exc}", code="invalid_capabilities") from exc
    cpus: dict[int, HostCpu] = {}
    nodes: list[Node] = []
    complete = True
    for cell in caps.cells:
        node_id = cell.id if cell.id is not None else len(nodes)
        ids: set[int] = set()
        for cpu in cell.cpu_list:
            if cpu.id is None:
                continue
            ids.add(cpu.id)
            if cpu.siblings is None or cpu.core_id is None:
                complete = False
            siblings = parse_cpuset(cpu.siblings) if cpu.siblings else frozenset({cpu.id})
            cpus[cpu.id] = HostCpu(
                cpu.id,
                node_id,
                cpu.socket_id or 0,
                cpu.die_id or 0,
                cpu.core_id if cpu.core_id is not None else cpu.id,
                siblings | {cpu.id},
            )
        pools = tuple(
            PagePool(p.size_kib, p.count or 0, None)
            for p in cell.pages
            if p.size_kib is not None and p.size_kib > BASE_PAGE_KIB
        )
        distances = {d.id: d.value for d in cell.distances if d.id is not None and d.value}
        nodes.append(Node(node_id, cell.memory_kib or 0, frozenset(ids), pools, distances))
    sizes = {p.size_kib for p in caps.page_sizes if p.size_kib and p.size_kib > BASE_PAGE_KIB}
    sizes |= {pool.size_kib for node in nodes for pool in node.pools}
    caches = tuple(
        Cache(b.level or 0, b.type or "both", _size_kib(b.size or 0, b.unit), parse_cpuset(b.cpus))
        for b in caps.cache_banks
        if b.cpus
    )
    topology = Topology(tuple(nodes), cpus, tuple(sorted(sizes)), caches, complete)
    if not nodes or not cpus:
        raise InvalidInput(
            "the host capabilities list no NUMA cells with CPUs: no topology to plan with",
            code="tune_no_topology",
        )
    return with_sysfs(topology, sysfs_root) if sysfs_root is not None else topology


# -- sysfs facts --------------------------------------------------------------------------------


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def sysfs_caches(root: Path) -> tuple[Cache, ...]:
    """Caches from ``devices/system/cpu/cpu*/cache/index*`` (one entry per shared cache)."""
    found: dict[tuple[int, str, frozenset[int]], Cache] = {}
    for index in sorted(root.glob("devices/system/cpu/cpu[0-9]*/cache/index[0-9]*")):
        level = _read_int(index / "level")
        size = _read(index / "size")
        shared = _read(index / "shared_cpu_list")
        if level is None or not size or not shared:
            continue
        match = re.fullmatch(r"(\d+)([KMG]?)", size)
        if match is None:
            continue
        kib = int(match.group(1)) * {"": 1, "K": 1, "M": 1024, "G": 1024**2}[match.group(2)]
        kind = (_read(index / "type") or "Unified").lower()
        cpus = parse_cpuset(shared)
        found[(level, kind, cpus)] = Cache(level, kind, kib, cpus)
    return tuple(found.values())


def sysfs_pools(root: Path, node_id: int) -> dict[int, PagePool]:
    """Hugepage pools of one node from ``devices/system/node/nodeN/hugepages``."""
    pools: dict[int, PagePool] = {}
    base = root / f"devices/system/node/node{node_id}/hugepages"
    for pool_dir in sorted(base.glob("hugepages-*kB")):
        match = re.fullmatch(r"hugepages-(\d+)kB", pool_dir.name)
        total = _read_int(pool_dir / "nr_hugepages")
        if match is None or total is None:
            continue
        size = int(match.group(1))
        pools[size] = PagePool(size, total, _read_int(pool_dir / "free_hugepages"))
    return pools


def host_page_sizes(root: Path) -> list[int]:
    """Hugepage sizes the kernel offers (``kernel/mm/hugepages/hugepages-*kB``)."""
    sizes = []
    for pool_dir in root.glob("kernel/mm/hugepages/hugepages-*kB"):
        match = re.fullmatch(r"hugepages-(\d+)kB", pool_dir.name)
        if match:
            sizes.append(int(match.group(1)))
    return sorted(sizes)


def with_sysfs(topology: Topology, root: Path) -> Topology:
    """The topology with what sysfs adds: per-node hugepage counts and free pages, caches."""
    nodes = []
    for node in topology.nodes:
        pools = {p.size_kib: p for p in node.pools}
        pools.update(sysfs_pools(root, node.id))
        nodes.append(
            Node(node.id, node.memory_kib, node.cpus, tuple(pools.values()), node.distances)
        )
    caches = sysfs_caches(root) or topology.caches
    sizes = set(topology.page_sizes_kib) | set(host_page_sizes(root))
    return Topology(tuple(nodes), topology.cpus, tuple(sorted(sizes)), caches, topology.complete)
