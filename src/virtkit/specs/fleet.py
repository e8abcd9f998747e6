"""Several hosts: the registered hosts (``virtkit host add``), what each one is now, and the
VMs of all of them in one listing."""

from __future__ import annotations

from pydantic import Field

from virtkit.specs.common import _View
from virtkit.specs.host import KvmStatus
from virtkit.specs.vm import VMSummary


class FleetHost(_View):
    """A host virtkit manages besides (or instead of) the one of ``--connect``."""

    name: str
    uri: str
    added: float = Field(description="When it was added (Unix time).")
    tags: list[str] = Field(default_factory=list, description="For placement rules.")
    maintenance: bool = Field(False, description="In maintenance: nothing is placed there.")
    maintenance_since: float | None = None
    maintenance_reason: str | None = None
    host_uuid: str | None = Field(None, description="libvirt's host UUID, once seen.")
    reachable: bool | None = Field(None, description="At the last look; None: never looked.")
    state_since: float | None = Field(
        None, description="Since when it has been reachable (or unreachable)."
    )
    last_seen: float | None = Field(None, description="The last time it answered.")
    last_error: str | None = None


class HostStatus(_View):
    """One host now: reachable or not, and if so what it is and has."""

    host: FleetHost
    reachable: bool
    error: str | None = Field(None, description="Why it is not reachable.")
    elapsed: float = Field(description="Seconds the look took (or the timeout).")
    hostname: str | None = None
    libvirt_version: str | None = None
    hypervisor_version: str | None = None
    cpu_model: str | None = None
    cpus: int | None = None
    memory_total: int | None = None
    memory_free: int | None = None
    vms_running: int | None = None
    vms_total: int | None = None
    vcpus_running: int | None = Field(None, description="vCPUs of the running VMs.")
    ksm_saved: int | None = Field(None, description="Bytes KSM saves there now.")
    kvm: KvmStatus | None = Field(
        None, description="The KVM verdict, if known (host add and host show probe)."
    )


class HostVMs(_View):
    """One host's VMs in a listing across hosts."""

    host: str
    uri: str
    reachable: bool
    error: str | None = None
    elapsed: float
    vms: list[VMSummary] = Field(default_factory=list)


class PlacementCandidate(_View):
    """One host as placement saw it: eligible or not and why, and its score."""

    host: str
    eligible: bool
    reasons: list[str] = Field(description="Why not; for an eligible host, what counted.")
    memory_free: int | None = None
    memory_free_after: int | None = Field(None, description="Free memory once the VM runs.")
    vcpu_load_after: float | None = Field(
        None, description="vCPUs of running VMs per host CPU once the VM runs."
    )
    score: float | None = Field(
        None, description="Higher is better: free memory share after, less a quarter of the "
        "vCPU load after."
    )  # fmt: skip


class Placement(_View):
    """Where a new VM goes, and why (``vm create`` without ``--host``; ``--dry-run``)."""

    host: str | None = Field(description="The chosen host; None if no host can take the VM.")
    uri: str | None = None
    memory: int
    vcpus: int
    tags: list[str] = Field(default_factory=list)
    summary: str
    candidates: list[PlacementCandidate]
