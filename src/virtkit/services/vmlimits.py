"""The memory and vCPU limits a VM must keep, on create and on ``vm set``."""

from __future__ import annotations

from virtkit.backend.capabilities import CapabilityProbe
from virtkit.backend.host import Host
from virtkit.errors import InvalidInput
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
    limit = probe.domain_capabilities(arch, machine, domain_type).max_vcpus
    return limit or host.max_vcpus(domain_type)


def check_vcpus(count: int, limit: int, machine: str | None) -> None:
    if count > limit:
        raise InvalidInput(
            f"{count} vCPUs is more than machine type {machine} allows ({limit})",
            code="too_many_vcpus",
        )
