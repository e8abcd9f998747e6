"""The host: facts, NUMA, hugepages, KSM counters, and whether KVM is usable."""

from __future__ import annotations

from pydantic import Field

from virtkit.specs.common import _View


class KvmStatus(_View):
    usable: bool
    reason: str
    checked_at: float
    cached: bool
    fix: str | None = Field(None, description="What to change on the host to make KVM usable.")


class KvmFix(_View):
    """What ``host fix-kvm`` did to /dev/kvm."""

    changed: bool = Field(description="Whether the device's group or mode was changed.")
    message: str


class NumaNode(_View):
    id: int
    memory: int
    cpus: int | None


class HugePages(_View):
    size: int = Field(description="Page size in bytes.")
    total: int
    free: int


class KsmState(_View):
    run: str | None = Field(None, description="stopped, running or unmerging (local hosts).")
    pages_shared: int | None = None
    pages_sharing: int | None = None
    pages_unshared: int | None = None
    pages_volatile: int | None = None
    full_scans: int | None = None
    pages_to_scan: int | None = None
    sleep_millisecs: int | None = None
    merge_across_nodes: int | None = None
    saved: int | None = Field(None, description="Approximate bytes saved (pages_sharing).")


class HostInfo(_View):
    uri: str
    hostname: str
    libvirt_version: str
    hypervisor: str
    hypervisor_version: str
    arch: str | None
    cpu_model: str | None
    cpu_vendor: str | None
    cpus: int
    sockets: int
    cores: int
    threads: int
    numa_nodes: list[NumaNode]
    memory_total: int
    memory_free: int
    hugepages: list[HugePages]
    ksm: KsmState
    kvm: KvmStatus
    domain_type: str
    machines: list[str]
    max_vcpus: int | None
