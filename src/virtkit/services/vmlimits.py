"""The memory and vCPU limits a VM must keep, on create and on ``vm set``."""

from __future__ import annotations

from virtkit.backend.capabilities import CapabilityProbe
from virtkit.backend.host import Host
from virtkit.errors import InvalidInput, Unsupported
from virtkit.specs import format_size


def check_memory(host: Host, memory: int) -> None:
    total, _free = host.memory()
    if memory > total:
        raise InvalidInput(
            f"memory {format_size(memory)} is more than the host has ({format_size(total)})",
            code="memory_too_large",
        )


def vcpu_limit(
    host: Host, probe: CapabilityProbe, arch: str, machine: str | None, domain_type: str
) -> int:
    try:
        limit = probe.domain_capabilities(arch, machine, domain_type).max_vcpus
    except Unsupported:  # a driver without domain capabilities (libvirt's test driver)
        limit = None
    return limit or host.max_vcpus(domain_type)


def check_vcpus(count: int, limit: int, machine: str | None) -> None:
    if count > limit:
        raise InvalidInput(
            f"{count} vCPUs is more than machine type {machine} allows ({limit})",
            code="too_many_vcpus",
        )


def default_max_vcpus(count: int, limit: int) -> int:
    """The vCPU maximum of a new VM: twice its count, so that ``vm set --vcpus`` can add vCPUs
    to the running VM, within the machine type's limit (measured in docs/benchmarks.md: under
    TCG the unplugged vCPUs cost no measurable boot time or QEMU memory)."""
    return max(count, min(2 * count, limit))


def check_max_vcpus(count: int, maximum: int | None, limit: int, machine: str | None) -> int:
    """The maximum a new VM gets: the one asked for (checked), else the default."""
    if maximum is None:
        return default_max_vcpus(count, limit)
    if maximum > limit:
        raise InvalidInput(
            f"a maximum of {maximum} vCPUs is more than machine type {machine} allows ({limit})",
            code="too_many_vcpus",
        )
    return maximum
