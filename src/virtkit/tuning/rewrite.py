"""The rewrite of a VM's persistent definition that carries out a tuning plan (pure)."""

from __future__ import annotations

import difflib

from virtkit.tuning.plan import Plan
from virtkit.tuning.topology import format_cpuset
from virtkit.xml.domain import (
    CPU,
    CPUTune,
    Domain,
    HugePage,
    IOThreadPin,
    MemBalloon,
    MemoryBacking,
    NumaTune,
    TuningRecord,
    VcpuPin,
)


def rewrite(domain: Domain, plan: Plan) -> Domain:
    """A copy of the persistent definition with the plan carried out (everything but the
    changes marked ``manual``). Elements are changed in place, so that a plan with nothing to
    do gives back the same XML."""
    new = Domain.parse(domain.to_xml())
    _rewrite_cpus(new, plan)
    if plan.numa_mode is not None:
        if new.numatune is None:
            new.numatune = NumaTune()
        numa = new.numatune
        assert numa is not None
        numa.memory_mode = plan.numa_mode
        numa.memory_nodeset = format_cpuset(plan.numa_nodes)
    _rewrite_memory(new, plan)
    if plan.cpu_mode is not None:
        if new.cpu is None:
            new.cpu = CPU()
        cpu = new.cpu
        assert cpu is not None
        for child in list(cpu.node):  # a named model and its features belong to other modes
            if child.tag in ("model", "feature", "vendor"):
                cpu.node.remove(child)
        cpu.mode = plan.cpu_mode
        cpu.match = None
        cpu.check = None
    for disk in new.disks:
        for key, value in plan.disk_driver.get(disk.target_dev or "?", {}).items():
            setattr(disk, f"driver_{key}", value)
    for nic in new.interfaces:
        for key, value in plan.nic_driver.get(nic.mac or "?", {}).items():
            setattr(nic, "model" if key == "model" else f"driver_{key}", value)
    if plan.balloon == "none":
        balloon = MemBalloon()
        balloon.model = "none"
        new.memballoon = balloon
    elif plan.balloon == "virtio-stats":
        if new.memballoon is None:
            new.memballoon = MemBalloon()
        assert new.memballoon is not None
        new.memballoon.model = "virtio"
        new.memballoon.stats_period = 10
    meta = new.ensure_virtkit_metadata()
    if meta.tuning is None or meta.tuning.profile != plan.profile:
        record = TuningRecord()
        record.profile = plan.profile
        meta.tuning = record
    return new


def _rewrite_cpus(new: Domain, plan: Plan) -> None:
    if not plan.vcpu_pins and plan.emulator is None:
        return
    if new.cputune is None:
        new.cputune = CPUTune()
    tune = new.cputune
    assert tune is not None
    wanted = {v: format_cpuset(c) for v, c in plan.vcpu_pins.items()}
    if tune.vcpu_cpusets() != wanted:
        for old in list(tune.vcpupins):
            tune.vcpupins.remove(old)
        for vcpu, cpuset in sorted(wanted.items()):
            pin = VcpuPin()
            pin.vcpu = vcpu
            pin.cpuset = cpuset
            tune.vcpupins.append(pin)
    if plan.emulator is not None:
        tune.emulatorpin = format_cpuset(plan.emulator)
    if plan.iothreads and plan.iothread is not None:
        new.iothreads = max(plan.iothreads, new.iothreads or 0)
        cpuset = format_cpuset(plan.iothread)
        pins = list(tune.iothreadpins)
        if [(p.iothread, p.cpuset) for p in pins] != [(1, cpuset)]:
            for old_io in pins:
                tune.iothreadpins.remove(old_io)
            io_pin = IOThreadPin()
            io_pin.iothread = 1
            io_pin.cpuset = cpuset
            tune.iothreadpins.append(io_pin)


def _rewrite_memory(new: Domain, plan: Plan) -> None:
    if new.memory_backing is None:
        new.memory_backing = MemoryBacking()
    backing = new.memory_backing
    assert backing is not None
    choice = plan.hugepages
    if plan.profile == "density":
        backing.hugepages = False
    elif (
        choice is not None
        and choice.reserved
        and [p.size_kib for p in backing.pages] != [choice.size_kib]
    ):
        backing.hugepages = False  # drops old <page> children too
        page = HugePage()
        page.size = choice.size_kib
        page.unit = "KiB"  # no nodeset: it names guest NUMA nodes; numatune picks the host's
        backing.pages.append(page)
    if plan.nosharepages is not None:
        backing.nosharepages = plan.nosharepages
    if plan.locked is not None:
        backing.locked = plan.locked
    if not len(list(backing.node)):
        new.memory_backing = None


def unified_diff(before: Domain, after: Domain, name: str) -> str:
    """The persistent definition before and after, as a unified diff."""
    return "".join(
        difflib.unified_diff(
            before.to_xml().splitlines(keepends=True),
            after.to_xml().splitlines(keepends=True),
            fromfile=f"{name}.xml (now)",
            tofile=f"{name}.xml (tuned)",
        )
    )
