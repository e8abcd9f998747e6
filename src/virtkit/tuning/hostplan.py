"""``tune host --profile virtualization``: the host side of tuning, read from and written to a
sysfs tree (``/sys``, or a copy in tests).

Knobs: hugepages reserved for the defined VMs that use them, transparent hugepages ``madvise``,
KSM on where guests may share pages, the CPU frequency governor ``performance``. Each knob
keeps its old value, so that every change prints the command that reverts it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from virtkit.tuning.plan import VmFacts
from virtkit.tuning.topology import Topology

THP_PATH = "kernel/mm/transparent_hugepage/enabled"
KSM_RUN_PATH = "kernel/mm/ksm/run"


@dataclass(frozen=True)
class Knob:
    name: str
    path: str  # relative to the sysfs root
    current: str | None
    wanted: str
    reason: str


def _read(root: Path, path: str) -> str | None:
    try:
        return (root / path).read_text().strip()
    except OSError:
        return None


def thp_mode(text: str | None) -> str | None:
    """``always [madvise] never`` -> ``madvise``."""
    if text is None:
        return None
    match = re.search(r"\[(\w+)\]", text)
    return match.group(1) if match else text.strip() or None


def hugepage_path(size_kib: int, node: int | None) -> str:
    base = "kernel/mm" if node is None else f"devices/system/node/node{node}"
    return f"{base}/hugepages/hugepages-{size_kib}kB/nr_hugepages"


def hugepage_needs(
    vms: list[tuple[VmFacts, frozenset[int] | None]],
) -> dict[tuple[int | None, int], int]:
    """Pages each (node, size) must hold for the defined hugepage-backed VMs: a VM bound to
    one node (numatune) counts on that node, any other on the host-wide pool."""
    needs: dict[tuple[int | None, int], int] = {}
    for vm, nodes in vms:
        if not vm.hugepage_kib:
            continue
        node = next(iter(nodes)) if nodes is not None and len(nodes) == 1 else None
        key = (node, vm.hugepage_kib)
        needs[key] = needs.get(key, 0) + -(-vm.memory_kib // vm.hugepage_kib)
    return needs


def host_knobs(
    root: Path, topology: Topology | None, vms: list[tuple[VmFacts, frozenset[int] | None]]
) -> tuple[list[Knob], list[str]]:
    """What the virtualization profile would change on this host, and notes."""
    knobs: list[Knob] = []
    notes: list[str] = []
    for (node, size), pages in sorted(hugepage_needs(vms).items(), key=str):
        path = hugepage_path(size, node)
        current_text = _read(root, path)
        if current_text is None:
            notes.append(f"no hugepage pool of {size} KiB{_on(node)} on this host")
            continue
        current = int(current_text)
        # Host-wide: the pool counts every node's pages, bound VMs' included.
        if node is None:
            bound = sum(
                p for (n, s), p in hugepage_needs(vms).items() if s == size and n is not None
            )
            pages += bound
        if current < pages:
            knobs.append(
                Knob(
                    f"hugepages {size} KiB{_on(node)}",
                    path,
                    str(current),
                    str(pages),
                    f"the defined hugepage-backed VMs need {pages} pages of {size} KiB"
                    f"{_on(node)}; without them they do not start",
                )
            )
    if not any(vm.hugepage_kib for vm, _ in vms):
        notes.append("no defined VM uses hugepages: none to reserve")
    thp = thp_mode(_read(root, THP_PATH))
    if thp is not None and thp != "madvise":
        knobs.append(
            Knob(
                "transparent hugepages",
                THP_PATH,
                thp,
                "madvise",
                "QEMU asks for THP on guest RAM itself; 'always' makes khugepaged compact and "
                "split pages host-wide (latency spikes, and splits undo KSM merging)",
            )
        )
    ksm = _read(root, KSM_RUN_PATH)
    sharing = [vm.name for vm, _ in vms if not vm.nosharepages and not vm.hugepage_kib]
    if ksm is not None and ksm != "2":
        wanted = "1" if sharing else "0"
        if ksm != wanted:
            reason = (
                f"{len(sharing)} defined VM(s) allow page sharing: KSM merges their identical "
                "pages (density)"
                if sharing
                else "every defined VM opts out of sharing (nosharepages or hugepages): "
                "scanning would only cost CPU"
            )
            knobs.append(Knob("KSM", KSM_RUN_PATH, ksm, wanted, reason))
    governors = sorted(root.glob("devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor"))
    if not governors:
        notes.append("no CPU frequency scaling here (no cpufreq in sysfs): no governor to set")
    for gov in governors:
        governor = _read(root, str(gov.relative_to(root)))
        offered = _read(root, str(gov.parent.relative_to(root)) + "/scaling_available_governors")
        if governor in (None, "performance") or "performance" not in (offered or "").split():
            continue
        knobs.append(
            Knob(
                f"governor {gov.parent.parent.name}",
                str(gov.relative_to(root)),
                governor,
                "performance",
                "vCPUs wake at full clock: no ramp-up delay after idle",
            )
        )
    if topology is not None and len(topology.nodes) > 1:
        notes.append(
            "several NUMA nodes: KSM's merge_across_nodes=0 keeps merged pages node-local "
            "(changeable only while no pages are merged: virtkit ksm settings)"
        )
    return knobs, notes


def _on(node: int | None) -> str:
    return "" if node is None else f" on node {node}"


def write_knob(root: Path, knob: Knob) -> str | None:
    """Write the knob; None when done, else why not (a read-back short of the wanted value)."""
    target = root / knob.path
    try:
        target.write_text(knob.wanted + "\n")
    except OSError as exc:
        return f"cannot write {target}: {exc.strerror or exc}"
    back = _read(root, knob.path)
    value = thp_mode(back) if knob.path == THP_PATH else back
    if value != knob.wanted:
        return f"the kernel kept {value!r} (asked {knob.wanted!r}): not enough free memory?"
    return None


def revert_command(root: Path, knob: Knob) -> str:
    return f"echo {knob.current} > {root / knob.path}"
